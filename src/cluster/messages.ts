import type { SharedRecord } from '../state/shared-record.js'

// What the primary and its workers tell each other over the cluster's IPC channel (JSON). The
// primary probes health, holds the drain state and serves the admin listener; workers serve
// clients. State that must count site-wide is recorded where it happens and replayed by every
// other worker, the primary relaying it: a lockout failure on one worker counts on all.

/** ToWorker is what the primary sends a worker. */
export type ToWorker =
  | { t: 'health', origin: string, vdir: string, down: boolean }
  | { t: 'drain', name: string, vdir: string | undefined, deadlineMs: number }
  | { t: 'enable', name: string, vdir: string | undefined }
  | { t: 'weight', name: string, weight: number }
  | { t: 'shared', record: SharedRecord }
  /**
   * Every site-wide record in force was sent before this: the worker may open the client port,
   * serving `config`, the text of the configuration file its primary accepted (the file itself
   * may hold a newer one that a reload refused).
   */
  | { t: 'replayed', config: string }
  | { t: 'snapshot', id: number }
  /** Where a user's affinity keys point (and, with clear, forget them: every worker is asked). */
  | { t: 'user-affinity', id: number, user: string, clear: boolean }
  /** Stop accepting and finish what is held (up to maxMs): workers of a newer configuration serve now. */
  | { t: 'retire', maxMs: number }
  | { t: 'stop', graceMs: number }

/** ToPrimary is what a worker sends the primary. */
export type ToPrimary =
  /** Built nothing yet: asks for the site-wide records in force (answered by 'replayed'). */
  | { t: 'starting' }
  | { t: 'ready', port: number }
  | { t: 'failure', origin: string, vdir: string, reason: string }
  | { t: 'shared', record: SharedRecord }
  | { t: 'snapshot', id: number, status: object, affinity: object, metrics: object[] }
  | { t: 'user-affinity', id: number, result: object }

/** isMessage tells casgate's messages from anything else on the channel (cluster's own, say). */
export function isMessage<T extends { t: string }> (value: unknown): value is T {
  return typeof value === 'object' && value !== null && typeof (value as { t?: unknown }).t === 'string'
}
