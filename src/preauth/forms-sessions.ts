import type { IncomingMessage } from 'node:http'
import type { Logger } from 'pino'
import type { PreauthSettings } from '../config/preauth-config.js'
import { readCookie, readCookies } from '../util/cookies.js'
import type { GateAnswer, GateOutcome } from './gate-outcome.js'
import { SessionCookies, type OpenedSession, type SessionPayload } from './session-cookie.js'

// The forms half of preauthentication: a browser signed in on casgate's form carries an
// encrypted session cookie (session-cookie.ts); requests with a live one reach Exchange as the
// user, with Basic. Sign-out revokes the session on this instance.

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

/** FormsSessions reads, refreshes, issues and ends forms sessions. */
export class FormsSessions {
  readonly settings: PreauthSettings
  readonly sessions: SessionCookies
  readonly #log: Logger

  constructor (settings: PreauthSettings, log: Logger) {
    this.settings = settings
    this.#log = log
    this.sessions = new SessionCookies(settings.secrets, settings.cookieName, { onRevocationDropped: (dropped) => log.warn({ event: 'preauth-revocations-dropped', dropped }, 'revocation set full: signed-out sessions forgotten before their expiry') })
  }

  /**
   * decide lets a request with a live session through as its user (Basic to Exchange), or sends
   * it to the form (440 for scripts); OWA's and ECP's sign-out end the session. `path` is the
   * decoded path, `url` the target as sent (the form returns to it).
   */
  decide (request: IncomingMessage, url: string, path: string): GateOutcome {
    // On the decoded path: /owa/logoff%2eowa is OWA's sign-out to IIS, so it is casgate's too.
    if (/^\/(owa|ecp)\/logoff\.(owa|aspx)$/i.test(path)) return { answer: this.signOut(request) }
    const opened = this.readSession(request)
    if (opened === undefined) {
      if (isNavigation(request)) {
        return { answer: { status: 302, headers: { location: `${LOGON_PATH}?url=${encodeURIComponent(url)}`, 'cache-control': 'no-store' }, body: '', reason: 'logon-required' } }
      }
      // OWA's scripts understand 440 Login Timeout: they reload, which lands on the form.
      return { answer: { status: 440, headers: { 'cache-control': 'no-store', 'content-type': 'text/plain' }, body: 'Login Timeout', reason: 'session-expired' } }
    }
    const { session, keyIndex } = opened
    const now = Date.now()
    // A cookie sealed with an older secret is re-sealed with the newest at once (rotation).
    const refresh = keyIndex > 0 || now - session.seenAt >= Math.min(SESSION_REFRESH_MS, this.settings.idleTimeoutMs / 4)
    const setCookies = refresh ? [this.sessionCookie({ ...session, seenAt: now })] : undefined
    return { pass: { authorization: `Basic ${Buffer.from(`${session.user}:${session.password}`).toString('base64')}`, setCookies, user: session.user, excluded: undefined } }
  }

  /**
   * signOut ends the session on this instance (its id is revoked until its absolute expiry, so
   * a copy of the cookie taken earlier is refused), clears the cookie and sends the browser to
   * the form.
   */
  signOut (request: IncomingMessage): GateAnswer {
    // A cross-site page cannot sign the user out (SameSite keeps the cookie home anyway).
    if (request.headers['sec-fetch-site'] === 'cross-site') {
      return { status: 403, headers: { 'content-type': 'text/plain' }, body: 'cross-site sign-out refused', reason: 'cross-site-logoff' }
    }
    // Every session cookie the request carries (a browser may hold two, of two paths); a few at most.
    for (const value of readCookies(request.headers.cookie, this.settings.cookieName).slice(0, 4)) {
      const opened = value === '' ? undefined : this.sessions.open(value)
      if (opened === undefined) continue
      this.sessions.revoke(opened.session.id, opened.session.issuedAt + this.settings.absoluteTimeoutMs)
      this.#log.info({ event: 'preauth-logoff', user: opened.session.user }, 'logoff')
    }
    return { status: 302, headers: { location: `${LOGON_PATH}?signedOut=1`, 'set-cookie': this.clearedSessionCookie(), 'cache-control': 'no-store' }, body: '', reason: 'logoff' }
  }

  /** ownCookies are casgate's cookies, taken out of what Exchange receives. */
  get ownCookies (): string[] {
    return [this.settings.cookieName, CSRF_COOKIE]
  }

  /**
   * readSession returns the live session of a request's cookie (the first of that name, read
   * as util/cookies.ts reads it for stripping), or undefined when absent, not intact, idle or
   * past its lifetime, or signed out on this instance.
   */
  readSession (request: IncomingMessage): OpenedSession | undefined {
    const value = readCookie(request.headers.cookie, this.settings.cookieName)
    if (value === undefined) return undefined
    const opened = this.sessions.open(value)
    if (opened === undefined) return undefined
    const { session } = opened
    const now = Date.now()
    if (now - session.seenAt > this.settings.idleTimeoutMs) return undefined
    if (now - session.issuedAt > this.settings.absoluteTimeoutMs) return undefined
    if (this.sessions.isRevoked(session.id)) return undefined
    return opened
  }

  /** sessionCookie is the Set-Cookie value of a session, sealed with the newest secret. */
  sessionCookie (session: SessionPayload): string {
    return `${this.settings.cookieName}=${this.sessions.seal(session)}; Path=/; Secure; HttpOnly; SameSite=Lax`
  }

  /** clearedSessionCookie is the Set-Cookie value that removes the session cookie. */
  clearedSessionCookie (): string {
    return `${this.settings.cookieName}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0`
  }
}
