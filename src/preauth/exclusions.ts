// What is never preauthenticated, whatever the vdir's policy. Federation and hybrid send
// WS-Security or OAuth tokens that only Exchange can check, mailbox moves (MRS) authenticate
// server to server, monitors must see health pages, and OPTIONS is how clients discover what
// a vdir speaks before they authenticate. Preauthenticating any of them breaks the feature
// silently, which is why the list is built in, versioned, and extended rather than replaced.

/** ExclusionPreset is one version of the built-in list. */
export interface ExclusionPreset {
  paths: readonly string[]
  healthPages: boolean
  optionsRequests: boolean
  bearerTokens: boolean
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
    bearerTokens: true // hybrid modern authentication: Exchange validates the token
  },
  none: { paths: [], healthPages: false, optionsRequests: false, bearerTokens: false }
}

/** Exclusions decides whether a request bypasses preauthentication, and says why. */
export class Exclusions {
  readonly #paths: string[]
  readonly #preset: ExclusionPreset

  constructor (preset: ExclusionPreset, extra: readonly string[]) {
    this.#preset = preset
    this.#paths = [...preset.paths, ...extra].map((path) => path.toLowerCase().replace(/\/+$/, ''))
  }

  /** reason returns why the request is excluded (for the access log), or undefined. */
  reason (method: string, url: string, authorization: string | undefined): string | undefined {
    if (this.#preset.optionsRequests && method === 'OPTIONS') return 'options'
    if (this.#preset.bearerTokens && authorization !== undefined && /^bearer\s/i.test(authorization)) return 'bearer'
    const query = url.indexOf('?')
    let path = query === -1 ? url : url.slice(0, query)
    // Matching is on the decoded path, so %2F-spelt or mixed-case variants match too (the proxy
    // has already refused malformed encodings and traversal).
    if (path.includes('%')) path = decodeURIComponent(path)
    path = path.toLowerCase()
    if (this.#preset.healthPages && /^\/[^/]+\/healthcheck\.htm$/.test(path)) return 'health'
    for (const excluded of this.#paths) {
      if (path === excluded || (path.startsWith(excluded) && path.charCodeAt(excluded.length) === 47)) return 'path'
    }
    return undefined
  }
}
