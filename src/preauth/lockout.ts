import type { KeyObject } from 'node:crypto'
import type { LRUCache } from 'lru-cache'
import { FAMILIAR_FOR_MS, FAMILIAR_MAX_ENTRIES, type LockoutConfig } from '../config/schema.js'
import { normalizeUser } from '../auth/user-name.js'
import { addressKey } from '../util/address-key.js'
import { CheckTimes, SYSTEM_CLOCK, type LockoutClock } from './lockout-sources.js'
import { keyedHash } from '../util/keyed-hash.js'
import { boundedCache } from '../util/bounded-cache.js'

// Smart lockout, after Entra ID's ("Protect user accounts from attacks with Microsoft Entra smart
// lockout", learn.microsoft.com): a lockout must stop a guesser without handing them a weapon
// against the user. A source (client address, ActiveSync DeviceId) from which the user signed in
// successfully within familiarForMs is FAMILIAR:
// - failures from unfamiliar sources count per user and lock the user for unfamiliar sources only,
//   and count per address, which locks the address for the users it is not familiar to (spraying);
// - failures from a familiar source count for (user, that source) alone: a phone still holding the
//   old password after a change locks itself, not the user's other devices.
// A user locked here is locked before Active Directory's own threshold is reached, so guessing
// through casgate cannot lock the account in AD. Refusals look exactly like a wrong password and
// take as long (CheckTimes, lockout-sources.ts), and the provider is not asked.
// Every key is a keyed hash: no user name, address or device ID is held in these tables.

interface Counter {
  failures: number
  windowStart: number
  lockedUntil: number
  lockouts: number
}

/** Per user: failures from unfamiliar sources, and a counter per familiar source that failed. */
interface UserCounter extends Counter {
  sources: Map<string, Counter> | undefined
}

/** LockoutEvent says what a failure caused, for the log. */
export interface LockoutEvent {
  /** The user is now locked for unfamiliar sources, this long. */
  userLockedForMs?: number
  /** The familiar source the failure came from is now locked for this user, this long. */
  sourceLockedForMs?: number
  /** The address is now locked for users it is not familiar to, this long. */
  addressLockedForMs?: number
  /** Set when the failure came from a familiar source: which kind. */
  familiar?: Familiar
}

/** Familiar is how a source is known to a user: by its ActiveSync device or by its address. */
export type Familiar = 'device' | 'address'

/** LockReason says why a logon is refused unasked: the user (unfamiliar sources), this familiar source, or the address. */
export type LockReason = 'user' | 'source' | 'address'

/** LockoutSettings is the lockout block; the smart-lockout fields default as in the schema. */
export type LockoutSettings = Omit<LockoutConfig, 'familiarForMs' | 'familiarMaxEntries'> & Partial<LockoutConfig>

/** Before any check was timed, a locked answer waits about this long (a typical LDAP bind or scrypt check). */
const FALLBACK_CHECK_MS = 150
const MAX_COUNTERS = 100_000

/**
 * LockoutRecord is one failure or success as counted, for the other processes of a site (cluster
 * workers, other instances sharing a store), which count it too: a sprayer meets one threshold.
 * It carries the keyed hashes of the counters it moves, never a user name, address or device ID.
 */
export interface LockoutRecord {
  kind: 'failure' | 'success' | 'clear'
  user: string
  address?: string | undefined
  /** The familiar-table keys of (user, device) and (user, address). */
  sources?: { device?: string, address?: string } | undefined
  at: number
}

/** clearRecord is the record of an admin clearing a user's failed logons, for processes that keep no Lockout (a cluster's primary). */
export function clearRecord (secret: KeyObject, user: string, at: number): LockoutRecord {
  return { kind: 'clear', user: userKeyOf(secret, normalizeUser(user)), at }
}

function userKeyOf (secret: KeyObject, user: string): string {
  return keyedHash(secret, `lockout-user\0${user}`)
}

/** Lockout counts failed logons and says who is locked out of where. */
export class Lockout {
  /** Hears every failure and success recorded here (not those applied from elsewhere). */
  share: ((record: LockoutRecord) => void) | undefined
  readonly clock: LockoutClock
  /** Durations of refused provider checks and of Exchange's 401s, for locked answers. */
  readonly checkTimes = { provider: new CheckTimes(), exchange: new CheckTimes() }
  readonly #config: LockoutConfig
  readonly #secret: KeyObject
  readonly #users: LRUCache<string, UserCounter>
  readonly #addresses: LRUCache<string, Counter>
  /** (user, source) → time of the last successful logon from it. */
  readonly #familiar: LRUCache<string, number> | undefined
  /** The check each user's next check waits for (entries only while checks run). */
  readonly #turns = new Map<string, Promise<void>>()

  constructor (config: LockoutSettings, secret: KeyObject, clock: LockoutClock = SYSTEM_CLOCK) {
    this.#config = { familiarForMs: FAMILIAR_FOR_MS, familiarMaxEntries: FAMILIAR_MAX_ENTRIES, ...config }
    this.#secret = secret
    this.clock = clock
    // Bounded: a spray from many addresses cannot grow them without limit. Users and addresses
    // are kept apart, so churning addresses cannot push a user's lock out.
    const ttl = Math.max(this.#config.windowMs, this.#config.maxLockoutMs) * 2
    this.#users = boundedCache(MAX_COUNTERS, { ttl, updateAgeOnGet: false })
    this.#addresses = boundedCache(MAX_COUNTERS, { ttl, updateAgeOnGet: false })
    if (this.#config.familiarForMs > 0) this.#familiar = boundedCache(this.#config.familiarMaxEntries, { ttl: this.#config.familiarForMs })
  }

  #userKey (user: string): string {
    return userKeyOf(this.#secret, user)
  }

  #addressKey (address: string): string {
    return keyedHash(this.#secret, `lockout-address\0${address}`)
  }

  /** The keys of (user, device) and (user, address) in the familiar table (the user length-prefixed: no ambiguity). */
  #sourceKeys (user: string, address: string | undefined, device: string | undefined): { device?: string, address?: string } {
    if (this.#familiar === undefined) return {}
    const prefix = `${user.length}:${user}\0`
    return {
      ...(device !== undefined ? { device: keyedHash(this.#secret, `familiar-device\0${prefix}${device}`) } : {}),
      ...(address !== undefined ? { address: keyedHash(this.#secret, `familiar-address\0${prefix}${address}`) } : {})
    }
  }

  /** The familiar source a logon comes from, the device first (it survives a new NAT address). */
  #familiarSource (keys: { device?: string, address?: string }, now: number): { kind: Familiar, key: string } | undefined {
    for (const kind of ['device', 'address'] as const) {
      const key = keys[kind]
      const seen = key === undefined ? undefined : this.#familiar!.get(key)
      if (key !== undefined && seen !== undefined && now - seen <= this.#config.familiarForMs) return { kind, key }
    }
    return undefined
  }

  /** lockedFor says why a logon of `user` from this address (and ActiveSync device) is refused unasked, or undefined. */
  lockedFor (user: string, address: string | undefined, now = this.clock.now(), device?: string): LockReason | undefined {
    const name = normalizeUser(user)
    const at = address === undefined ? undefined : addressKey(address)
    const byUser = this.#users.get(this.#userKey(name))
    const byAddress = at === undefined ? undefined : this.#addresses.get(this.#addressKey(at))
    const userLocked = byUser !== undefined && byUser.lockedUntil > now
    const addressLocked = byAddress !== undefined && byAddress.lockedUntil > now
    const sourceLocked = byUser?.sources !== undefined && [...byUser.sources.values()].some((counter) => counter.lockedUntil > now)
    // The common case costs two hashes, as before smart lockout: nothing is locked.
    if (!userLocked && !addressLocked && !sourceLocked) return undefined
    const familiar = this.#familiarSource(this.#sourceKeys(name, at, device), now)
    if (familiar === undefined) return userLocked ? 'user' : addressLocked ? 'address' : undefined
    const counter = byUser?.sources?.get(familiar.key)
    return counter !== undefined && counter.lockedUntil > now ? 'source' : undefined
  }

  /** isLocked says whether a logon of `user` from this address (and device) is refused unasked. */
  isLocked (user: string, address: string | undefined, now = this.clock.now(), device?: string): boolean {
    return this.lockedFor(user, address, now, device) !== undefined
  }

  /** #record is a logon's counters, by keyed hash. */
  #record (kind: LockoutRecord['kind'], user: string, address: string | undefined, now: number, device: string | undefined): LockoutRecord {
    const name = normalizeUser(user)
    const at = address === undefined ? undefined : addressKey(address)
    return { kind, user: this.#userKey(name), address: at === undefined ? undefined : this.#addressKey(at), sources: this.#sourceKeys(name, at, device), at: now }
  }

  /** recordFailure counts one failed logon where it belongs; returns the lockouts it started. */
  recordFailure (user: string, address: string | undefined, now = this.clock.now(), device?: string): LockoutEvent {
    const record = this.#record('failure', user, address, now, device)
    this.share?.(record)
    return this.#recordFailure(record)
  }

  /** applyShared counts a failure or success another process recorded, or clears as it did. */
  applyShared (record: LockoutRecord): void {
    if (record.kind === 'failure') this.#recordFailure(record)
    else if (record.kind === 'success') this.#recordSuccess(record)
    else this.#users.delete(record.user)
  }

  /** clear forgets a user's failed logons, from every source (an admin's decision, on the admin listener). */
  clear (user: string): void {
    const record = this.#record('clear', user, undefined, this.clock.now(), undefined)
    this.share?.(record)
    this.#users.delete(record.user)
  }

  #recordFailure (record: LockoutRecord): LockoutEvent {
    const now = record.at
    const byUser = this.#users.get(record.user) ?? { ...newCounter(now), sources: undefined }
    // Set again on every failure: the entry's time to live starts over, so it outlives its lock.
    this.#users.set(record.user, byUser)
    const familiar = this.#familiarSource(record.sources ?? {}, now)
    if (familiar !== undefined) {
      byUser.sources ??= new Map()
      let counter = byUser.sources.get(familiar.key)
      if (counter === undefined) byUser.sources.set(familiar.key, counter = newCounter(now))
      const locked = this.#count(counter, this.#config.userThreshold, now)
      return { familiar: familiar.kind, ...(locked !== undefined ? { sourceLockedForMs: locked } : {}) }
    }
    const event: LockoutEvent = {}
    const userLock = this.#count(byUser, this.#config.userThreshold, now)
    if (userLock !== undefined) event.userLockedForMs = userLock
    if (record.address !== undefined) {
      const byAddress = this.#addresses.get(record.address) ?? newCounter(now)
      this.#addresses.set(record.address, byAddress)
      const addressLock = this.#count(byAddress, this.#config.addressThreshold, now)
      if (addressLock !== undefined) event.addressLockedForMs = addressLock
    }
    return event
  }

  /**
   * recordSuccess makes the address and device familiar to the user and clears the failures of the
   * source it came from. A success from a familiar source leaves the count of unfamiliar ones alone:
   * the user's phone signing in does not give a guesser elsewhere a fresh start. The address's count
   * is never cleared (a spray succeeds now and then).
   */
  recordSuccess (user: string, address?: string, now = this.clock.now(), device?: string): void {
    const record = this.#record('success', user, address, now, device)
    this.share?.(record)
    this.#recordSuccess(record)
  }

  #recordSuccess (record: LockoutRecord): void {
    const keys = record.sources ?? {}
    const familiar = this.#familiarSource(keys, record.at)
    const byUser = this.#users.get(record.user)
    if (byUser !== undefined) {
      for (const key of [keys.device, keys.address]) if (key !== undefined) byUser.sources?.delete(key)
      if (familiar === undefined) {
        byUser.failures = 0
        byUser.lockouts = 0
      }
    }
    for (const key of [keys.device, keys.address]) if (key !== undefined) this.#familiar!.set(key, record.at)
  }

  /**
   * inTurn runs a logon check of `user` after those of the user already running. Parallel
   * guesses then meet the lock as soon as it lands, instead of all reaching the directory
   * before the first answer comes back.
   */
  inTurn<T> (user: string, check: () => Promise<T>): Promise<T> {
    const key = this.#userKey(normalizeUser(user))
    const turn = (this.#turns.get(key) ?? Promise.resolve()).then(check)
    const done = turn.then(() => undefined, () => undefined)
    this.#turns.set(key, done)
    done.then(() => { if (this.#turns.get(key) === done) this.#turns.delete(key) }, () => undefined)
    return turn
  }

  /** lockedDelayMs is how long a locked answer waits: a recent refusal's duration, ±5 %. */
  lockedDelayMs (kind: 'provider' | 'exchange'): number {
    const other = kind === 'provider' ? 'exchange' : 'provider'
    const sample = this.checkTimes[kind].pick(this.clock.random) ?? this.checkTimes[other].pick(this.clock.random) ?? FALLBACK_CHECK_MS
    return sample * (0.95 + 0.1 * this.clock.random())
  }

  /** equalise waits as long as a real refusal of `kind` takes, so a locked answer gives no timing signal. */
  equalise (kind: 'provider' | 'exchange'): Promise<void> {
    return this.clock.delay(this.lockedDelayMs(kind))
  }

  #count (counter: Counter, threshold: number, now: number): number | undefined {
    if (now - counter.windowStart > this.#config.windowMs) {
      counter.failures = 0
      counter.windowStart = now
    }
    counter.failures++
    if (counter.failures < threshold) return undefined
    // Back-off: every further lockout in a row doubles, up to the maximum.
    const duration = Math.min(this.#config.maxLockoutMs, this.#config.lockoutMs * 2 ** counter.lockouts)
    counter.lockouts++
    counter.failures = 0
    counter.windowStart = now
    counter.lockedUntil = now + duration
    return duration
  }
}

function newCounter (now: number): Counter {
  return { failures: 0, windowStart: now, lockedUntil: 0, lockouts: 0 }
}
