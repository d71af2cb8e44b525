import type { GatewayConfig } from '../config/load.js'
import type { Affinity } from '../affinity/affinity.js'
import type { PreauthGate } from '../preauth/preauth-gate.js'
import type { DrainControl } from '../upstream/drain.js'
import type { SharedRecord } from '../state/shared-record.js'

/** SharingParts are the stores of one configuration that hold site-wide state. */
export interface SharingParts {
  readonly config: GatewayConfig
  readonly affinity: Affinity
  readonly preauth: PreauthGate | undefined
  readonly drain: Pick<DrainControl, 'applyState' | 'setWeight'>
}

/** shareState sends each record the stores make to `sink` (replaces what was hooked before). */
export function shareState (parts: SharingParts, sink: ((record: SharedRecord) => void) | undefined): void {
  parts.affinity.store.shareAssignment = sink && ((assignment) => sink({ kind: 'assignment', assignment }))
  const preauth = parts.preauth
  if (preauth === undefined) return
  preauth.lockout.share = sink && ((record) => sink({ kind: 'lockout', record }))
  preauth.shareBasicSuccess = sink && ((key) => sink({ kind: 'basic', key }))
  preauth.forms.sessions.shareRevocation = sink && ((key, until) => sink({ kind: 'revocation', key, until }))
}

/** applyShared takes what another process (or the previous configuration) recorded. */
export function applyShared (parts: SharingParts, record: SharedRecord): void {
  switch (record.kind) {
    case 'assignment': return parts.affinity.store.applyShared(record.assignment)
    case 'lockout': return parts.preauth?.lockout.applyShared(record.record)
    case 'basic': return parts.preauth?.applyBasicSuccess(record.key)
    case 'revocation': return parts.preauth?.forms.sessions.applyRevocation(record.key, record.until)
    case 'drain': return parts.drain.applyState(record.backend, record.vdirs, record.deadlineAt)
    case 'weight':
      parts.drain.setWeight(record.backend, record.weight)
  }
}

/**
 * keptUntil says until when a record matters under `config`: as long as the lock, cache entry,
 * sign-out or placement it makes would last.
 */
export function keptUntil (config: GatewayConfig, record: SharedRecord, now = Date.now()): number {
  switch (record.kind) {
    case 'assignment': return now + config.affinity.idleTtlMs
    case 'basic': return now + (config.preauth?.basicCacheTtlMs ?? 0)
    case 'revocation': return record.until
    // Not kept: a reload adopts the drain state whole, and a cluster's primary sends it to late workers.
    case 'drain':
    case 'weight': return now
    case 'lockout': {
      const lockout = config.preauth?.lockout
      if (lockout === undefined) return now
      const counters = Math.max(lockout.windowMs, lockout.maxLockoutMs) * 2
      return record.record.at + (record.record.kind === 'success' ? Math.max(counters, lockout.familiarForMs) : counters)
    }
  }
}
