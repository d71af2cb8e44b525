import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, type KeyObject } from 'node:crypto'

// The forms session lives in the browser, not in casgate: AES-256-GCM encrypts and
// authenticates it (a changed byte fails the tag), so any instance with the same secret can
// read it and a restart loses nobody's session. It holds the password, because after the form
// casgate logs on to Exchange with Basic on the user's behalf; encrypted, it is no more exposed
// than the session itself. Limitation of being stateless: logoff clears the browser's cookie,
// but a copy taken earlier stays valid until its idle or absolute lifetime ends.

/** SessionPayload is what the cookie carries. Times are in milliseconds since the epoch. */
export interface SessionPayload {
  user: string
  password: string
  /** When the user logged on (absolute lifetime). */
  issuedAt: number
  /** Last request seen (idle timeout); refreshed at most once a minute. */
  seenAt: number
}

const VERSION = 1

export class SessionCookies {
  readonly #key: Buffer
  readonly #aad: Buffer

  constructor (secret: KeyObject, cookieName: string) {
    this.#key = Buffer.from(hkdfSync('sha256', secret.export(), 'casgate', 'session cookie v1', 32))
    // Bound to the cookie's name: a value cannot be replayed under another cookie.
    this.#aad = Buffer.from(`casgate session ${VERSION} ${cookieName}`)
  }

  seal (payload: SessionPayload): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv)
    cipher.setAAD(this.#aad)
    const plain = Buffer.from(JSON.stringify([VERSION, payload.user, payload.password, payload.issuedAt, payload.seenAt]))
    const sealed = Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()])
    return sealed.toString('base64url')
  }

  /** open returns the payload of an intact cookie, or undefined for anything else. */
  open (value: string): SessionPayload | undefined {
    const sealed = Buffer.from(value, 'base64url')
    if (sealed.length < 12 + 16 + 2 || sealed.length > 4096) return undefined
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, sealed.subarray(0, 12))
      decipher.setAAD(this.#aad)
      decipher.setAuthTag(sealed.subarray(sealed.length - 16))
      const plain = Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()])
      const [version, user, password, issuedAt, seenAt] = JSON.parse(plain.toString('utf8')) as [number, string, string, number, number]
      if (version !== VERSION || typeof user !== 'string' || typeof password !== 'string' || !Number.isFinite(issuedAt) || !Number.isFinite(seenAt)) return undefined
      return { user, password, issuedAt, seenAt }
    } catch {
      return undefined
    }
  }
}
