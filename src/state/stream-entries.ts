import type { Redis } from 'ioredis'
import type { QueuedRecord } from './record-queue.js'
import { bounded } from './redis-client.js'

// The format of the link's stream entries, written and read: fields i (instance), b (the sending
// link's boot id), s (its sequence number), r (the record's JSON).

/** Boots remembered for de-duplication; the first seen are forgotten first (long gone, most likely). */
const MAX_SENDERS = 10_000

/** StreamEntry is one record as the link writes it to the stream: who sent it, its number, its JSON. */
export interface StreamEntry {
  /** The sending link's boot id (one per RedisLink object). */
  boot: string
  /** The sender's sequence number of the record. */
  seq: number
  json: string
}

/** parseStreamEntry reads an entry's fields (name, value, name, value…); undefined when one is missing. */
export function parseStreamEntry (fields: readonly string[]): StreamEntry | undefined {
  let boot: string | undefined
  let seq = Number.NaN
  let json: string | undefined
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const value = fields[i + 1]!
    switch (fields[i]) {
      case 'b': boot = value; break
      case 's': seq = Number(value); break
      case 'r': json = value; break
    }
  }
  return boot === undefined || json === undefined || !Number.isSafeInteger(seq) ? undefined : { boot, seq, json }
}

/**
 * SenderSequences remembers the last sequence number read from each sender: a batch sent again
 * after a timeout that had in fact landed is read twice, and only the first copy counts.
 */
export class SenderSequences {
  readonly #last = new Map<string, number>()

  /** fresh says whether the entry is new (and remembers it). */
  fresh (entry: StreamEntry): boolean {
    const seen = this.#last.get(entry.boot)
    if (seen !== undefined && entry.seq <= seen) return false
    this.#last.set(entry.boot, entry.seq)
    if (seen === undefined && this.#last.size > MAX_SENDERS) this.#last.delete(this.#last.keys().next().value!)
    return true
  }
}

/** Where and how a batch is written. */
export interface BatchTarget {
  streamKey: string
  /** The hash of states kept outright (a record with `state`). */
  stateHashKey: string
  instance: string
  boot: string
  /** Entries older than this ID go (MINID trimming, approximate). */
  minId: string
  /** Set when the stream's length cap is to be enforced with this batch. */
  maxLength: number | undefined
  timeoutMs: number
}

/**
 * writeBatch adds a batch of records to the stream: one XADD, or one MULTI/EXEC of several, so
 * that it lands whole or not at all (a failed or timed-out batch throws and is sent again).
 */
export async function writeBatch (client: Redis, batch: readonly QueuedRecord[], target: BatchTarget): Promise<void> {
  const fields = (entry: QueuedRecord): string[] => ['i', target.instance, 'b', target.boot, 's', String(entry.seq), 'r', entry.json]
  if (batch.length === 1 && target.maxLength === undefined && batch[0]!.state === undefined) {
    // One XADD is atomic by itself: a trickle of records costs one command each.
    await bounded(client.xadd(target.streamKey, 'MINID', '~', target.minId, '*', ...fields(batch[0]!)), target.timeoutMs, 'XADD')
    return
  }
  const multi = client.multi()
  for (const entry of batch) {
    multi.xadd(target.streamKey, 'MINID', '~', target.minId, '*', ...fields(entry))
    if (entry.state !== undefined) multi.hset(target.stateHashKey, entry.state, entry.json)
  }
  if (target.maxLength !== undefined) multi.xtrim(target.streamKey, 'MAXLEN', '~', target.maxLength)
  const results = await bounded(multi.exec(), target.timeoutMs, 'XADD')
  if (results === null) throw new Error('XADD batch aborted')
  const failed = results.find(([err]) => err !== null)
  if (failed) throw failed[0] instanceof Error ? failed[0] : new Error(String(failed[0]))
}
