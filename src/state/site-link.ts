import { createHmac } from 'node:crypto'
import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/load.js'
import type { RedisLink } from './redis-link.js'
import { parseSharedRecord, stateKey, type SharedRecord } from './shared-record.js'

/**
 * siteFingerprint is what instances compare to know they share their secrets: a keyed hash of a
 * fixed text under the session secret and under the affinity secret (neither can be read back).
 * Instances that differ would hash users, sessions and affinity keys differently: lockout counts
 * and sign-outs would not meet, and placements would not agree.
 */
export function siteFingerprint (config: GatewayConfig): string {
  const of = (secret: Parameters<typeof createHmac>[1]): string => createHmac('sha256', secret).update('casgate site fingerprint v1').digest('base64url').slice(0, 22)
  return [config.preauth === undefined ? '-' : of(config.preauth.secret), of(config.affinity.secret)].join('.')
}

/**
 * openSiteLink connects this instance to the others of its site through Valkey/Redis, when the
 * configuration has a state block: every record made here is published, and every record another
 * instance made is handed to `apply`. An affinity placement of this instance's own comes back in
 * stream order too, so that every instance ends on the same last placement of a key.
 */
export async function openSiteLink (config: GatewayConfig, logger: Logger, apply: (record: SharedRecord) => void): Promise<RedisLink<SharedRecord> | undefined> {
  if (config.state === undefined) return undefined
  // Loaded only where state.redis is configured: ioredis is 2 MB of heap an instance alone does not need.
  const { RedisLink } = await import('./redis-link.js')
  const link = new RedisLink<SharedRecord>(config.state.redis, {
    logger,
    fingerprint: siteFingerprint(config),
    stateKey: (record) => stateKey(record as SharedRecord),
    ...(process.env.CASGATE_INSTANCE ? { instance: process.env.CASGATE_INSTANCE } : {})
  })
  let malformed = 0
  link.onRecord = (value, own) => {
    const record = parseSharedRecord(value)
    if (record === undefined) {
      // Logged once in a while: whatever writes them must not flood the log.
      if (malformed++ % 1_000 === 0) logger.warn({ malformed }, 'malformed shared records in Valkey/Redis were dropped (another program writing under state.redis.keyPrefix?)')
      return
    }
    if (!own || record.kind === 'assignment') apply(record)
  }
  return link
}
