import { z } from 'zod'
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

const hashed = z.string().min(1).max(64)
const name = z.string().min(1).max(512)
/** Longest a record may reach back or ahead: smart lockout remembers devices for 30 days. */
const REACH_MS = 31 * 24 * 60 * 60_000
/** Clocks of instances may differ this much; a record from further ahead is forged. */
const SKEW_MS = 5 * 60_000
/** A time a record may carry: not before its reach, not after now (with skew) — or, for an end, not past its reach. */
const past = z.number().finite().refine((at) => at > Date.now() - REACH_MS && at < Date.now() + SKEW_MS, 'out of range')
const end = z.number().finite().refine((at) => at < Date.now() + REACH_MS, 'out of range')
/** What a record read from outside (Valkey/Redis) must look like before any store sees it. */
const sharedRecordSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('lockout'),
    record: z.object({
      kind: z.enum(['failure', 'success', 'clear']),
      user: hashed,
      address: hashed.optional(),
      sources: z.object({ device: hashed.optional(), address: hashed.optional() }).optional(),
      at: past
    })
  }),
  z.object({ kind: z.literal('basic'), key: hashed }),
  z.object({ kind: z.literal('revocation'), key: hashed, until: end }),
  z.object({ kind: z.literal('assignment'), assignment: z.object({ owner: name, key: hashed, server: name.nullable() }) }),
  z.object({ kind: z.literal('drain'), backend: name, vdirs: z.array(name).max(64), deadlineAt: end.nullable() }),
  z.object({ kind: z.literal('weight'), backend: name, weight: z.number().int().min(0).max(256) })
])

/**
 * parseSharedRecord checks a record that came from outside this process tree: one another
 * instance wrote, or anything else with access to the store. A malformed one is dropped, so that
 * no store (nor a cluster worker it is relayed to) meets a shape it does not expect.
 */
export function parseSharedRecord (value: unknown): SharedRecord | undefined {
  const parsed = sharedRecordSchema.safeParse(value)
  return parsed.success ? parsed.data as SharedRecord : undefined
}
