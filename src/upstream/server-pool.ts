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
  /** Running scores of smooth weighted round robin. */
  readonly #scores = new Map<Server, number>()

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
    const healthy = this.servers.filter((backend) => backend.isAvailable(monitorVdir) && backend.weight > 0)
    if (policy === 'source-ip') return rendezvousRank(clientAddress, healthy)
    const start = this.#next % Math.max(1, healthy.length)
    this.#next = (this.#next + 1) % Math.max(1, this.servers.length)
    const rotated = [...healthy.slice(start), ...healthy.slice(0, start)]
    return rotated.sort((a, b) => (a.connections + 1) / a.weight - (b.connections + 1) / b.weight)
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
      if (this.#weighted()) return this.#smoothWeighted(vdir, exclude)
      for (let i = 0; i < count; i++) {
        const backend = backends[(start + i) % count]!
        if (backend !== exclude && backend.isAvailable(vdir) && backend.weight > 0) return backend
      }
      return undefined
    }
    // least-outstanding among the healthy, per unit of weight ((outstanding + 1) / weight, as
    // HAProxy's leastconn); ties rotate so that an idle pool still spreads.
    let best: Server | undefined
    let bestLoad = Infinity
    for (let i = 0; i < count; i++) {
      const candidate = backends[(start + i) % count]!
      if (candidate === exclude || candidate.weight <= 0 || !candidate.isAvailable(vdir)) continue
      const load = (candidate.outstanding + 1) / candidate.weight
      if (load < bestLoad) {
        best = candidate
        bestLoad = load
      }
    }
    return best
  }

  #weighted (): boolean {
    for (const server of this.servers) if (server.weight !== 1) return true
    return false
  }

  /**
   * smoothWeighted is nginx's smooth weighted round robin: every pick adds each candidate's weight
   * to its running score and takes the highest, which then gives back the total. Weights 5:1:1
   * give a, a, b, a, c, a, a — spread, not in bursts.
   */
  #smoothWeighted (vdir: string, exclude: Server | undefined): Server | undefined {
    let best: Server | undefined
    let total = 0
    for (const server of this.servers) {
      if (server === exclude || server.weight <= 0 || !server.isAvailable(vdir)) continue
      const score = (this.#scores.get(server) ?? 0) + server.weight
      this.#scores.set(server, score)
      total += server.weight
      if (best === undefined || score > this.#scores.get(best)!) best = server
    }
    if (best !== undefined) this.#scores.set(best, this.#scores.get(best)! - total)
    return best
  }
}
