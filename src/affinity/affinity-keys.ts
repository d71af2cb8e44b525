import { createHmac, type KeyObject } from 'node:crypto'
import { keyedHash } from '../util/keyed-hash.js'

// Memory holds neither user names nor credentials, only keyed hashes (src/util/keyed-hash.ts);
// a collision would only put two users on one server.

/** AffinityKeys turns identities into keys and names servers in cookies, all under one secret. */
export class AffinityKeys {
  readonly #secret: KeyObject

  constructor (secret: KeyObject) {
    this.#secret = secret
  }

  /** key is the store key of an identity. */
  key (identity: string): string {
    return keyedHash(this.#secret, identity)
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
