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

/** rendezvousRank orders items from most to least preferred for `key`. */
export function rendezvousRank<T extends { name: string }> (key: string, items: readonly T[]): T[] {
  return items
    .map((item) => ({ item, score: hash32(`${key}\u0000${item.name}`) }))
    .sort((a, b) => b.score - a.score)
    .map(({ item }) => item)
}
