import { createHmac, type KeyObject } from 'node:crypto'

// Keyed hashes, so that memory holds neither user names nor credentials: HMAC-SHA-256 with the
// configured (or certificate-derived) secret, cut to 96 bits. At a million keys the chance of
// two colliding is about 2^-57; a collision would only put two users on one server.

/** KEY_BYTES is how much of the HMAC is kept per key. */
const KEY_BYTES = 12

/** AffinityKeys turns identities into keys and names servers in cookies, all under one secret. */
export class AffinityKeys {
  readonly #secret: KeyObject

  constructor (secret: KeyObject) {
    this.#secret = secret
  }

  /**
   * key is the store key of an identity: 12 bytes of HMAC as a 12-character latin1 string (one
   * byte per character in V8, which halves the memory of a hex or base64 spelling).
   */
  key (identity: string): string {
    return createHmac('sha256', this.#secret).update(identity).digest('binary').slice(0, KEY_BYTES) // 'binary' is latin1
  }

  /**
   * serverCookie is the value of casgate's affinity cookie for one server of a pool: an opaque
   * server id and a signature over it, both HMACs, so the cookie names the server without giving
   * its address away, and a value casgate did not make matches no server.
   */
  serverCookie (pool: string, serverName: string): string {
    const id = createHmac('sha256', this.#secret).update(`server\0${pool}\0${serverName}`).digest('base64url').slice(0, 10)
    const signature = createHmac('sha256', this.#secret).update(`cookie\0${pool}\0${id}`).digest('base64url').slice(0, 22)
    return `${id}.${signature}`
  }
}
