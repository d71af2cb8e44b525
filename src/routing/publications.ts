import type { ResolvedHost, TerminatedHost } from '../config/load.js'
import type { ResolvedVdir } from '../config/vdir-tables.js'
import { HostNameTable } from '../util/host-names.js'
import { VdirTable } from './vdir-table.js'

// Routing is by host first, then by vdir. A connection belongs to the host block its TLS server
// name (SNI) selects — the default host without one — and is served that host's vdir table only:
// a host that requires client certificates protects exactly its vdirs, and a name that publishes
// only /autodiscover answers everything else with casgate's 404. A request whose Host names
// another configured host than its connection's is misdirected (RFC 9110 §15.5.20: 421), since
// that host's handshake, certificate requirement included, never took place.

/** Publication is one terminated host block with the table it publishes. */
export interface Publication<V extends ResolvedVdir> {
  readonly host: TerminatedHost
  readonly vdirs: VdirTable<V>
}

/** Publications finds the publication of a connection and checks a request's Host against it. */
export class Publications<V extends ResolvedVdir> {
  readonly #byName = new HostNameTable<ResolvedHost>()
  readonly #published = new Map<TerminatedHost, Publication<V>>()
  readonly #fallback: Publication<V> | undefined

  /** `route` turns a host's resolved table into the routed one (hosts sharing a table share its result). */
  constructor (hosts: readonly ResolvedHost[], defaultHost: ResolvedHost, route: (vdirs: readonly ResolvedVdir[]) => readonly V[]) {
    const tables = new Map<readonly ResolvedVdir[], VdirTable<V>>()
    for (const host of hosts) {
      for (const name of host.names) this.#byName.set(name, host)
      if (host.mode === 'passthrough') continue
      let table = tables.get(host.vdirs)
      if (table === undefined) tables.set(host.vdirs, table = new VdirTable(route(host.vdirs)))
      this.#published.set(host, { host, vdirs: table })
    }
    this.#fallback = defaultHost.mode === 'passthrough' ? this.#published.values().next().value : this.#published.get(defaultHost)
  }

  /** all lists every publication (one per terminated host block). */
  all (): Array<Publication<V>> {
    return [...this.#published.values()]
  }

  /**
   * forServerName is the publication of a connection made with this TLS server name: its host
   * block's, or the default host's when it names none (no SNI, an address, an unknown name).
   */
  forServerName (serverName: string | false | null | undefined): Publication<V> {
    const host = typeof serverName === 'string' ? this.#byName.get(serverName) : undefined
    return (host === undefined || host.mode === 'passthrough' ? undefined : this.#published.get(host)) ?? this.#fallback!
  }

  /**
   * misdirected says whether a request's Host name (normalised by the guard, without its port) names another
   * configured host than the publication it arrived on. A Host that names no configured host
   * (an address, a name casgate does not publish) stays with the connection's publication.
   */
  misdirected (publication: Publication<V>, hostName: string | undefined): boolean {
    const named = hostName === undefined ? undefined : this.#byName.get(hostName)
    return named !== undefined && named !== publication.host
  }
}
