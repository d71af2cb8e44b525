import { LRUCache } from 'lru-cache'

/**
 * boundedCache is an lru-cache holding at most `entries` keys that allocates as it fills. With
 * `max`, lru-cache allocates its index arrays for every entry up front (2.8 MB per 100,000 here:
 * 14 MB at start for the affinity store's default, ~30 MB for all of casgate's tables together,
 * on a gateway that may never see that many keys); bounding by `maxSize` at one unit per entry
 * keeps the same bound and eviction order and grows the arrays with use.
 */
export function boundedCache<K extends {}, V extends {}> (entries: number, options: Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: entries, sizeCalculation: () => 1 } as LRUCache.Options<K, V, unknown>)
}
