// What is never preauthenticated, whatever the vdir's policy. Federation and hybrid send
// WS-Security or OAuth tokens that only Exchange can check, mailbox moves (MRS) authenticate
// server to server, monitors must see health pages, and OPTIONS is how clients discover what
// a vdir speaks before they authenticate. Preauthenticating any of them breaks the feature
// silently, which is why the list is built in, versioned, and extended rather than replaced.
// OPTIONS and Bearer pass only on the vdirs of the clients that send them (Outlook, Outlook
// mobile, ActiveSync devices, EWS applications), never on OWA or ECP, and OPTIONS only without a
// body: a preflight carries none, a DDI call dressed as one does.
// Every match is on the path IIS will serve (routing/request-target.ts: decoded once, dot
// segments and raw '#' already refused), so an exclusion cannot be borrowed by another path.

/** ExclusionPreset is one version of the built-in list. */
export interface ExclusionPreset {
  paths: readonly string[]
  /** GET/HEAD of a published vdir's own health page. */
  healthPages: boolean
  optionsRequests: boolean
  /**
   * Vdirs whose clients send OPTIONS before they authenticate, and `Authorization: Bearer <JWT>`
   * (hybrid modern authentication) that passes to Exchange unpreauthenticated: Outlook, mobile
   * Outlook, ActiveSync, EWS applications. Never OWA or ECP: browsers send neither, and a token
   * there would skip the form.
   */
  clientVdirs: readonly string[]
}

export const EXCLUSION_PRESETS: Record<'exchange-v1' | 'none', ExclusionPreset> = {
  'exchange-v1': {
    paths: [
      '/EWS/Exchange.asmx/WSSecurity', // free/busy and calendar sharing with federated organisations
      '/EWS/mrsproxy.svc', // mailbox moves (hybrid, cross-forest)
      '/autodiscover/autodiscover.svc' // federated Autodiscover, and …/autodiscover.svc/WSSecurity under it
    ],
    healthPages: true,
    optionsRequests: true,
    // Microsoft: hybrid modern authentication covers Outlook (MAPI, EWS, Autodiscover, OAB) and
    // Outlook mobile / ActiveSync; Exchange validates the token (evoSTS).
    clientVdirs: ['/EWS', '/Microsoft-Server-ActiveSync', '/mapi', '/oab', '/autodiscover']
  },
  none: { paths: [], healthPages: false, optionsRequests: false, clientVdirs: [] }
}

/** EXCHANGE_PROFILE_BEARER_NOTE says why those vdirs, for `casgate check`. */
export const EXCHANGE_PROFILE_BEARER_NOTE = 'hybrid modern authentication: Outlook and Outlook mobile; never OWA or ECP'

/** ExcludedVdir is what an exclusion needs of the vdir a request is routed to. */
export interface ExcludedVdir {
  path: string
  healthPath: string
}

/** Exclusions decides whether a request bypasses preauthentication, and says why. */
export class Exclusions {
  readonly #paths: string[]
  readonly #preset: ExclusionPreset
  readonly #clientVdirs: ReadonlySet<string>

  constructor (preset: ExclusionPreset, extra: readonly string[]) {
    this.#preset = preset
    this.#paths = [...preset.paths, ...extra].map((path) => path.toLowerCase().replace(/\/+$/, ''))
    this.#clientVdirs = new Set(preset.clientVdirs.map((path) => path.toLowerCase()))
  }

  /** reason returns why a request (its decoded path) bypasses preauthentication, or undefined. */
  reason (method: string, path: string, vdir: ExcludedVdir, hasBody: boolean): string | undefined {
    if (this.#preset.optionsRequests && method === 'OPTIONS' && !hasBody && this.#clientVdirs.has(vdir.path.toLowerCase())) return 'options'
    const lower = path.toLowerCase()
    if (this.#preset.healthPages && (method === 'GET' || method === 'HEAD') && lower === vdir.healthPath.toLowerCase()) return 'health'
    for (const excluded of this.#paths) {
      if (lower === excluded || (lower.startsWith(excluded) && lower.charCodeAt(excluded.length) === 47)) return 'path'
    }
    return undefined
  }

  /** bearerAllowed says whether a Bearer token may stand in for preauthentication on a vdir. */
  bearerAllowed (vdirPath: string): boolean {
    return this.#clientVdirs.has(vdirPath.toLowerCase())
  }
}
