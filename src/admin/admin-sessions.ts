import { randomBytes } from 'node:crypto'
import { boundedCache } from '../util/bounded-cache.js'

// The status page signs in with the admin token once and then holds a session cookie
// (HttpOnly: scripts never see it; SameSite=Strict: no other site's page sends it), so that the
// token is not kept in the page. Sessions live in the primary's (or the single process's) memory:
// a restart signs the page out.

/** ADMIN_SESSION_COOKIE is the status page's session cookie. */
export const ADMIN_SESSION_COOKIE = 'CasgateAdmin'
const SESSION_MS = 8 * 60 * 60_000

/** AdminSessions holds the page's sessions: random ids, each for eight hours. */
export class AdminSessions {
  readonly #sessions = boundedCache<string, true>(1_000, { ttl: SESSION_MS })

  /** open starts a session and returns its Set-Cookie value. */
  open (): string {
    const id = randomBytes(32).toString('base64url')
    this.#sessions.set(id, true)
    return `${ADMIN_SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_MS / 1000}`
  }

  /** valid says whether a cookie value is a live session. */
  valid (id: string | undefined): boolean {
    return id !== undefined && this.#sessions.get(id) === true
  }

  /** close ends a session (sign-out). */
  close (id: string | undefined): void {
    if (id !== undefined) this.#sessions.delete(id)
  }
}
