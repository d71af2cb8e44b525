import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto'

// Local users' password hashes: scrypt (RFC 7914) in a self-describing string,
//   $scrypt$ln=15,r=8,p=1$<salt, base64>$<hash, base64>
// N = 2^15, r = 8 costs ~32 MB and ~100 ms per check on a 2-core box: slow for guessing, and
// Basic results are cached, so a phone does not pay it per request.

/** ScryptHash is a parsed password hash. */
export interface ScryptHash {
  logN: number
  r: number
  p: number
  salt: Buffer
  hash: Buffer
}

const FORMAT = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/

/** parseScryptHash reads a hash string, or returns a reason it is not one. */
export function parseScryptHash (text: string): ScryptHash | string {
  const match = FORMAT.exec(text)
  if (!match) return 'expected $scrypt$ln=15,r=8,p=1$<salt>$<hash>'
  const [logN, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])]
  if (logN < 14 || logN > 22) return `ln=${logN} is out of range (14–22)`
  if (r < 1 || p < 1) return 'r and p must be at least 1'
  const salt = Buffer.from(match[4]!, 'base64')
  const hash = Buffer.from(match[5]!, 'base64')
  if (salt.length < 16 || hash.length < 32) return 'salt (16 bytes) or hash (32 bytes) too short'
  return { logN, r, p, salt, hash }
}

function derive (password: string, salt: Buffer, logN: number, r: number, p: number, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, length, { N: 2 ** logN, r, p, maxmem: 256 * 2 ** logN * r + 1024 * 1024 }, (err, key) => err ? reject(err) : resolve(key))
  })
}

/** hashPassword makes a new hash string (random salt). */
export async function hashPassword (password: string, logN = 15): Promise<string> {
  const salt = randomBytes(16)
  const hash = await derive(password, salt, logN, 8, 1, 32)
  return `$scrypt$ln=${logN},r=8,p=1$${salt.toString('base64')}$${hash.toString('base64')}`
}

/** verifyPassword compares in constant time. */
export async function verifyPassword (password: string, stored: ScryptHash): Promise<boolean> {
  const hash = await derive(password, stored.salt, stored.logN, stored.r, stored.p, stored.hash.length)
  return timingSafeEqual(hash, stored.hash)
}
