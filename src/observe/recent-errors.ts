/** RecentError is one failure worth showing on the status page. */
export interface RecentError {
  /** ISO time. */
  at: string
  code: string
  server: string
  vdir: string
}

const KEPT = 20

/** RecentErrors keeps the last upstream failures (a ring of 20), for /status and the status page. */
export class RecentErrors {
  readonly #ring: RecentError[] = []

  add (error: Omit<RecentError, 'at'>): void {
    this.#ring.push({ at: new Date().toISOString(), ...error })
    if (this.#ring.length > KEPT) this.#ring.shift()
  }

  /** list is the kept failures, newest first. */
  list (): RecentError[] {
    return [...this.#ring].reverse()
  }
}
