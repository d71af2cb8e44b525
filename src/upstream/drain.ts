import type { Logger } from 'pino'
import type { LeaseKind } from './lease.js'
import type { ServerPool } from './server-pool.js'
import type { Server } from './server.js'

/** DrainState is one server's maintenance state, for the admin listener. */
export interface DrainState {
  backend: string
  vdirs: string[]
  deadline: string | undefined
}

/**
 * DrainControl puts servers (or one vdir of a server) into maintenance: new requests and new
 * logons avoid them at once, while requests in flight, held long polls, Outlook Anywhere channels,
 * pinned NTLM connections and passthrough connections finish by themselves; at the deadline, what
 * still holds a lease on the drained server (and vdir) is cut, so that its clients come back (and
 * log on) elsewhere.
 */
export class DrainControl {
  readonly #pools: ReadonlyMap<string, ServerPool>
  readonly #log: Logger
  readonly #deadlines = new Map<Server, { timer: NodeJS.Timeout, at: number }>()

  /** Whether the deadline cuts work here: not in a cluster's primary, whose workers hold the leases. */
  readonly #cuts: boolean

  constructor (pools: ReadonlyMap<string, ServerPool>, logger: Logger, options: { cuts?: boolean } = {}) {
    this.#pools = pools
    this.#cuts = options.cuts ?? true
    this.#log = logger
  }

  /** backendsNamed finds a server in every pool that lists it (its name is host:port). */
  backendsNamed (name: string): Server[] {
    return [...this.#pools.values()].flatMap((pool) => pool.servers.filter((backend) => backend.name === name))
  }

  /** drain puts `name` (all vdirs, or one) into maintenance; returns false when no server has that name. */
  drain (name: string, vdir: string | undefined, deadlineMs: number): boolean {
    const backends = this.backendsNamed(name)
    for (const backend of backends) {
      backend.drained.add(vdir ?? '*')
      const previous = this.#deadlines.get(backend)
      if (previous) clearTimeout(previous.timer)
      const timer = setTimeout(() => {
        this.#deadlines.delete(backend)
        if (backend.drained.size === 0 || !this.#cuts) return
        const cut: Record<LeaseKind, number> = { request: 0, channel: 0, pin: 0, connection: 0 }
        for (const lease of [...backend.leases]) {
          if (!backend.drained.has('*') && (lease.vdir === undefined || !backend.drained.has(lease.vdir))) continue
          cut[lease.kind]++
          lease.cut()
        }
        this.#log.warn({ backend: backend.name, cutRequests: cut.request, cutRpcChannels: cut.channel, closedPinnedConnections: cut.pin, cutPassthroughConnections: cut.connection }, 'drain deadline reached')
      }, deadlineMs)
      timer.unref()
      this.#deadlines.set(backend, { timer, at: Date.now() + deadlineMs })
    }
    if (backends.length > 0) this.#log.warn({ backend: name, vdir: vdir ?? 'all', deadlineMs }, 'backend drained')
    return backends.length > 0
  }

  /** enable takes `name` (all vdirs, or one) out of maintenance. */
  enable (name: string, vdir: string | undefined): boolean {
    const backends = this.backendsNamed(name)
    for (const backend of backends) {
      if (vdir === undefined) backend.drained.clear()
      else backend.drained.delete(vdir)
      if (backend.drained.size === 0) {
        clearTimeout(this.#deadlines.get(backend)?.timer)
        this.#deadlines.delete(backend)
      }
    }
    if (backends.length > 0) this.#log.info({ backend: name, vdir: vdir ?? 'all' }, 'backend enabled')
    return backends.length > 0
  }

  /** setWeight gives `name` (in every pool that lists it) its share of new work; false when no server has that name. */
  setWeight (name: string, weight: number): boolean {
    const servers = this.backendsNamed(name)
    const changed = servers.filter((server) => server.weight !== weight)
    for (const server of changed) server.weight = weight
    // Told again what it has (a worker brought up to date), it says nothing.
    if (changed.length > 0) this.#log.warn({ backend: name, weight }, 'backend weight set')
    return servers.length > 0
  }

  /** weights lists the servers whose weight is not the default 1. */
  weights (): Array<{ backend: string, weight: number }> {
    const seen = new Map<string, number>()
    for (const pool of this.#pools.values()) for (const server of pool.servers) if (server.weight !== 1) seen.set(server.name, server.weight)
    return [...seen].map(([backend, weight]) => ({ backend, weight }))
  }

  /**
   * adopt takes over the drains (their deadlines still running) and weights of the control that
   * served the previous configuration, for the servers this one still has.
   */
  adopt (previous: DrainControl): void {
    for (const { backend, weight } of previous.weights()) this.setWeight(backend, weight)
    for (const state of previous.snapshot()) {
      const deadlineMs = state.deadline === undefined ? 0 : Math.max(0, Date.parse(state.deadline) - Date.now())
      for (const vdir of state.vdirs) this.drain(state.backend, vdir === '*' ? undefined : vdir, deadlineMs)
    }
  }

  /** stateOf is one server's maintenance state as a whole: vdirs drained ('*': all) and the deadline. */
  stateOf (name: string): { vdirs: string[], deadlineAt: number | null } | undefined {
    const backend = this.backendsNamed(name)[0]
    if (backend === undefined) return undefined
    return { vdirs: [...backend.drained].sort(), deadlineAt: this.#deadlines.get(backend)?.at ?? null }
  }

  /**
   * applyState makes a server's maintenance state what another process set (the same vdirs, the
   * same deadline); nothing changes, and nothing is logged, when it is so already.
   */
  applyState (name: string, vdirs: readonly string[], deadlineAt: number | null): void {
    const now = this.stateOf(name)
    if (now === undefined) return
    if (JSON.stringify(now.vdirs) === JSON.stringify([...vdirs].sort()) && (vdirs.length === 0 || Math.abs((now.deadlineAt ?? 0) - (deadlineAt ?? 0)) < 1_000)) return
    this.enable(name, undefined)
    const deadlineMs = deadlineAt === null ? 0 : Math.max(0, deadlineAt - Date.now())
    for (const vdir of vdirs) this.drain(name, vdir === '*' ? undefined : vdir, deadlineMs)
  }

  snapshot (): DrainState[] {
    const seen = new Map<string, DrainState>()
    for (const pool of this.#pools.values()) {
      for (const backend of pool.servers) {
        if (backend.drained.size === 0 || seen.has(backend.name)) continue
        const deadline = this.#deadlines.get(backend)?.at
        seen.set(backend.name, { backend: backend.name, vdirs: [...backend.drained], deadline: deadline ? new Date(deadline).toISOString() : undefined })
      }
    }
    return [...seen.values()]
  }

  stop (): void {
    for (const { timer } of this.#deadlines.values()) clearTimeout(timer)
  }
}
