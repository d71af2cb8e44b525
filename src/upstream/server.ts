import { isIP } from 'node:net'
import { Budget, type BudgetClass } from './budget.js'
import type { Lease } from './lease.js'

/** ServerSettings are what a server takes from its pool's configuration. */
export interface ServerSettings {
  connectionsPerServer: number
  longPollConnectionsPerServer: number
  /** TLS name to verify (pools.<name>.serverName); else the URL's host name unless it is an address. */
  serverName?: string | undefined
}

/**
 * Server is one Client Access server as casgate sees it (HAProxy's "server"): its health and
 * maintenance per vdir, its upstream connection budgets, and the leases that hold work on it.
 * Its counters move only with leases (lease.ts): whoever sends work to a server — a request, an
 * NTLM-pinned connection, an Outlook Anywhere channel, a passthrough connection — holds a lease,
 * and a drain's deadline cuts exactly what the leases list.
 */
export class Server {
  /** Stable name for logs and admin views: the server's host[:port]. */
  readonly name: string
  /** Position in its pool, for per-server counters kept in arrays. */
  readonly index: number
  /** scheme://host:port, the key of its upstream connection pools. */
  readonly origin: string
  readonly url: URL
  /**
   * TLS server name for HTTPS servers: the pool's serverName, else the URL's host name. Passed
   * on every request, because undici otherwise takes the Host header (the external name) for
   * SNI and certificate checks. Undefined for plain HTTP and for IP literals without serverName.
   */
  readonly tlsServerName: string | undefined
  /** Requests and RPC channels on it now; least-outstanding balancing reads it. */
  outstanding = 0
  /** Passthrough connections open to it; least-connections balancing reads it. */
  connections = 0
  /**
   * Its share of new work against the pool's other servers (default 1; HAProxy's "weight"): twice
   * the weight, twice the requests, connections and new affinity keys. 0 takes no new work
   * (affinity keys it already holds stay), like a drain without a deadline.
   */
  weight = 1
  /** Client connections pinned to it by NTLM/Negotiate (each with its own upstream connection). */
  pinned = 0
  /** Vdirs whose health page says this server is out (set by the health monitor). */
  readonly down = new Set<string>()
  /** Vdirs an admin put into maintenance ('*': the whole server): no new requests or logons. */
  readonly drained = new Set<string>()
  /** Everything holding work on it, which a drain's deadline cuts. */
  readonly leases = new Set<Lease>()
  /** Upstream connection budgets, interactive and long-poll apart (budget.ts). */
  readonly budgets: Readonly<Record<BudgetClass, Budget>>

  constructor (url: URL, index: number, settings: ServerSettings) {
    this.name = url.host
    this.index = index
    this.origin = url.origin
    this.url = url
    this.tlsServerName = url.protocol === 'https:' ? settings.serverName ?? (isIP(url.hostname) === 0 ? url.hostname : undefined) : undefined
    this.budgets = { interactive: new Budget(settings.connectionsPerServer), longPoll: new Budget(settings.longPollConnectionsPerServer) }
  }

  /** isAvailable says whether the server may take new work for a vdir: healthy and not drained. */
  isAvailable (vdir: string): boolean {
    return !this.down.has(vdir) && (this.drained.size === 0 || (!this.drained.has('*') && !this.drained.has(vdir)))
  }
}
