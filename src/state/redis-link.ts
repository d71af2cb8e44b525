import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import type { RedisSettings } from '../config/state-config.js'
import { bounded, createRedisClient, messageOf, releaseRedisClient, RetryPauses } from './redis-client.js'
import { compareFingerprints } from './fingerprints.js'
import { RecordQueue } from './record-queue.js'
import { parseStreamEntry, SenderSequences, writeBatch } from './stream-entries.js'
import type { RedisLinkOptions, RedisLinkState, RedisLinkStatus } from './redis-link-options.js'

export type { RedisLinkOptions, RedisLinkState, RedisLinkStatus } from './redis-link-options.js'

// The Redis transport of site-wide state (issue 16). Each process keeps its own tables and
// replays what the others recorded, as cluster workers already do over IPC; this carries the same
// records between instances through one Redis Stream, so that every instance reads one order.
//
// Traffic never waits for Redis: publish() queues and returns, a writer connection sends the
// queue in batches, a reader connection follows the stream. Every command and connection attempt
// is bounded by settings.timeoutMs; past it the connection is dropped (a hung server must not
// pile up commands) and the link is 'local' until both connections work again, while records
// keep queueing (bounded, oldest dropped and counted) and are sent in order on return.
//
// A batch is one XADD, or one MULTI/EXEC of several: it lands whole or not at all. One that timed out may still have
// landed, and is sent again; each entry carries its sender's boot id and sequence number, so
// readers apply the first copy and drop the second, and every instance applies the same entries
// in the same stream order.

/** STREAM_MAX_LENGTH caps the stream whatever the age of its entries (approximate trimming). */
export const STREAM_MAX_LENGTH = 200_000
/** MAX_QUEUED is how many records wait for Redis before the oldest are dropped. */
export const MAX_QUEUED = 100_000
const BATCH = 1_000
/** Records sent between two checks of the stream's length cap. */
const TRIM_EVERY = 1_000

/**
 * RedisLink carries records (JSON-serialisable objects) between the instances of a site through
 * the Redis Stream `<keyPrefix>records`. Every record of the stream reaches onRecord in stream
 * order on every instance, this instance's own included (own: true), so that "last in stream
 * order wins" converges everywhere.
 */
export class RedisLink<R extends object> {
  /** onRecord receives each record of the stream once, in stream order; own is true for this link's. */
  onRecord: ((record: R, own: boolean) => void) | undefined

  readonly instance: string
  private readonly settings: RedisSettings
  private readonly log: Logger
  private readonly fingerprint: string | undefined
  private readonly boot = randomBytes(8).toString('base64url')
  private readonly streamKey: string
  private readonly fingerprintKey: string
  private readonly maxStreamLength: number
  private readonly blockMs: number
  private readonly heartbeatMs: number
  private readonly retryMaxMs: number
  private readonly startTimeoutMs: number
  private readonly stateHashKey: string
  private readonly stateKey: ((record: object) => string | undefined) | undefined

  private readonly queue: RecordQueue
  private flushing = false
  private flushScheduled = false
  private untrimmed = 0

  private writer: Redis | undefined
  private writerUp = false
  private writerDown: ((err: unknown) => void) | undefined
  private readerClient: Redis | undefined
  private readerUp = false
  private lastId = '0-0'
  private readonly senders = new SenderSequences()
  /** Redis's clock minus ours (ms), learnt from TIME: stream IDs and fingerprint expiries are Redis's time. */
  private clockOffset = 0

  private state: RedisLinkState = 'local'
  private since = new Date()
  private lastError: string | undefined
  private readonly causes = new WeakMap<Redis, string>()
  private fingerprintState: 'match' | 'mismatch' | 'unknown' = 'unknown'
  private started = false
  private announced = false
  private closed = false
  private closing: Promise<void> | undefined
  private readonly pauses = new RetryPauses()
  private readonly loops: Array<Promise<void>> = []
  private onShared: (() => void) | undefined
  private malformed = 0

  constructor (settings: RedisSettings, options: RedisLinkOptions) {
    this.settings = settings
    this.instance = options.instance ?? hostname()
    this.fingerprint = options.fingerprint
    this.log = options.logger.child({ component: 'redis', redis: settings.where })
    this.streamKey = `${settings.keyPrefix}records`
    this.fingerprintKey = `${settings.keyPrefix}fingerprints`
    this.queue = new RecordQueue(options.maxQueued ?? MAX_QUEUED)
    this.maxStreamLength = options.maxStreamLength ?? STREAM_MAX_LENGTH
    this.blockMs = options.blockMs ?? 2_000
    this.heartbeatMs = options.heartbeatMs ?? 5_000
    this.retryMaxMs = options.retryMaxMs ?? 5_000
    this.startTimeoutMs = options.startTimeoutMs ?? 5_000
    this.stateHashKey = `${settings.keyPrefix}state`
    this.stateKey = options.stateKey
  }

  /** publish queues a record for the other instances; it never waits and never throws. */
  publish (record: R): void {
    if (this.closed) {
      this.queue.dropped++
      return
    }
    this.queue.push(JSON.stringify(record), this.stateKey?.(record))
    if (this.writerUp && !this.flushing && !this.flushScheduled) {
      this.flushScheduled = true
      // Everything published in this turn of the event loop goes in one batch.
      setImmediate(() => {
        this.flushScheduled = false
        this.flush().catch(() => {})
      })
    }
  }

  /**
   * start connects, reads the history still in the stream, then follows it. It resolves once
   * caught up, or after startTimeoutMs when Redis does not answer (never rejects: traffic must
   * not wait for Redis); the link keeps trying in the background.
   */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    const shared = new Promise<void>((resolve) => { this.onShared = resolve })
    this.loops.push(this.writerLoop(), this.readerLoop())
    let timer: NodeJS.Timeout | undefined
    await Promise.race([shared, new Promise<void>((resolve) => { timer = setTimeout(resolve, this.startTimeoutMs) })])
    clearTimeout(timer)
    this.onShared = undefined
    this.announced = true
    if (this.state === 'local' && !this.closed) {
      this.log.warn({ err: this.lastError, queued: this.queued }, 'Redis unreachable: state kept and counted locally, will re-sync')
    }
  }

  /** status says whether state is shared, since when, and what waits. */
  status (): RedisLinkStatus {
    return {
      state: this.state,
      since: this.since.toISOString(),
      queued: this.queued,
      dropped: this.queue.dropped,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      instance: this.instance,
      fingerprint: this.fingerprintState,
      where: this.settings.where
    }
  }

  /** close sends what it can within timeoutMs, then disconnects; no timer or socket is left. */
  close (): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  private get queued (): number {
    return this.queue.size
  }

  private async shutdown (): Promise<void> {
    const writer = this.writerUp ? this.writer : undefined
    if (writer !== undefined) {
      const deadline = Date.now() + this.settings.timeoutMs
      while (this.queued > 0 && this.writerUp && Date.now() < deadline) {
        if (this.flushing) await new Promise((resolve) => setTimeout(resolve, 5))
        else await this.flush()
      }
      await bounded(writer.hdel(this.fingerprintKey, this.field), Math.max(1, deadline - Date.now()), 'HDEL').catch(() => {})
    }
    this.closed = true
    this.onShared?.()
    if (this.queued > 0) this.log.warn({ queued: this.queued }, 'closing with records Redis did not take: the other instances will not see them')
    this.pauses.wakeAll()
    this.writerDown?.(new Error('closed'))
    await Promise.all([this.writer, this.readerClient].map((client) => client && this.release(client)))
    await Promise.all(this.loops)
    this.setState(false)
  }

  private get field (): string {
    return `${this.instance}/${this.boot}`
  }

  private newClient (role: 'writer' | 'reader'): Redis {
    const client = createRedisClient(this.settings, `casgate:${this.instance.replace(/[^\w.-]/g, '_')}:${role}`)
    // ioredis reports why a connection failed (WRONGPASS, ECONNREFUSED, a TLS error) as an event,
    // and rejects the pending command with a plain "Connection is closed.": keep the reason.
    client.on('error', (err: Error) => { if (!this.causes.has(client)) this.causes.set(client, err.message) })
    return client
  }

  private release (client: Redis): Promise<void> {
    return releaseRedisClient(client, this.settings.timeoutMs)
  }

  private setState (shared: boolean): void {
    const state: RedisLinkState = shared && !this.closed ? 'shared' : 'local'
    if (state === this.state) return
    this.state = state
    this.since = new Date()
    if (state === 'shared') {
      this.log.info({ instance: this.instance }, this.announced ? 'Redis reachable again: state shared, records re-synced' : 'state shared through Redis')
      this.announced = true
      this.onShared?.()
    } else if (this.announced && !this.closed) {
      this.log.warn({ err: this.lastError, queued: this.queued }, 'Redis unreachable: state kept and counted locally, will re-sync')
    }
  }

  private updateState (): void {
    this.setState(this.writerUp && this.readerUp)
  }

  /**
   * keepConnected keeps one connection of `role` up: connect, run `session` until it ends or
   * fails, release the connection, back off, again — until the link closes.
   */
  private async keepConnected (role: 'writer' | 'reader', session: (client: Redis, connected: () => void) => Promise<void>, disconnected: () => void): Promise<void> {
    let attempt = 0
    while (!this.closed) {
      const client = this.newClient(role)
      if (role === 'writer') this.writer = client
      else this.readerClient = client
      try {
        await bounded(client.connect(), this.settings.timeoutMs, 'connect')
        await session(client, () => { attempt = 0 })
      } catch (err) {
        if (!this.closed) this.lastError = this.causes.get(client) ?? messageOf(err)
      }
      disconnected()
      await this.release(client)
      this.updateState()
      if (!this.closed) await this.pauses.after(attempt++, this.retryMaxMs)
    }
  }

  /** writerLoop keeps one writer connection: check in, flush, heartbeat, until the connection goes. */
  private writerLoop (): Promise<void> {
    return this.keepConnected('writer', async (client, connected) => {
      await this.checkIn(client)
      if (this.closed) throw new Error('closed')
      const down = new Promise<unknown>((resolve) => {
        this.writerDown = resolve
        client.once('close', () => resolve(new Error('connection closed')))
      })
      this.writerUp = true
      connected()
      this.updateState()
      this.flush().catch(() => {})
      let checking = false
      const heartbeat = setInterval(() => {
        if (this.flushing || checking) return
        checking = true
        this.checkIn(client).catch((err: unknown) => this.writerDown?.(err)).finally(() => { checking = false })
      }, this.heartbeatMs)
      const err = await down
      clearInterval(heartbeat)
      throw err
    }, () => {
      this.writerUp = false
      this.writerDown = undefined
    })
  }

  /** checkIn learns Redis's clock and registers this instance's fingerprint, comparing it with the others'. */
  private async checkIn (client: Redis): Promise<void> {
    const started = Date.now()
    const [seconds, micros] = await bounded(client.time(), this.settings.timeoutMs, 'TIME')
    this.clockOffset = Number(seconds) * 1_000 + Math.floor(Number(micros) / 1_000) - Math.round((started + Date.now()) / 2)
    const now = Date.now() + this.clockOffset
    const differing = await compareFingerprints(client, { key: this.fingerprintKey, field: this.field, fingerprint: this.fingerprint, until: now + 3 * this.heartbeatMs, now, timeoutMs: this.settings.timeoutMs })
    const state = this.fingerprint === undefined ? 'unknown' : differing.length > 0 ? 'mismatch' : 'match'
    if (state === 'mismatch' && this.fingerprintState !== 'mismatch') {
      this.log.error({ instance: this.instance, others: [...new Set(differing)] }, 'instances disagree on their shared secrets (session, affinity): lockout keys, sessions and placements will not match; give every instance the same secret files')
    } else if (state === 'match' && this.fingerprintState === 'mismatch') {
      this.log.info({ instance: this.instance }, 'instances agree on their shared secrets again')
    }
    this.fingerprintState = state
  }

  /** flush sends the queue in order, one MULTI/EXEC batch at a time, while the writer works. */
  private async flush (): Promise<void> {
    const client = this.writer
    if (this.flushing || client === undefined || !this.writerUp) return
    this.flushing = true
    try {
      while (this.queued > 0 && this.writer === client && this.writerUp) {
        const batch = this.queue.peek(BATCH)
        // The length cap is checked every so many records: MINID trims by age on every XADD.
        const trim = this.untrimmed + batch.length >= TRIM_EVERY
        await writeBatch(client, batch, {
          streamKey: this.streamKey,
          stateHashKey: this.stateHashKey,
          instance: this.instance,
          boot: this.boot,
          minId: String(Math.max(0, Date.now() + this.clockOffset - this.settings.historyMs)),
          maxLength: trim ? this.maxStreamLength : undefined,
          timeoutMs: this.settings.timeoutMs
        })
        this.untrimmed = trim ? 0 : this.untrimmed + batch.length
        this.queue.sent(batch[batch.length - 1]!.seq)
      }
    } catch (err) {
      if (this.writer === client) this.writerDown?.(err)
    } finally {
      this.flushing = false
    }
  }

  /** readerLoop keeps one reader connection: catch up from the last ID seen (or the start), then follow. */
  private readerLoop (): Promise<void> {
    return this.keepConnected('reader', async (client, connected) => {
      await this.resync(client)
      if (this.lastId === '0-0') await this.readStates(client)
      let caughtUp = false
      while (!this.closed) {
        const block = caughtUp ? ['BLOCK', this.blockMs] : []
        const reply = await bounded(client.call('XREAD', 'COUNT', BATCH, ...block, 'STREAMS', this.streamKey, this.lastId), (caughtUp ? this.blockMs : 0) + this.settings.timeoutMs, 'XREAD') as Array<[string, Array<[string, string[]]>]> | null
        const entries = reply?.[0]?.[1] ?? []
        this.deliver(entries)
        // An idle turn checks that the stream still holds the last ID: it may have been deleted
        // and begun again (FLUSHALL, a failover to a replica that had not got it) without this
        // connection dropping.
        if (caughtUp && entries.length === 0) await this.resync(client)
        if (!caughtUp && entries.length < BATCH) {
          caughtUp = true
          connected()
          this.readerUp = true
          this.updateState()
        }
      }
    }, () => { this.readerUp = false })
  }

  /**
   * resync decides where to continue after a (re)connection. The last ID seen is still in the
   * stream: from there. It is not: either the stream was trimmed past it (everything left is
   * newer, so reading from the start is the same), or Redis lost the stream (restarted without
   * persistence; the new stream's IDs may even be older than ours if its clock went back), whose
   * every entry is new to us. Either way, from the start.
   */
  private async resync (client: Redis): Promise<void> {
    if (this.lastId === '0-0') return
    const found = await bounded(client.xrange(this.streamKey, this.lastId, this.lastId), this.settings.timeoutMs, 'XRANGE')
    if (found.length === 0) this.lastId = '0-0'
  }

  /**
   * readStates delivers the states kept outright (drains, weights) before the stream is read from
   * its start: a state set longer ago than the stream's history still reaches this instance, and
   * the stream's entries, read next in order, end on the same last value.
   */
  private async readStates (client: Redis): Promise<void> {
    if (this.stateKey === undefined) return
    const states = await bounded(client.hgetall(this.stateHashKey), this.settings.timeoutMs, 'HGETALL')
    for (const json of Object.values(states)) this.hand(json, false)
  }

  private deliver (entries: Array<[string, string[]]>): void {
    for (const [id, fields] of entries) {
      this.lastId = id
      const entry = parseStreamEntry(fields)
      if (entry !== undefined && this.senders.fresh(entry)) this.hand(entry.json, entry.boot === this.boot)
    }
  }

  /** hand gives a record read from Redis to onRecord; one that is not JSON is counted and logged now and then. */
  private hand (json: string, own: boolean): void {
    let record: R
    try {
      record = JSON.parse(json) as R
    } catch {
      if (this.malformed++ % 1_000 === 0) this.log.warn({ malformed: this.malformed }, 'entries in Valkey/Redis that are not JSON were dropped (another program writing under state.redis.keyPrefix?)')
      return
    }
    try {
      this.onRecord?.(record, own)
    } catch (err) {
      this.log.error({ err }, 'applying a shared record failed')
    }
  }
}
