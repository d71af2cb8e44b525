import type { SharedRecord } from './shared-record.js'

/** The most records kept: beyond, the oldest go first (a flood of new affinity keys, say). */
const DEFAULT_MAX_RECORDS = 200_000

interface Kept {
  record: SharedRecord
  /** When the record stops mattering (its lock, cache entry, sign-out or placement has expired). */
  until: number
}

/**
 * RecordHistory keeps the site-wide records that still matter, in the order they were made, so
 * that a process starting late can replay them and know what the others know: a cluster worker
 * replacing one that died, the workers or gateway of a reloaded configuration. Without it, each
 * of those would start with no lockout counts, an empty Basic cache and no sign-outs: a reload
 * would give a password sprayer fresh attempts and bring signed-out sessions back.
 */
export class RecordHistory {
  #kept: Kept[] = []
  readonly #max: number
  /** Index of the first record still kept (the array is compacted now and then, not per record). */
  #start = 0
  #added = 0

  constructor (max = DEFAULT_MAX_RECORDS) {
    this.#max = max
  }

  /** add keeps `record` until `until` (ms since the epoch). */
  add (record: SharedRecord, until: number, now = Date.now()): void {
    if (until <= now) return
    this.#kept.push({ record, until })
    if (this.#kept.length - this.#start > this.#max) this.#start++
    // Expired records go now and then too, not only when a reload reads them: a flood of short-lived
    // ones (Basic cache entries) must not push long-lived ones (lockouts, sign-outs) out of the bound.
    if (++this.#added % 4_096 === 0 || (this.#start > 1024 && this.#start * 2 > this.#kept.length)) this.#compact(now)
  }

  /** records lists what still matters, oldest first. */
  records (now = Date.now()): SharedRecord[] {
    this.#compact(now)
    return this.#kept.map((kept) => kept.record)
  }

  get size (): number {
    return this.#kept.length - this.#start
  }

  #compact (now: number): void {
    this.#kept = this.#kept.slice(this.#start).filter((kept) => kept.until > now)
    this.#start = 0
  }
}
