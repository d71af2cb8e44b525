import { weightedScore } from '../upstream/rendezvous.js'

// Rendezvous (highest random weight) hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
// "Consistent Hashing with Bounded Loads", 2016). Pure rendezvous hashing agrees across
// instances and moves only a removed server's keys, but with few keys it is lumpy: 60 users
// on 3 servers exceed a 1.5× spread four times in ten. The bound caps every server at
// `factor` × the average, so a key whose first choice is full takes its next choice. As keys
// grow in number the first choice is full less often (11% of keys at 60, 0.4% at 3,000 with
// factor 1.1), which is where agreement between instances matters.

/** PlacementCandidate is a server that may take a new key, with its index in the pool. */
export interface PlacementCandidate {
  readonly name: string
  readonly index: number
  /** Its share of new keys (default 1); 0 takes none. */
  readonly weight?: number
}

/** Placement is where a new key goes, and whether that was its first choice. */
export interface Placement {
  index: number
  firstChoice: boolean
}

/**
 * placeKey picks the server for a new key among `candidates` (the healthy ones): the highest
 * rendezvous score whose keys held stay under ceil(factor × (keys + 1) / servers).
 */
export function placeKey (key: string, candidates: readonly PlacementCandidate[], held: Int32Array, factor: number): Placement | undefined {
  let total = 0
  let weights = 0
  for (const candidate of candidates) {
    total += held[candidate.index]!
    weights += candidate.weight ?? 1
  }
  if (weights <= 0) return undefined
  let best: PlacementCandidate | undefined
  let bestScore = -Infinity
  let top: PlacementCandidate | undefined
  let topScore = -Infinity
  for (const candidate of candidates) {
    const weight = candidate.weight ?? 1
    if (weight <= 0) continue
    // A server's cap is its weight's part of the keys, times the factor.
    const cap = Math.ceil(factor * (total + 1) * weight / weights)
    const score = weightedScore(key, candidate.name, weight)
    if (score > topScore) {
      top = candidate
      topScore = score
    }
    if (held[candidate.index]! < cap && score > bestScore) {
      best = candidate
      bestScore = score
    }
  }
  // Some server is always under the cap (it is at least the average), but guard anyway.
  const chosen = best ?? top!
  return { index: chosen.index, firstChoice: chosen === top }
}
