import type { VdirAffinity } from '../affinity/vdir-affinity.js'
import type { ResolvedVdir } from '../config/vdir-tables.js'
import type { ServerPool } from '../upstream/server-pool.js'
import type { ResponseHardening } from './response-hardening.js'

/** RoutedVdir is a published vdir bound to its pool and its affinity policy. */
export interface RoutedVdir extends ResolvedVdir {
  serverPool: ServerPool
  /** Picks the backend under the vdir's affinity policy and keeps its tuning data. */
  selector: VdirAffinity
  /** Headers added to its responses (HSTS, CSP mitigation); undefined for none. */
  hardening: ResponseHardening | undefined
}
