import type { LRUCache } from 'lru-cache'
import { boundedCache } from '../util/bounded-cache.js'

/** AssignmentOwner is a vdir's table of keys held per server; the store tells it of every removal. */
export interface AssignmentOwner {
  /** Keys held per server index of the vdir's pool. */
  readonly held: Int32Array
  /** Names the vdir alike in every process of a site with this configuration (host, path, pool). */
  readonly id: string
  readonly pool: { readonly servers: ReadonlyArray<{ readonly origin: string }> }
}

/**
 * SharedAssignment is an assignment as other processes read it: by vdir id and server origin, not
 * by the indexes of this process (which a reload or another instance may order differently).
 * server null: the key was forgotten.
 */
export interface SharedAssignment {
  owner: string
  /** The affinity key's keyed hash. */
  key: string
  server: string | null
}

// lru-cache forgets an idle entry only when it is next read, or in purgeStale(), which walks the
// whole cache: ~240 ms for 500,000 entries, a stall no proxy can afford. So the store is split
// into shards (by the key's first hash byte, which is uniform) of at most ~8,000 entries, and
// one shard is swept per tick: a couple of milliseconds at a time, every entry visited within
// a minute (or the idle TTL, when shorter).
const MAX_SHARDS = 64
const ENTRIES_PER_SHARD_TARGET = 1024

/**
 * AssignmentStore remembers which server each affinity key went to: lru-cache shards bounded
 * by entry count, each entry forgotten after `idleTtlMs` without requests. The key's first
 * character says which vdir it belongs to, the second (a hash byte) picks the shard; the value
 * is the server's index in that vdir's pool (a small integer, so an entry allocates nothing but
 * its key).
 */
export class AssignmentStore {
  readonly maxEntries: number
  readonly idleTtlMs: number
  readonly #owners: AssignmentOwner[] = []
  readonly #prefixes = new Map<string, string>()
  /** Hears each assignment made (or deleted) here — keyed hashes and server origins only — for the other processes of a site. */
  shareAssignment: ((assignment: SharedAssignment) => void) | undefined
  readonly #shards: Array<LRUCache<string, number>>
  readonly #shardMask: number
  #sweep: NodeJS.Timeout | undefined
  #nextSweep = 0

  constructor (options: { maxEntries: number, idleTtlMs: number }) {
    this.maxEntries = options.maxEntries
    this.idleTtlMs = options.idleTtlMs
    let shards = 1
    while (shards < MAX_SHARDS && shards * 2 * ENTRIES_PER_SHARD_TARGET <= options.maxEntries) shards *= 2
    this.#shardMask = shards - 1
    const dispose = (server: number, key: string): void => {
      const owner = this.#owners[key.charCodeAt(0)]
      if (owner) owner.held[server]!--
    }
    this.#shards = Array.from({ length: shards }, () => boundedCache<string, number>(Math.ceil(options.maxEntries / shards), {
      ttl: options.idleTtlMs,
      updateAgeOnGet: true,
      dispose
    }))
  }

  /** register gives a vdir its key prefix (one character). */
  register (owner: AssignmentOwner): string {
    this.#owners.push(owner)
    const prefix = String.fromCharCode(this.#owners.length - 1)
    this.#prefixes.set(owner.id, prefix)
    return prefix
  }

  get size (): number {
    let size = 0
    for (const shard of this.#shards) size += shard.size
    return size
  }

  #shard (key: string): LRUCache<string, number> {
    return this.#shards[key.charCodeAt(1) & this.#shardMask]!
  }

  get (key: string): number | undefined {
    return this.#shard(key).get(key)
  }

  /** set assigns `key` to a server; the owner's count moves with it. */
  set (key: string, server: number): void {
    if (this.#assign(key, server)) this.#share(key, server)
  }

  #share (key: string, server: number | undefined): void {
    if (this.shareAssignment === undefined) return
    const owner = this.#owners[key.charCodeAt(0)]!
    this.shareAssignment({ owner: owner.id, key: key.slice(1), server: server === undefined ? null : owner.pool.servers[server]!.origin })
  }

  /** delete forgets `key`'s server (the next request is placed anew); the owner's count moves with it. */
  delete (key: string): boolean {
    const deleted = this.#shard(key).delete(key)
    if (deleted) this.#share(key, undefined)
    return deleted
  }

  /**
   * applyShared takes an assignment another process made: every process sends the key to one
   * server. One for a vdir or server this configuration does not have is ignored.
   */
  applyShared (assignment: SharedAssignment): void {
    const prefix = this.#prefixes.get(assignment.owner)
    if (prefix === undefined) return
    const key = prefix + assignment.key
    if (assignment.server === null) {
      this.#shard(key).delete(key)
      return
    }
    const server = this.#owners[prefix.charCodeAt(0)]!.pool.servers.findIndex((candidate) => candidate.origin === assignment.server)
    if (server !== -1) this.#assign(key, server)
  }

  #assign (key: string, server: number): boolean {
    const owner = this.#owners[key.charCodeAt(0)]!
    const shard = this.#shard(key)
    const previous = shard.get(key, { updateAgeOnGet: false })
    if (previous === server) return false
    shard.set(key, server)
    owner.held[server]!++
    return true
  }

  /** shared lists every assignment as other processes read it (a reload hands them to the next configuration). */
  * shared (): Generator<SharedAssignment> {
    for (const shard of this.#shards) {
      for (const [key, server] of shard.entries()) {
        const owner = this.#owners[key.charCodeAt(0)]
        const origin = owner?.pool.servers[server]?.origin
        if (owner !== undefined && origin !== undefined) yield { owner: owner.id, key: key.slice(1), server: origin }
      }
    }
  }

  /** purgeStale drops every expired entry now (all shards): for tests and small stores. */
  purgeStale (): void {
    for (const shard of this.#shards) shard.purgeStale()
  }

  /** start sweeps one shard per tick, so that counts of keys held are not inflated by the idle. */
  start (): void {
    const cycleMs = Math.min(60_000, this.idleTtlMs)
    this.#sweep ??= setInterval(() => {
      this.#shards[this.#nextSweep]!.purgeStale()
      this.#nextSweep = (this.#nextSweep + 1) % this.#shards.length
    }, Math.max(10, Math.floor(cycleMs / this.#shards.length))).unref()
  }

  stop (): void {
    clearInterval(this.#sweep)
    this.#sweep = undefined
  }
}
