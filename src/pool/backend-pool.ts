import type { ResolvedPool } from '../config/load.js'
import { rendezvousRank } from './rendezvous.js'

/** Backend is one Client Access server as seen by casgate. */
export interface Backend {
  /** Stable name for logs and admin views: the server's host[:port]. */
  readonly name: string
  /** scheme://host:port, the key of its upstream connection pool. */
  readonly origin: string
  readonly url: URL
  /** Requests sent and not yet finished; least-outstanding balancing reads it. */
  outstanding: number
  /** Passthrough connections open to it; least-connections balancing reads it. */
  connections: number
  /** Client connections pinned to it by NTLM/Negotiate (each with its own upstream connection). */
  pinned: number
}

/** SelectionContext is what a request tells the selector; affinity and health add to it later. */
export interface SelectionContext {
  vdir: string
}

/**
 * BackendPool is a named group of servers with its balancing policy. `select` is the one
 * place a request gets its backend: health and affinity plug in here.
 */
export class BackendPool {
  readonly name: string
  readonly backends: readonly Backend[]
  readonly config: ResolvedPool
  #next = 0

  constructor (config: ResolvedPool) {
    this.name = config.name
    this.config = config
    this.backends = config.servers.map((url) => ({ name: url.host, origin: url.origin, url, outstanding: 0, connections: 0, pinned: 0 }))
  }

  /**
   * connectionOrder ranks the servers for a passthrough connection, best first; the caller
   * tries them in turn until one accepts. source-ip is rendezvous hashing of the client
   * address (the only key at layer 4); least-connections ranks by open connections.
   */
  connectionOrder (clientAddress: string, policy: 'source-ip' | 'least-connections'): Backend[] {
    if (policy === 'source-ip') return rendezvousRank(clientAddress, this.backends)
    const start = this.#next
    this.#next = (start + 1) % Math.max(1, this.backends.length)
    const rotated = [...this.backends.slice(start), ...this.backends.slice(0, start)]
    return rotated.sort((a, b) => a.connections - b.connections)
  }

  /** select picks a backend for one request, or undefined when none can take it. */
  select (_context: SelectionContext): Backend | undefined {
    const backends = this.backends
    if (backends.length === 0) return undefined
    if (this.config.balance === 'round-robin') {
      const backend = backends[this.#next % backends.length]
      this.#next = (this.#next + 1) % backends.length
      return backend
    }
    // least-outstanding; ties rotate so that an idle pool still spreads.
    const start = this.#next
    this.#next = (start + 1) % backends.length
    let best = backends[start]!
    for (let i = 1; i < backends.length; i++) {
      const candidate = backends[(start + i) % backends.length]!
      if (candidate.outstanding < best.outstanding) best = candidate
    }
    return best
  }
}
