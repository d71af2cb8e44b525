import { isIP } from 'node:net'
import type { ResolvedPool } from '../config/load.js'
import { rendezvousRank } from './rendezvous.js'
import { Budget, type BudgetClass } from './budget.js'

/** Backend is one Client Access server as seen by casgate. */
export interface Backend {
  /** Stable name for logs and admin views: the server's host[:port]. */
  readonly name: string
  /** Position in its pool, for per-server counters kept in arrays. */
  readonly index: number
  /** scheme://host:port, the key of its upstream connection pool. */
  readonly origin: string
  readonly url: URL
  /** Requests sent and not yet finished; least-outstanding balancing reads it. */
  outstanding: number
  /** Passthrough connections open to it; least-connections balancing reads it. */
  connections: number
  /** Client connections pinned to it by NTLM/Negotiate (each with its own upstream connection). */
  pinned: number
  /** Vdirs whose health page says this server is out (set by the health monitor). */
  readonly down: Set<string>
  /** Vdirs an admin put into maintenance ('*': the whole server): no new requests or logons. */
  readonly drained: Set<string>
  /** Requests in flight on it that can be cut (a drain's deadline ends held long polls). */
  readonly inFlight: Set<{ cut: () => void }>
  /** Upstream connection budgets, interactive and long-poll apart (budget.ts). */
  readonly budgets: Readonly<Record<BudgetClass, Budget>>
  /**
   * TLS server name for HTTPS backends: the pool's serverName, else the URL's host name. Passed
   * on every request, because undici otherwise takes the Host header (the external name) for
   * SNI and certificate checks. Undefined for plain HTTP and for IP literals without serverName.
   */
  readonly tlsServerName: string | undefined
}

/** isAvailable says whether a server may take new work for a vdir: healthy and not drained. */
export function isAvailable (backend: Backend, vdir: string): boolean {
  return !backend.down.has(vdir) && (backend.drained.size === 0 || (!backend.drained.has('*') && !backend.drained.has(vdir)))
}

/** SelectionContext is what a request tells the selector; affinity and health add to it later. */
export interface SelectionContext {
  vdir: string
  /** A server not to pick (the one a retried request just failed on). */
  exclude?: Backend | undefined
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
    this.backends = config.servers.map((url, index) => ({
      name: url.host,
      index,
      origin: url.origin,
      url,
      outstanding: 0,
      connections: 0,
      pinned: 0,
      down: new Set<string>(),
      drained: new Set<string>(),
      inFlight: new Set(),
      budgets: { interactive: new Budget(config.connectionsPerServer), longPoll: new Budget(config.longPollConnectionsPerServer) },
      tlsServerName: url.protocol === 'https:' ? config.serverName ?? (isIP(url.hostname) === 0 ? url.hostname : undefined) : undefined
    }))
  }

  /**
   * connectionOrder ranks the servers for a passthrough connection, best first; the caller
   * tries them in turn until one accepts. source-ip is rendezvous hashing of the client
   * address (the only key at layer 4); least-connections ranks by open connections.
   */
  connectionOrder (clientAddress: string, policy: 'source-ip' | 'least-connections', monitorVdir: string): Backend[] {
    const healthy = this.backends.filter((backend) => isAvailable(backend, monitorVdir))
    if (policy === 'source-ip') return rendezvousRank(clientAddress, healthy)
    const start = this.#next % Math.max(1, healthy.length)
    this.#next = (this.#next + 1) % Math.max(1, this.backends.length)
    const rotated = [...healthy.slice(start), ...healthy.slice(0, start)]
    return rotated.sort((a, b) => a.connections - b.connections)
  }

  /** select picks a backend for one request, or undefined when none can take it. */
  select (context: SelectionContext): Backend | undefined {
    const backends = this.backends
    const count = backends.length
    const vdir = context.vdir
    const exclude = context.exclude
    const start = this.#next
    this.#next = (start + 1) % Math.max(1, count)
    if (this.config.balance === 'round-robin') {
      for (let i = 0; i < count; i++) {
        const backend = backends[(start + i) % count]!
        if (backend !== exclude && isAvailable(backend, vdir)) return backend
      }
      return undefined
    }
    // least-outstanding among the healthy; ties rotate so that an idle pool still spreads.
    let best: Backend | undefined
    for (let i = 0; i < count; i++) {
      const candidate = backends[(start + i) % count]!
      if (candidate === exclude || !isAvailable(candidate, vdir)) continue
      if (best === undefined || candidate.outstanding < best.outstanding) best = candidate
    }
    return best
  }
}
