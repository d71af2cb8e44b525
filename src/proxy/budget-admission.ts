import type { ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { Backend } from '../pool/backend-pool.js'
import type { Budget, BudgetClass } from '../pool/budget.js'

/** EXHAUSTED_LOG_MS spaces the log lines of a full budget: one a minute per server and class. */
const EXHAUSTED_LOG_MS = 60_000

/**
 * BudgetAdmission gives a request its place in a server's upstream connection budget
 * (pool/budget.ts): at once when one is free, else after a bounded wait, else not at all — and
 * says so in the log once a minute per server and class, not once per refused request.
 */
export class BudgetAdmission {
  readonly #log: Logger
  readonly #loggedAt = new Map<string, number>()

  constructor (log: Logger) {
    this.#log = log
  }

  /**
   * take resolves to the budget the request now holds a place in, or undefined when none came
   * free within `queueTimeoutMs` or the client left meanwhile (nothing is held then). A place
   * free at once is given synchronously.
   */
  take (backend: Backend, kind: BudgetClass, queueTimeoutMs: number, res: ServerResponse): Budget | Promise<Budget | undefined> {
    const budget = backend.budgets[kind]
    if (budget.tryAcquire()) return budget
    return budget.acquire(queueTimeoutMs).then((granted) => {
      if (granted && !res.destroyed) return budget
      if (granted) budget.release()
      else this.#exhausted(backend, kind, budget)
      return undefined
    })
  }

  #exhausted (backend: Backend, kind: BudgetClass, budget: Budget): void {
    const key = `${backend.origin} ${kind}`
    const now = Date.now()
    if (now - (this.#loggedAt.get(key) ?? 0) < EXHAUSTED_LOG_MS) return
    this.#loggedAt.set(key, now)
    const setting = kind === 'longPoll' ? 'pools.<name>.longPollConnectionsPerServer' : 'pools.<name>.connectionsPerServer'
    this.#log.error({ backend: backend.name, budget: kind, limit: budget.limit, waiting: budget.waiting, refused: budget.refused }, `upstream connection budget full (${setting}): requests waited queueTimeoutMs and got 503`)
  }
}
