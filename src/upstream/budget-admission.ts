import type { ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Server } from './server.js'
import type { Budget, BudgetClass } from './budget.js'
import { Lease } from './lease.js'

/** EXHAUSTED_LOG_MS spaces the log lines of a full budget: one a minute per server and class. */
const EXHAUSTED_LOG_MS = 60_000

/**
 * BudgetAdmission gives a request its lease on a server with a place in the server's upstream
 * connection budget (budget.ts): at once when one is free, else after a bounded wait, else not at all — and
 * says so in the log once a minute per server and class, not once per refused request.
 */
export class BudgetAdmission {
  readonly #log: Logger
  readonly #loggedAt = new Map<string, number>()

  constructor (log: Logger) {
    this.#log = log
  }

  /**
   * lease resolves to the request's lease on `server`, holding a place in its `kind` budget, or
   * to undefined when no place came free within `queueTimeoutMs` or the client left meanwhile
   * (nothing is held then). A place free at once is given synchronously. `cut` is what a drain's
   * deadline does to the request.
   */
  lease (server: Server, kind: BudgetClass, vdir: string, queueTimeoutMs: number, res: ServerResponse, cut: () => void): Lease | Promise<Lease | undefined> {
    const budget = server.budgets[kind]
    if (budget.tryAcquire()) return new Lease(server, 'request', vdir, cut, budget)
    return budget.acquire(queueTimeoutMs).then((granted) => {
      if (granted && !res.destroyed) return new Lease(server, 'request', vdir, cut, budget)
      if (granted) budget.release()
      else this.#exhausted(server, kind, budget)
      return undefined
    })
  }

  /** tryLease takes a lease with a place in `server`'s `kind` budget only if one is free now (no queue). */
  tryLease (server: Server, kind: BudgetClass, leaseKind: 'request' | 'channel', vdir: string, cut: () => void): Lease | undefined {
    const budget = server.budgets[kind]
    if (budget.tryAcquire()) return new Lease(server, leaseKind, vdir, cut, budget)
    budget.refused++
    this.#exhausted(server, kind, budget)
    return undefined
  }

  #exhausted (server: Server, kind: BudgetClass, budget: Budget): void {
    const key = `${server.origin} ${kind}`
    const now = Date.now()
    if (now - (this.#loggedAt.get(key) ?? 0) < EXHAUSTED_LOG_MS) return
    this.#loggedAt.set(key, now)
    const setting = kind === 'longPoll' ? 'pools.<name>.longPollConnectionsPerServer' : 'pools.<name>.connectionsPerServer'
    this.#log.error({ backend: server.name, budget: kind, limit: budget.limit, waiting: budget.waiting, refused: budget.refused }, `upstream connection budget full (${setting}): requests got 503 (HTTP requests after waiting queueTimeoutMs)`)
  }
}
