import type { ResolvedPool } from '../config/load.js'
import { rendezvousRank } from './rendezvous.js'
import { Server } from './server.js'

/** SelectionContext is what a request tells the selector; affinity and health add to it later. */
export interface SelectionContext {
  vdir: string
  /** A server not to pick (the one a retried request just failed on). */
  exclude?: Server | undefined
}

/**
 * ServerPool is a named group of servers (the configuration's `pools.<name>`, HAProxy's
 * "backend") with its balancing policy: `select` balances a request among the servers available
 * for its vdir, `connectionOrder` ranks them for a passthrough connection.
 */
export class ServerPool {
  readonly name: string
  readonly servers: readonly Server[]
  readonly config: ResolvedPool
  #next = 0

  constructor (config: ResolvedPool) {
    this.name = config.name
    this.config = config
    this.servers = config.servers.map((url, index) => new Server(url, index, config))
  }

  /**
   * connectionOrder ranks the servers for a passthrough connection, best first; the caller
   * tries them in turn until one accepts. source-ip is rendezvous hashing of the client
   * address (the only key at layer 4); least-connections ranks by open connections.
   */
  connectionOrder (clientAddress: string, policy: 'source-ip' | 'least-connections', monitorVdir: string): Server[] {
    const healthy = this.servers.filter((backend) => backend.isAvailable(monitorVdir))
    if (policy === 'source-ip') return rendezvousRank(clientAddress, healthy)
    const start = this.#next % Math.max(1, healthy.length)
    this.#next = (this.#next + 1) % Math.max(1, this.servers.length)
    const rotated = [...healthy.slice(start), ...healthy.slice(0, start)]
    return rotated.sort((a, b) => a.connections - b.connections)
  }

  /** select picks a backend for one request, or undefined when none can take it. */
  select (context: SelectionContext): Server | undefined {
    const backends = this.servers
    const count = backends.length
    const vdir = context.vdir
    const exclude = context.exclude
    const start = this.#next
    this.#next = (start + 1) % Math.max(1, count)
    if (this.config.balance === 'round-robin') {
      for (let i = 0; i < count; i++) {
        const backend = backends[(start + i) % count]!
        if (backend !== exclude && backend.isAvailable(vdir)) return backend
      }
      return undefined
    }
    // least-outstanding among the healthy; ties rotate so that an idle pool still spreads.
    let best: Server | undefined
    for (let i = 0; i < count; i++) {
      const candidate = backends[(start + i) % count]!
      if (candidate === exclude || !candidate.isAvailable(vdir)) continue
      if (best === undefined || candidate.outstanding < best.outstanding) best = candidate
    }
    return best
  }
}
