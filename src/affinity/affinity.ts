import type { AffinitySettings } from '../config/load.js'
import type { ResolvedVdir } from '../config/vdir-tables.js'
import type { ServerPool } from '../upstream/server-pool.js'
import { AffinityKeys } from './affinity-keys.js'
import { AssignmentStore } from './assignment-store.js'
import { VdirAffinity } from './vdir-affinity.js'

/** Affinity holds the assignment store and the per-vdir policies of one gateway. */
export class Affinity {
  readonly settings: AffinitySettings
  readonly store: AssignmentStore
  readonly keys: AffinityKeys
  readonly vdirs: VdirAffinity[] = []

  constructor (settings: AffinitySettings) {
    this.settings = settings
    this.store = new AssignmentStore(settings)
    this.keys = new AffinityKeys(settings.secret)
  }

  /** forVdir creates the policy object of one routed vdir. */
  forVdir (vdir: ResolvedVdir, pool: ServerPool, host?: string): VdirAffinity {
    const affinity = new VdirAffinity({
      vdir: vdir.path,
      host,
      policy: vdir.affinity,
      followCookie: vdir.affinityCookie,
      pool,
      store: this.store,
      keys: this.keys,
      balanceFactor: this.settings.balanceFactor,
      cookieName: this.settings.cookieName
    })
    this.vdirs.push(affinity)
    return affinity
  }

  /** user lists where a user's keys send them, per vdir with the authorization policy; `clear` forgets them. */
  user (user: string, clear: boolean): { user: string, cleared: boolean, vdirs: object[] } {
    const vdirs = this.vdirs.flatMap((vdir) => vdir.userEntry(user, clear) ?? [])
    return { user, cleared: clear, vdirs }
  }

  start (): void {
    this.store.start()
  }

  stop (): void {
    this.store.stop()
  }

  /**
   * snapshot is the tuning data of GET /affinity. Keys held include idle entries the sweep has
   * not reached yet (at most a minute past their expiry): a full purge here would stall traffic.
   */
  snapshot (): object {
    return {
      entries: this.store.size,
      maxEntries: this.store.maxEntries,
      idleTtlMs: this.store.idleTtlMs,
      balanceFactor: this.settings.balanceFactor,
      secret: this.settings.secretSource,
      vdirs: this.vdirs.map((vdir) => vdir.snapshot())
    }
  }
}
