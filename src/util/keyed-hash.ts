import { createHmac, type KeyObject } from 'node:crypto'

// Keyed hashes stand in for identities and credentials wherever casgate must remember them
// (affinity, Basic cache, lockout counters): HMAC-SHA-256 under a secret, cut to 96 bits and
// held as a 12-character latin1 string (one byte per character in V8). Neither the identity
// nor the credential can be read back, and without the secret they cannot be guessed offline.

/** KEYED_HASH_BYTES is how much of the HMAC is kept: at a million keys, collisions ~2^-57. */
const KEYED_HASH_BYTES = 12

/** keyedHash is the 12-character store key of `text` under `secret`. */
export function keyedHash (secret: KeyObject, text: string): string {
  return createHmac('sha256', secret).update(text).digest('binary').slice(0, KEYED_HASH_BYTES) // 'binary' is latin1
}
