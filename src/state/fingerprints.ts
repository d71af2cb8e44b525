import type { Redis } from 'ioredis'
import { bounded } from './redis-client.js'

/** FingerprintCheck is one instance's turn at comparing fingerprints, on Redis's clock. */
export interface FingerprintCheck {
  /** The hash every instance states its fingerprint in. */
  key: string
  /** This instance's field (instance name and boot). */
  field: string
  fingerprint: string | undefined
  /** When this statement lapses unless renewed (an instance that stopped drops out). */
  until: number
  now: number
  timeoutMs: number
}

/**
 * compareFingerprints states this instance's fingerprint with an expiry and lists the instances
 * alive whose fingerprint differs. Expiring statements (rather than one value set once) mean both
 * sides of a disagreement see it, and that after the secrets are rotated on every instance the
 * old value does not linger.
 */
export async function compareFingerprints (client: Redis, check: FingerprintCheck): Promise<string[]> {
  const reply = await bounded(client.multi()
    .hset(check.key, check.field, JSON.stringify({ fp: check.fingerprint ?? '', until: check.until }))
    .hgetall(check.key)
    .exec(), check.timeoutMs, 'fingerprint check')
  if (reply === null) throw new Error('fingerprint check aborted')
  const [, all] = reply[1] ?? []
  const stale: string[] = []
  const differing: string[] = []
  for (const [field, text] of Object.entries((all ?? {}) as Record<string, string>)) {
    let entry: { fp?: unknown, until?: unknown }
    try {
      entry = JSON.parse(text) as { fp?: unknown, until?: unknown }
    } catch {
      stale.push(field)
      continue
    }
    if (typeof entry.until !== 'number' || entry.until < check.now) stale.push(field)
    else if (check.fingerprint !== undefined && typeof entry.fp === 'string' && entry.fp !== '' && entry.fp !== check.fingerprint) differing.push(field.replace(/\/[^/]*$/, ''))
  }
  if (stale.length > 0) await bounded(client.hdel(check.key, ...stale), check.timeoutMs, 'HDEL')
  return differing
}
