// The admin listener of a cluster shows one casgate: the primary asks every worker for its
// /status and /affinity and merges them here. Counters add up (connections, requests, budget
// places: each worker holds its share of the configured totals); what every worker holds alike
// (affinity assignments are shared, settings are the same) is taken once; ratios are computed
// again from the merged counts.

/** Merge says how a field's values from several workers combine. */
type Merge = 'sum' | 'max' | 'first'

/** mergeValues merges the same JSON shape from several workers, field by field. */
function mergeValues (values: unknown[], rule: (key: string) => Merge, key = ''): unknown {
  const present = values.filter((value) => value !== undefined && value !== null)
  const first = present[0]
  if (typeof first === 'number') {
    const numbers = present.filter((value): value is number => typeof value === 'number')
    switch (rule(key)) {
      case 'sum': return numbers.reduce((sum, n) => sum + n, 0)
      case 'max': return Math.max(...numbers)
      case 'first': return first
    }
  }
  if (Array.isArray(first)) {
    const arrays = present.filter(Array.isArray) as unknown[][]
    // Lists of records (servers of a pool, vdirs) line up by position: the same configuration.
    if (typeof first[0] === 'object' && first[0] !== null) {
      const length = Math.max(...arrays.map((array) => array.length))
      return Array.from({ length }, (_, i) => mergeValues(arrays.map((array) => array[i]), rule, key))
    }
    return [...new Set(arrays.flat())]
  }
  if (typeof first === 'object' && first !== null) {
    const keys = new Set(present.flatMap((value) => Object.keys(value as object)))
    return Object.fromEntries([...keys].map((k) => [k, mergeValues(present.map((value) => (value as Record<string, unknown>)[k]), rule, k)]))
  }
  return first
}

const SETTINGS = new Set(['idleTtlMs', 'balanceFactor'])
const SHARED = new Set(['entries', 'maxEntries', 'keysHeld'])

/** mergeStatus merges the workers' /status; the caller puts in what the primary knows (health, drains). */
export function mergeStatus (statuses: object[]): Record<string, unknown> {
  // A server's weight is set alike in every worker; everything else counted adds up.
  const merged = mergeValues(statuses, (key) => key === 'weight' ? 'first' : 'sum') as Record<string, unknown>
  // Each worker's last failures are its own: all of them, newest first, not a field-by-field sum.
  const errors = statuses.flatMap((status) => ((status as { recentErrors?: Array<{ at: string }> }).recentErrors ?? []))
  merged.recentErrors = errors.sort((a, b) => b.at.localeCompare(a.at)).slice(0, 20)
  return merged
}

interface AffinityVdir {
  requests: number
  busiestShare: number
  servers: Array<{ requests: number, share: number }>
}

/** mergeAffinity merges the workers' /affinity: requests add up, shared assignments count once. */
export function mergeAffinity (snapshots: object[]): Record<string, unknown> {
  const merged = mergeValues(snapshots, (key) => SETTINGS.has(key) ? 'first' : SHARED.has(key) ? 'max' : 'sum') as Record<string, unknown>
  for (const vdir of (merged.vdirs ?? []) as AffinityVdir[]) {
    for (const server of vdir.servers) server.share = vdir.requests === 0 ? 0 : Math.round(server.requests / vdir.requests * 1000) / 1000
    vdir.busiestShare = vdir.servers.reduce((max, server) => Math.max(max, server.share), 0)
  }
  return merged
}
