// Rendezvous (highest random weight) hashing, Thaler & Ravishankar 1998: every key ranks the
// servers by hash(key, server) and takes the highest. Two casgate instances with the same
// servers agree without talking, and removing a server moves only the keys it held.

/** hash32 is FNV-1a over the string's UTF-16 units, finished with murmur3's fmix32 for spread. */
export function hash32 (text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * weightedScore is the weighted rendezvous score -w / ln(u) (Schindelhauer & Schomaker 2005), u the
 * hash mapped into (0, 1): a server of weight 2 is first for twice the keys. With equal weights it
 * orders servers exactly as the plain hash does, so instances without weights still agree.
 */
export function weightedScore (key: string, name: string, weight: number): number {
  if (weight <= 0) return -Infinity
  return -weight / Math.log((hash32(`${key}\u0000${name}`) + 1) / 4294967297)
}

/** rendezvousRank orders items from most to least preferred for `key`, by weight when they have one. */
export function rendezvousRank<T extends { name: string, weight?: number }> (key: string, items: readonly T[]): T[] {
  return items
    .map((item) => ({ item, score: weightedScore(key, item.name, item.weight ?? 1) }))
    .sort((a, b) => b.score - a.score)
    .map(({ item }) => item)
}
