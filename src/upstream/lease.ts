import type { Budget } from './budget.js'
import type { Server } from './server.js'

/**
 * LeaseKind is what a lease holds on its server, and so which counter it moves: a proxied
 * request or an Outlook Anywhere channel (outstanding, what least-outstanding balances), a client
 * connection pinned by NTLM/Negotiate (pinned), a passthrough connection (connections).
 */
export type LeaseKind = 'request' | 'channel' | 'pin' | 'connection'

/**
 * Lease is work held on one server: the only way a server's counters move. It is taken when a
 * server is chosen, moved when a retry goes elsewhere, cut by a drain's deadline, and released
 * (once, whatever happens twice) when the work ends. A lease may also hold a place in one of the
 * server's upstream connection budgets, given back with it.
 */
export class Lease {
  readonly kind: LeaseKind
  /** The vdir the work is for (a drain of one vdir cuts only its own); undefined for passthrough. */
  readonly vdir: string | undefined
  #server: Server
  #budget: Budget | undefined
  readonly #cut: () => void
  #released = false

  /** `cut` ends the work from casgate's side (a drain deadline): the holder closes what it holds. */
  constructor (server: Server, kind: LeaseKind, vdir: string | undefined, cut: () => void, budget?: Budget) {
    this.kind = kind
    this.vdir = vdir
    this.#server = server
    this.#budget = budget
    this.#cut = cut
    this.#count(server, 1)
  }

  get server (): Server {
    return this.#server
  }

  /** released says whether the work has ended. */
  get released (): boolean {
    return this.#released
  }

  /**
   * move carries the lease to another server (a retry), with its place in that server's budget
   * when it holds one: the caller took `budget` there already.
   */
  move (to: Server, budget: Budget | undefined): void {
    if (this.#released) throw new Error('a released lease cannot move')
    this.#count(this.#server, -1)
    this.#budget?.release()
    this.#server = to
    this.#budget = budget
    this.#count(to, 1)
  }

  /** cut ends the work from casgate's side; the holder's cut releases the lease. */
  cut (): void {
    if (!this.#released) this.#cut()
  }

  /** release ends the lease; later calls do nothing. */
  release (): void {
    if (this.#released) return
    this.#released = true
    this.#count(this.#server, -1)
    this.#budget?.release()
    this.#budget = undefined
  }

  #count (server: Server, by: 1 | -1): void {
    switch (this.kind) {
      case 'request':
      case 'channel':
        server.outstanding += by
        break
      case 'pin':
        server.pinned += by
        break
      case 'connection':
        server.connections += by
        break
    }
    if (by === 1) server.leases.add(this)
    else server.leases.delete(this)
  }
}
