import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, type KeyObject } from 'node:crypto'
import type { LRUCache } from 'lru-cache'
import { keyedHash } from '../util/keyed-hash.js'
import { boundedCache } from '../util/bounded-cache.js'

// The forms session lives in the browser: AES-256-GCM encrypts and authenticates it (a changed
// byte fails the tag), so any instance with the same secret can read it and a restart loses
// nobody's session.
//
// It holds the password. After the form, casgate logs on to Exchange with Basic on the user's
// behalf on every request, so the password must be at hand for as long as the session lives;
// kept in casgate's memory instead it would be a table of every signed-in user's password,
// lost at each restart and not shared between instances. In the cookie it is readable only
// with the session secret. That secret must therefore be one Exchange servers do not hold:
// earlier versions derived it from the TLS private key, which with Extended Protection (same
// certificate on casgate and the backends) every Exchange server has, so anyone with admin
// rights on one Client Access server could have read passwords out of cookies it was sent.
// The secret is now random, kept in casgate's state file or configured (secrets.ts), and the
// cookie never reaches Exchange (util/cookies.ts removeCookies).
//
// Stateless cookies cannot be taken back, so each session carries a random id and logoff puts
// it (as a keyed hash) into a bounded revocation set of this instance until the session's
// absolute expiry: a copy taken earlier is refused like an expired one. The set lives in
// memory: other instances, and this one after a restart, do not know the revocation (shared
// state in Valkey is DESIGN.md's answer for several instances).

/** SessionPayload is what the cookie carries. Times are in milliseconds since the epoch. */
export interface SessionPayload {
  /** Random, names the session for revocation (newSessionId). */
  id: string
  user: string
  password: string
  /** When the user logged on (absolute lifetime). */
  issuedAt: number
  /** Last request seen (idle timeout); refreshed at most once a minute. */
  seenAt: number
}

/** OpenedSession is an intact cookie's payload; keyIndex > 0 means it was sealed with an older secret. */
export interface OpenedSession {
  session: SessionPayload
  keyIndex: number
}

/** MAX_REVOKED_SESSIONS bounds the revocation set (about 150 bytes an entry: 15 MB when full). */
export const MAX_REVOKED_SESSIONS = 100_000

/** newSessionId is 128 random bits, base64url. */
export function newSessionId (): string {
  return randomBytes(16).toString('base64url')
}

// Version 2 added the session id; its AAD differs, so a version-1 cookie never opens.
const VERSION = 2
const MAX_COOKIE_BYTES = 4096

/** SessionCookiesOptions bound the revocation set and report (at most once a minute) when it forgot live entries. */
export interface SessionCookiesOptions {
  maxRevoked?: number
  onRevocationDropped?: (dropped: number) => void
}

const DROPPED_REPORT_MS = 60_000

/**
 * SessionCookies seals and opens session cookies under a list of secrets (the first seals, all
 * open: rotation) and keeps this instance's revoked session ids.
 */
export class SessionCookies {
  readonly #keys: Buffer[]
  readonly #aad: Buffer
  readonly #hashKey: KeyObject
  /** keyed hash of a revoked session id → until when (ms since the epoch) it stays revoked. */
  readonly #revoked: LRUCache<string, number>
  /** Hears each revocation made here (the id's keyed hash), for the other processes of a site. */
  shareRevocation: ((key: string, until: number) => void) | undefined

  constructor (secrets: readonly KeyObject[], cookieName: string, options: SessionCookiesOptions = {}) {
    if (secrets.length === 0) throw new TypeError('SessionCookies needs at least one secret')
    this.#keys = secrets.map((secret) => Buffer.from(hkdfSync('sha256', secret.export(), 'casgate', `session cookie v${VERSION}`, 32)))
    this.#hashKey = secrets[0]!
    // Bound to the cookie's name: a value cannot be replayed under another cookie.
    this.#aad = Buffer.from(`casgate session ${VERSION} ${cookieName}`)
    const report = options.onRevocationDropped
    let dropped = 0
    let reportedAt = -Infinity
    this.#revoked = boundedCache<string, number>(options.maxRevoked ?? MAX_REVOKED_SESSIONS, {
      // A full set forgets its oldest entry; that matters only while the session could still live.
      dispose: (until, _key, reason) => {
        if (reason !== 'evict' || until <= Date.now() || report === undefined) return
        dropped++
        if (Date.now() - reportedAt < DROPPED_REPORT_MS) return
        reportedAt = Date.now()
        report(dropped)
        dropped = 0
      }
    })
  }

  /** seal encrypts a payload under the newest secret, with a fresh IV. */
  seal (payload: SessionPayload): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.#keys[0]!, iv)
    cipher.setAAD(this.#aad)
    const plain = Buffer.from(JSON.stringify([VERSION, payload.id, payload.user, payload.password, payload.issuedAt, payload.seenAt]))
    return Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]).toString('base64url')
  }

  /** open returns the payload of an intact cookie and which secret opened it, or undefined for anything else. */
  open (value: string): OpenedSession | undefined {
    if (value.length > MAX_COOKIE_BYTES * 2) return undefined
    const sealed = Buffer.from(value, 'base64url')
    if (sealed.length < 12 + 16 + 2 || sealed.length > MAX_COOKIE_BYTES) return undefined
    for (let keyIndex = 0; keyIndex < this.#keys.length; keyIndex++) {
      const session = this.#openWith(this.#keys[keyIndex]!, sealed)
      if (session !== undefined) return { session, keyIndex }
    }
    return undefined
  }

  #openWith (key: Buffer, sealed: Buffer): SessionPayload | undefined {
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, 12))
      decipher.setAAD(this.#aad)
      decipher.setAuthTag(sealed.subarray(sealed.length - 16))
      const plain = Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()])
      const [version, id, user, password, issuedAt, seenAt] = JSON.parse(plain.toString('utf8')) as [number, string, string, string, number, number]
      if (version !== VERSION || typeof id !== 'string' || id === '' || typeof user !== 'string' || typeof password !== 'string' || !Number.isFinite(issuedAt) || !Number.isFinite(seenAt)) return undefined
      return { id, user, password, issuedAt, seenAt }
    } catch {
      return undefined
    }
  }

  /** revoke refuses session `id` from now until `until` (its absolute expiry). */
  revoke (id: string, until: number): void {
    if (until <= Date.now()) return
    const key = keyedHash(this.#hashKey, `revoked\0${id}`)
    this.#revoked.set(key, until)
    this.shareRevocation?.(key, until)
  }

  /** applyRevocation keeps a sign-out another process saw (by the session id's keyed hash). */
  applyRevocation (key: string, until: number): void {
    if (until > Date.now()) this.#revoked.set(key, until)
  }

  /** isRevoked says whether session `id` was signed out on this instance. */
  isRevoked (id: string): boolean {
    const key = keyedHash(this.#hashKey, `revoked\0${id}`)
    const until = this.#revoked.get(key)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.#revoked.delete(key)
    return false
  }

  /** revokedCount is how many revocations are held, for /status. */
  get revokedCount (): number {
    return this.#revoked.size
  }
}
