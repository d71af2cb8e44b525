import type { Logger } from 'pino'

/** RedisLinkState is 'shared' while records travel both ways, 'local' otherwise. */
export type RedisLinkState = 'shared' | 'local'

/** RedisLinkStatus is what /status and the log show of the link. */
export interface RedisLinkStatus {
  state: RedisLinkState
  /** When the state last changed (ISO 8601). */
  since: string
  /** Records waiting for Redis. */
  queued: number
  /** Records dropped because the queue was full, since start. */
  dropped: number
  /** The last Redis error, for the admin (no secrets: Redis error texts name none). */
  lastError?: string
  instance: string
  /** Whether every instance seen in Redis derives the same fingerprint from its shared secrets. */
  fingerprint: 'match' | 'mismatch' | 'unknown'
  /** Where Redis is (no credentials). */
  where: string
}

/** RedisLinkOptions are the link's own settings; the defaults suit production, tests shorten them. */
export interface RedisLinkOptions {
  logger: Logger
  /** This instance's name in Redis and the log (default: the host name). */
  instance?: string
  /** A keyed hash of the secrets instances must share; instances that differ are reported. */
  fingerprint?: string
  /** Records kept while Redis is away (default MAX_QUEUED). */
  maxQueued?: number
  /** Stream length cap (default STREAM_MAX_LENGTH). */
  maxStreamLength?: number
  /** How long one XREAD waits for new entries (default 2 s); a hung server is noticed after this plus timeoutMs. */
  blockMs?: number
  /** How often an idle writer checks that Redis answers and re-checks fingerprints (default 5 s). */
  heartbeatMs?: number
  /** Longest pause between connection attempts (default 5 s; they start at 100 ms and double). */
  retryMaxMs?: number
  /** Longest wait of start() for Redis (default 5 s); it resolves anyway, the link keeps trying. */
  startTimeoutMs?: number
  /**
   * Names what a record sets outright (a drain, a weight): its last value is kept in the hash
   * `<keyPrefix>state` too, which outlives the stream's history, and is read first by a link that
   * reads the stream from its start.
   */
  stateKey?: (record: object) => string | undefined
}
