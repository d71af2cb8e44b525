import type { SharedAssignment } from '../affinity/assignment-store.js'
import type { LockoutRecord } from '../preauth/lockout.js'

// What must count site-wide is recorded where it happens, kept in memory there (the request path
// never waits on another process), and replayed by every other process of the site: the workers of
// a cluster (the primary relays), a gateway of a reloaded configuration, other instances sharing a
// Valkey/Redis store. Records carry keyed hashes, never a user name, password, address or cookie.

/** SharedRecord is one piece of site-wide state a process recorded. */
export type SharedRecord =
  | { kind: 'lockout', record: LockoutRecord }
  /** A Basic logon the cache keeps: its keyed hash. */
  | { kind: 'basic', key: string }
  /** A forms sign-out: the session id's keyed hash and when it would have expired. */
  | { kind: 'revocation', key: string, until: number }
  /** An affinity key's server, by vdir id and server origin. */
  | { kind: 'assignment', assignment: SharedAssignment }
  /** A server's maintenance state (vdirs drained, '*' for all; none: enabled) and its deadline. */
  | { kind: 'drain', backend: string, vdirs: string[], deadlineAt: number | null }
  /** A server's share of new work. */
  | { kind: 'weight', backend: string, weight: number }

/**
 * stateKey names what a record sets outright (a drain, a weight): its last value is all that
 * matters, and a store keeps it apart from the stream, for processes that start much later.
 */
export function stateKey (record: SharedRecord): string | undefined {
  return record.kind === 'drain' || record.kind === 'weight' ? `${record.kind}:${record.backend}` : undefined
}
