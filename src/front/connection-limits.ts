import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { addressKey } from '../util/address-key.js'

/** LIMIT_WARNING_INTERVAL_MS spaces the warnings of a limit: one line per address (or for the total) a minute. */
const LIMIT_WARNING_INTERVAL_MS = 60_000

/** ConnectionLimitOptions are listen.maxConnections and maxConnectionsPerAddress. */
export interface ConnectionLimitOptions {
  maxConnections: number
  maxConnectionsPerAddress: number
  /** Addresses exempt from the per-address limit: trusted proxies, which carry many clients. */
  unlimitedAddress?: ((address: string) => boolean) | undefined
  /** Open connections per address, shared by the front doors of one port (client-port.ts). */
  perAddress?: Map<string, number> | undefined
}

/** ConnectionLimits keeps the open connections per address and refuses those over a limit. */
export class ConnectionLimits {
  readonly #options: ConnectionLimitOptions
  readonly #counters: { refusedAtTotalLimit: number, refusedAtAddressLimit: number }
  readonly #log: Logger
  /** Open connections per addressKey. */
  readonly #perAddress: Map<string, number>
  /** When each limit last logged (addressKey, or '' for the total), in insertion order of time. */
  readonly #warnedAt = new Map<string, number>()

  constructor (options: ConnectionLimitOptions, counters: { refusedAtTotalLimit: number, refusedAtAddressLimit: number }, log: Logger) {
    this.#options = options
    this.#perAddress = options.perAddress ?? new Map()
    this.#counters = counters
    this.#log = log
  }

  /**
   * admit counts a new connection against the limits, or closes it when one is reached. Done at
   * accept, before a byte is read: a refused connection costs no TLS handshake and no buffer.
   */
  admit (socket: Socket, openTotal: number): boolean {
    const address = socket.remoteAddress
    if (address === undefined) {
      // Already gone (reset before accept completed): nothing to serve.
      socket.destroy()
      return false
    }
    const key = addressKey(address)
    const open = this.#perAddress.get(key) ?? 0
    const { maxConnections, maxConnectionsPerAddress } = this.#options
    if (openTotal >= maxConnections) {
      this.#counters.refusedAtTotalLimit++
      this.#warnLimit('', { limit: maxConnections, open: openTotal, client: address }, 'connection limit reached (listen.maxConnections): closing new connections')
    } else if (open >= maxConnectionsPerAddress && this.#options.unlimitedAddress?.(address) !== true) {
      this.#counters.refusedAtAddressLimit++
      this.#warnLimit(key, { limit: maxConnectionsPerAddress, open, client: key }, 'connection limit per address reached (listen.maxConnectionsPerAddress): closing new connections from it')
    } else {
      this.#perAddress.set(key, open + 1)
      socket.once('close', () => {
        const left = (this.#perAddress.get(key) ?? 1) - 1
        if (left > 0) this.#perAddress.set(key, left)
        else this.#perAddress.delete(key)
      })
      return true
    }
    socket.destroy()
    return false
  }

  /** #warnLimit logs a reached limit at most once a minute per key: a flood must not flood the log too. */
  #warnLimit (key: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now()
    const last = this.#warnedAt.get(key)
    if (last !== undefined && now - last < LIMIT_WARNING_INTERVAL_MS) return
    // Re-inserted, so the map stays ordered by time and the stale entries are at its head.
    this.#warnedAt.delete(key)
    this.#warnedAt.set(key, now)
    for (const [stale, at] of this.#warnedAt) {
      if (now - at < LIMIT_WARNING_INTERVAL_MS) break
      this.#warnedAt.delete(stale)
    }
    this.#log.warn(fields, message)
  }
}
