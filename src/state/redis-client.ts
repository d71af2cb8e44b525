import type { ConnectionOptions } from 'node:tls'
import { Redis, type RedisOptions } from 'ioredis'
import type { RedisSettings } from '../config/state-config.js'

// The Valkey/Redis connections of the shared-state link: each command and connection attempt
// bounded in time, no queueing or reconnecting inside ioredis (the link does both itself).

/** RedisTimeoutError is a Redis command or connection that took longer than timeoutMs. */
export class RedisTimeoutError extends Error {}

export function bounded<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new RedisTimeoutError(`${what}: no answer within ${ms} ms`)), ms)
    promise.then((value) => { clearTimeout(timer); resolve(value) }, (err: unknown) => { clearTimeout(timer); reject(err instanceof Error ? err : new Error(String(err))) })
  })
}

export function messageOf (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function tlsOptions (settings: RedisSettings): ConnectionOptions | undefined {
  const tls = settings.tls
  if (tls === undefined) return undefined
  return {
    ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
    ...(tls.serverName !== undefined ? { servername: tls.serverName } : {}),
    ...(tls.cert !== undefined && tls.key !== undefined ? { cert: tls.cert, key: tls.key } : {})
  }
}

/** createRedisClient builds one connection (not yet connected) to the configured server or Sentinels. */
export function createRedisClient (settings: RedisSettings, connectionName: string): Redis {
  const tls = tlsOptions(settings)
  const common: RedisOptions = {
    lazyConnect: true,
    // The link queues and retries itself: ioredis must neither hold commands nor reconnect.
    enableOfflineQueue: false,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: settings.timeoutMs,
    // A hung server never acknowledges the close: its socket is destroyed after this.
    disconnectTimeout: settings.timeoutMs,
    protocol: 2,
    connectionName,
    ...(settings.username !== undefined ? { username: settings.username } : {}),
    ...(settings.password !== undefined ? { password: settings.password } : {})
  }
  const target = settings.target
  return target.kind === 'server'
    ? new Redis({ ...common, host: target.host, port: target.port, db: target.db, ...(tls ? { tls } : {}) })
    : new Redis({
      ...common,
      sentinels: target.sentinels,
      name: target.name,
      sentinelRetryStrategy: () => null,
      ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {})
    })
}

/**
 * releaseRedisClient closes a connection and waits (bounded) until it is gone. ioredis's
 * disconnect() on a connection that already ended would arm a timer of its own that nothing clears.
 */
export async function releaseRedisClient (client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'end') return
  const ended = new Promise<void>((resolve) => client.once('end', resolve))
  client.disconnect()
  await bounded(ended, timeoutMs + 100, 'disconnect').catch(() => {})
}

/**
 * RetryPauses are the waits between connection attempts: 100 ms doubling up to a maximum, with
 * jitter (instances that lost Redis together do not come back in step), all cut short at close.
 */
export class RetryPauses {
  readonly #waiting = new Set<{ timer: NodeJS.Timeout, wake: () => void }>()

  /** after waits before attempt number `attempt + 1`. */
  after (attempt: number, maxMs: number): Promise<void> {
    const base = Math.min(maxMs, 100 * 2 ** Math.min(attempt, 16))
    const ms = base / 2 + Math.random() * base / 2
    return new Promise((resolve) => {
      const pause = { timer: setTimeout(() => { this.#waiting.delete(pause); resolve() }, ms), wake: resolve }
      this.#waiting.add(pause)
    })
  }

  /** wakeAll ends every pause now (the link closes). */
  wakeAll (): void {
    for (const pause of this.#waiting) {
      clearTimeout(pause.timer)
      pause.wake()
    }
    this.#waiting.clear()
  }
}
