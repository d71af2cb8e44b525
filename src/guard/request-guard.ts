import type { IncomingHttpHeaders } from 'node:http'
import type { Logger } from 'pino'
import { CasgateError } from '../errors/errors.js'
import { parseHostHeader } from '../util/host-names.js'
import type { ResolvedVdir } from '../config/vdir-tables.js'
import { parseRequestTarget, type RequestTarget } from '../routing/request-target.js'
import type { VdirTable } from '../routing/vdir-table.js'
import { readCookies } from '../util/cookies.js'

// The checks every request passes before anything else looks at it, whichever parser read it
// (Node's for HTTP, casgate's own for Outlook Anywhere's RPC_* methods): one reading of the
// target, one Host, one Authorization, one session, and the exploit rule pack. A request that
// fails here never reaches preauthentication, let alone Exchange.

/** GuardRequest is a parsed request head, as either parser gives it. */
export interface GuardRequest {
  method: string
  /** The request target as sent. */
  target: string
  /** Flat [name, value, …] as received. */
  rawHeaders: readonly string[]
  /** Lower-case names; repeated headers joined as Node joins them. */
  headers: IncomingHttpHeaders
  client: string | undefined
}

/** RuleMatcher is the exploit rule pack as the guard uses it (src/rules/rule-engine.ts). */
export interface RuleMatcher {
  match: (request: { method: string, target: string, headers: IncomingHttpHeaders, vdir: string | undefined }) => { id: string } | undefined
}

/** GuardVerdict lets a request on, decoded and routed, or says what to answer. */
export type GuardVerdict<V> =
  | { ok: true, target: RequestTarget, vdir: V | undefined, host: string | undefined, hostName: string | undefined }
  | { ok: false, error: CasgateError, reason: string }

/** RequestGuardOptions wire the guard to the rule pack and the log. */
export interface RequestGuardOptions {
  rules: RuleMatcher
  /** casgate's session cookie: a request may carry it once. */
  sessionCookie: string | undefined
  /** Where blocked requests are logged (once each, with rule id, client and path). */
  log: Logger
}

// Headers that name one thing: a second copy is either a mistake or a second opinion an
// attacker hopes one hop reads and the next one does not (RFC 9110 §5.3: Host and
// Authorization are not lists).
const singletons = ['host', 'authorization', 'content-length', 'proxy-authorization']

function duplicated (rawHeaders: readonly string[]): string | undefined {
  let seen = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    const index = singletons.indexOf(name.length <= 19 ? name.toLowerCase() : '')
    if (index === -1) continue
    const bit = 1 << index
    if ((seen & bit) !== 0) return singletons[index]
    seen |= bit
  }
  return undefined
}

function refuse (problem: string): { ok: false, error: CasgateError, reason: string } {
  return { ok: false, error: new CasgateError('CASGATE_ERR_BAD_REQUEST', [problem]), reason: problem }
}

/** RequestGuard runs the checks of every request and counts the rule pack's blocks. */
export class RequestGuard<V extends ResolvedVdir> {
  readonly #options: RequestGuardOptions
  /** Blocks per rule id since start, for /status. */
  readonly blocked = new Map<string, number>()

  constructor (options: RequestGuardOptions) {
    this.#options = options
  }

  /** check judges one request head, routed by the vdir table of the host its connection was made to. */
  check (request: GuardRequest, vdirs: VdirTable<V>): GuardVerdict<V> {
    const parsed = parseRequestTarget(request.target)
    if (!parsed.ok) return refuse(parsed.problem)
    const twice = duplicated(request.rawHeaders)
    if (twice !== undefined) return refuse(`more than one ${twice} header`)
    let host: string | undefined
    let hostName: string | undefined
    const hostHeader = request.headers.host
    if (hostHeader !== undefined) {
      const parsedHost = parseHostHeader(hostHeader)
      if (parsedHost === undefined) return refuse('malformed Host header')
      host = parsedHost.forward
      hostName = parsedHost.name
    }
    const session = this.#options.sessionCookie
    if (session !== undefined && request.headers.cookie !== undefined && readCookies(request.headers.cookie, session).length > 1) {
      return refuse(`more than one ${session} cookie`)
    }
    const vdir = vdirs.matchPath(parsed.target.path)
    // Unpublished paths are answered 404 and never forwarded: no rule needs to look at them.
    if (vdir === undefined) return { ok: true, target: parsed.target, vdir, host, hostName }
    const rule = this.#options.rules.match({ method: request.method, target: request.target, headers: request.headers, vdir: vdir.path })
    if (rule !== undefined) {
      this.blocked.set(rule.id, (this.blocked.get(rule.id) ?? 0) + 1)
      this.#options.log.warn({ event: 'rule-block', rule: rule.id, client: request.client, method: request.method, url: request.target }, 'request blocked by rule')
      return { ok: false, error: new CasgateError('CASGATE_ERR_BLOCKED', [rule.id]), reason: `rule:${rule.id}` }
    }
    return { ok: true, target: parsed.target, vdir, host, hostName }
  }
}
