/** QueuedRecord is one record waiting for Redis, serialised when it was published. */
export interface QueuedRecord {
  /** This link's sequence number: readers drop a second copy of a batch sent again. */
  seq: number
  json: string
  /** Set for a record that sets a state outright (RedisLinkOptions.stateKey). */
  state: string | undefined
}

/**
 * RecordQueue holds what waits for Redis, in order, bounded: past `max` the oldest records are
 * dropped and counted (a long outage must not grow memory without limit).
 */
export class RecordQueue {
  #items: QueuedRecord[] = []
  #head = 0
  #seq = 0
  readonly #max: number
  /** Records dropped since start because the queue was full (or the link closed). */
  dropped = 0

  constructor (max: number) {
    this.#max = max
  }

  get size (): number {
    return this.#items.length - this.#head
  }

  push (json: string, state: string | undefined): void {
    this.#items.push({ seq: ++this.#seq, json, state })
    if (this.size > this.#max) {
      this.#head++
      this.dropped++
      if (this.#head > 1_024 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head)
        this.#head = 0
      }
    }
  }

  /** peek lists up to `count` records from the oldest, without taking them. */
  peek (count: number): QueuedRecord[] {
    return this.#items.slice(this.#head, this.#head + count)
  }

  /** sent takes the records up to sequence number `last` (those dropped meanwhile are gone already). */
  sent (last: number): void {
    while (this.size > 0 && this.#items[this.#head]!.seq <= last) this.#head++
    if (this.#head === this.#items.length) {
      this.#items = []
      this.#head = 0
    }
  }
}
