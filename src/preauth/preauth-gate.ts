import type { IncomingMessage } from 'node:http'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import type { PreauthSettings } from '../config/preauth-config.js'
import type { PreauthPolicy } from '../config/schema.js'
import { readCookie } from '../affinity/identity.js'
import { basicCredentials } from '../auth/basic.js'
import { keyedHash } from '../util/keyed-hash.js'
import type { CredentialProvider } from './credential-provider.js'
import { EXCLUSION_PRESETS, Exclusions } from './exclusions.js'
import { Lockout } from './lockout.js'
import { SessionCookies, type SessionPayload } from './session-cookie.js'

/** GateAnswer is what casgate answers itself when a request may not pass. */
export interface GateAnswer {
  status: number
  headers: Record<string, string | string[]>
  body: string
  /** Why, for the access log (never the credentials). */
  reason: string
}

/** GatePass lets a request through, maybe with credentials and cookies of casgate's. */
export interface GatePass {
  /** Authorization to send to Exchange instead of the client's (forms: Basic from the session). */
  authorization: string | undefined
  /** Set-Cookie values for the response (a refreshed session). */
  setCookies: string[] | undefined
  /** The user casgate authenticated, for the access log. */
  user: string | undefined
  /** Why the request was not preauthenticated, when excluded. */
  excluded: string | undefined
}

export type GateOutcome = { pass: GatePass } | { answer: GateAnswer }

const PASS_UNCHANGED: { pass: GatePass } = { pass: { authorization: undefined, setCookies: undefined, user: undefined, excluded: undefined } }
/** A session is re-sealed (seenAt moved on) at most this often, or every quarter of the idle timeout. */
const SESSION_REFRESH_MS = 60_000
/** Where casgate's own pages live; no Exchange vdir is called that. */
export const LOGON_PATH = '/casgate/logon'
export const LOGOFF_PATH = '/casgate/logoff'
/** The sign-in form's double-submit CSRF cookie (kept to casgate's own paths). */
export const CSRF_COOKIE = 'CasgateCsrf'

/** isNavigation tells a browser's page load from a script's request (OWA's XHRs want 440, not a redirect). */
function isNavigation (request: IncomingMessage): boolean {
  if (request.method !== 'GET' && request.method !== 'HEAD') return false
  const mode = request.headers['sec-fetch-mode']
  if (mode !== undefined) return mode === 'navigate'
  return String(request.headers.accept ?? '').includes('text/html')
}

/**
 * PreauthGate authenticates requests at the edge: the exclusions, Basic with a short cache of
 * good answers, the forms session, lockout. The login form itself is served by preauth-routes.ts.
 */
export class PreauthGate {
  readonly settings: PreauthSettings
  readonly sessions: SessionCookies
  readonly lockout: Lockout
  readonly exclusions: Exclusions
  readonly provider: CredentialProvider
  readonly #log: Logger
  readonly #basicCache: LRUCache<string, true> | undefined
  readonly #realm: string

  constructor (settings: PreauthSettings, provider: CredentialProvider, log: Logger) {
    this.settings = settings
    this.provider = provider
    this.#log = log
    this.sessions = new SessionCookies(settings.secret, settings.cookieName)
    this.lockout = new Lockout(settings.lockout, settings.secret)
    this.exclusions = new Exclusions(EXCLUSION_PRESETS[settings.exclusionPreset], settings.exclude)
    this.#basicCache = settings.basicCacheTtlMs > 0 ? new LRUCache({ max: 100_000, ttl: settings.basicCacheTtlMs }) : undefined
    this.#realm = `Basic realm="${settings.realm}", charset="UTF-8"`
  }

  /** gate decides a request on a vdir with `policy` (forms or basic). */
  gate (request: IncomingMessage, policy: Exclude<PreauthPolicy, 'none'>, client: string | undefined): GateOutcome | Promise<GateOutcome> {
    const url = request.url ?? '/'
    const excluded = this.exclusions.reason(request.method ?? 'GET', url, request.headers.authorization)
    if (excluded !== undefined) return { pass: { ...PASS_UNCHANGED.pass, excluded } }
    return policy === 'basic' ? this.#basic(request, client) : this.#forms(request, url)
  }

  /**
   * checkPassword runs one logon attempt through lockout and the provider; every refusal looks
   * the same to the caller except 'unavailable' (the directory is down: nobody can tell).
   */
  async checkPassword (user: string, password: string, client: string | undefined, via: string): Promise<'valid' | 'invalid' | 'unavailable'> {
    if (this.lockout.isLocked(user, client)) {
      this.#log.warn({ event: 'preauth-locked-out', user, client, via }, 'logon refused: user or address locked out')
      return 'invalid'
    }
    const result = await this.provider.check(user, password)
    if (result === 'valid') {
      this.lockout.recordSuccess(user)
      this.#log.info({ event: 'preauth-logon', user, client, via }, 'logon')
    } else if (result === 'invalid') {
      const event = this.lockout.recordFailure(user, client)
      this.#log.warn({ event: 'preauth-failed', user, client, via }, 'logon failed')
      if (event.userLockedForMs !== undefined) this.#log.warn({ event: 'preauth-lockout', user, client, lockedForMs: event.userLockedForMs }, 'user locked out')
      if (event.addressLockedForMs !== undefined) this.#log.warn({ event: 'preauth-lockout', client, lockedForMs: event.addressLockedForMs }, 'client address locked out')
    } else {
      this.#log.error({ event: 'preauth-unavailable', user, client, via }, 'credential provider unreachable')
    }
    return result
  }

  #unauthorized (reason: string): { answer: GateAnswer } {
    const body = JSON.stringify({ statusCode: 401, code: 'CASGATE_ERR_PREAUTH_REQUIRED', error: 'Unauthorized', message: 'authentication required' })
    return { answer: { status: 401, headers: { 'www-authenticate': this.#realm, 'content-type': 'application/json; charset=utf-8' }, body, reason } }
  }

  #unavailable (): { answer: GateAnswer } {
    const body = JSON.stringify({ statusCode: 503, code: 'CASGATE_ERR_PREAUTH_UNAVAILABLE', error: 'Service Unavailable', message: 'sign-in is unavailable: the credential provider cannot be reached' })
    return { answer: { status: 503, headers: { 'retry-after': '30', 'content-type': 'application/json; charset=utf-8' }, body, reason: 'provider-unavailable' } }
  }

  #basic (request: IncomingMessage, client: string | undefined): GateOutcome | Promise<GateOutcome> {
    const credentials = basicCredentials(request.headers.authorization)
    if (credentials === undefined || credentials.password === '') return this.#unauthorized('no-credentials')
    const { user, password } = credentials
    const cacheKey = this.#basicCache && keyedHash(this.settings.secret, `basic\0${user}\0${password}`)
    if (cacheKey !== undefined && this.#basicCache!.get(cacheKey) && !this.lockout.isLocked(user, client)) return { pass: { ...PASS_UNCHANGED.pass, user } }
    return this.checkPassword(user, password, client, 'basic').then((result): GateOutcome => {
      if (result === 'unavailable') return this.#unavailable()
      if (result === 'invalid') return this.#unauthorized('bad-credentials')
      if (cacheKey !== undefined) this.#basicCache!.set(cacheKey, true)
      return { pass: { ...PASS_UNCHANGED.pass, user } }
    })
  }

  #forms (request: IncomingMessage, url: string): GateOutcome {
    const session = this.readSession(request)
    if (/^\/(owa|ecp)\/logoff\.(owa|aspx)(\?|$)/i.test(url)) return { answer: this.signOut(request) }
    if (session === undefined) {
      if (isNavigation(request)) {
        return { answer: { status: 302, headers: { location: `${LOGON_PATH}?url=${encodeURIComponent(url)}`, 'cache-control': 'no-store' }, body: '', reason: 'logon-required' } }
      }
      // OWA's scripts understand 440 Login Timeout: they reload, which lands on the form.
      return { answer: { status: 440, headers: { 'cache-control': 'no-store', 'content-type': 'text/plain' }, body: 'Login Timeout', reason: 'session-expired' } }
    }
    const now = Date.now()
    const setCookies = now - session.seenAt >= Math.min(SESSION_REFRESH_MS, this.settings.idleTimeoutMs / 4) ? [this.sessionCookie({ ...session, seenAt: now })] : undefined
    return { pass: { authorization: `Basic ${Buffer.from(`${session.user}:${session.password}`).toString('base64')}`, setCookies, user: session.user, excluded: undefined } }
  }

  /** signOut clears the session cookie and sends the browser to the form. */
  signOut (request: IncomingMessage): GateAnswer {
    // A cross-site page cannot sign the user out (SameSite keeps the cookie home anyway).
    if (request.headers['sec-fetch-site'] === 'cross-site') {
      return { status: 403, headers: { 'content-type': 'text/plain' }, body: 'cross-site sign-out refused', reason: 'cross-site-logoff' }
    }
    return { status: 302, headers: { location: `${LOGON_PATH}?signedOut=1`, 'set-cookie': this.clearedSessionCookie(), 'cache-control': 'no-store' }, body: '', reason: 'logoff' }
  }

  /** ownCookies are casgate's cookies, taken out of what Exchange receives. */
  get ownCookies (): string[] {
    return [this.settings.cookieName, CSRF_COOKIE]
  }

  /** readSession returns the live session of a request's cookie, or undefined. */
  readSession (request: IncomingMessage): SessionPayload | undefined {
    const value = readCookie(request.headers.cookie, this.settings.cookieName)
    if (value === undefined) return undefined
    const session = this.sessions.open(value)
    if (session === undefined) return undefined
    const now = Date.now()
    if (now - session.seenAt > this.settings.idleTimeoutMs) return undefined
    if (now - session.issuedAt > this.settings.absoluteTimeoutMs) return undefined
    return session
  }

  sessionCookie (session: SessionPayload): string {
    return `${this.settings.cookieName}=${this.sessions.seal(session)}; Path=/; Secure; HttpOnly; SameSite=Lax`
  }

  clearedSessionCookie (): string {
    return `${this.settings.cookieName}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0`
  }
}
