// An upstream connection budget: how many requests of one class (interactive, long poll) may be
// on one server at once, each on an upstream connection of its own (HTTP/1.1). Long polls hold
// theirs for up to an hour, so they get a budget apart: however many phones wait in a Ping, an
// OWA click still finds a connection. A request over budget waits, first come first served, for
// at most the pool's queueTimeoutMs (HAProxy's "timeout queue"), then gets 503 with Retry-After —
// never an unbounded queue inside the HTTP client.

/** BudgetClass is the kind of request a budget is for. */
export type BudgetClass = 'interactive' | 'longPoll'

interface Waiter {
  grant: (granted: boolean) => void
  timer: NodeJS.Timeout
}

/** Budget counts one server's requests of one class and queues those over its limit. */
export class Budget {
  readonly limit: number
  inUse = 0
  /** Requests that waited past queueTimeoutMs and were refused, since start. */
  refused = 0
  readonly #waiters: Waiter[] = []
  #head = 0

  constructor (limit: number) {
    this.limit = limit
  }

  /** waiting is how many requests wait for a place now. */
  get waiting (): number {
    return this.#waiters.length - this.#head
  }

  /** tryAcquire takes a place if one is free (and nobody waits for it already). */
  tryAcquire (): boolean {
    if (this.inUse >= this.limit || this.waiting > 0) return false
    this.inUse++
    return true
  }

  /** acquire resolves true with a place, or false after `timeoutMs` without one. */
  acquire (timeoutMs: number): Promise<boolean> {
    if (this.tryAcquire()) return Promise.resolve(true)
    return new Promise((resolve) => {
      const waiter: Waiter = {
        grant: resolve,
        timer: setTimeout(() => {
          // Still queued: it leaves the queue unserved (a granted waiter has no timer any more).
          const at = this.#waiters.indexOf(waiter, this.#head)
          if (at !== -1) this.#waiters.splice(at, 1)
          this.refused++
          resolve(false)
        }, timeoutMs)
      }
      waiter.timer.unref()
      this.#waiters.push(waiter)
    })
  }

  /** release gives a place back: to the first waiter, or to the budget. */
  release (): void {
    const next = this.#waiters[this.#head]
    if (next === undefined) {
      this.inUse--
      return
    }
    this.#head++
    // Compact once the served head grows: the queue is an array used as a FIFO.
    if (this.#head > 1024 && this.#head * 2 > this.#waiters.length) {
      this.#waiters.splice(0, this.#head)
      this.#head = 0
    }
    clearTimeout(next.timer)
    next.grant(true)
  }
}
