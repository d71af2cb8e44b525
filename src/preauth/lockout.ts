import type { KeyObject } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { LockoutConfig } from '../config/schema.js'
import { normalizeUser } from '../affinity/identity.js'
import { keyedHash } from '../util/keyed-hash.js'

// Failed logons are counted per user and per client address. A user locked here is locked
// before Active Directory's own threshold is reached, so a password spray through casgate
// cannot lock real accounts in AD; an address locked here stops a spray across many users.
// Both answer exactly like a wrong password (no enumeration), and the provider is not asked.

interface Counter {
  failures: number
  windowStart: number
  lockedUntil: number
  lockouts: number
}

/** LockoutEvent says what a failure caused, for the log. */
export interface LockoutEvent {
  userLockedForMs?: number
  addressLockedForMs?: number
}

export class Lockout {
  readonly #config: LockoutConfig
  readonly #secret: KeyObject
  readonly #counters: LRUCache<string, Counter>

  constructor (config: LockoutConfig, secret: KeyObject) {
    this.#config = config
    this.#secret = secret
    // Bounded: a spray from many addresses cannot grow it without limit.
    this.#counters = new LRUCache<string, Counter>({ max: 100_000, ttl: Math.max(config.windowMs, config.maxLockoutMs) * 2, updateAgeOnGet: false })
  }

  #userKey (user: string): string {
    return keyedHash(this.#secret, `lockout-user\0${normalizeUser(user)}`)
  }

  #addressKey (address: string): string {
    return keyedHash(this.#secret, `lockout-address\0${address}`)
  }

  /** isLocked says whether the user or the address is locked now. */
  isLocked (user: string, address: string | undefined, now = Date.now()): boolean {
    const byUser = this.#counters.get(this.#userKey(user))
    if (byUser !== undefined && byUser.lockedUntil > now) return true
    if (address === undefined) return false
    const byAddress = this.#counters.get(this.#addressKey(address))
    return byAddress !== undefined && byAddress.lockedUntil > now
  }

  /** recordFailure counts one failed logon; returns the lockouts it started. */
  recordFailure (user: string, address: string | undefined, now = Date.now()): LockoutEvent {
    const event: LockoutEvent = {}
    const userLock = this.#count(this.#userKey(user), this.#config.userThreshold, now)
    if (userLock !== undefined) event.userLockedForMs = userLock
    if (address !== undefined) {
      const addressLock = this.#count(this.#addressKey(address), this.#config.addressThreshold, now)
      if (addressLock !== undefined) event.addressLockedForMs = addressLock
    }
    return event
  }

  /** recordSuccess clears the user's failures (the address's keep counting: a spray succeeds now and then). */
  recordSuccess (user: string): void {
    const counter = this.#counters.get(this.#userKey(user))
    if (counter) {
      counter.failures = 0
      counter.lockouts = 0
    }
  }

  #count (key: string, threshold: number, now: number): number | undefined {
    let counter = this.#counters.get(key)
    if (counter === undefined) {
      counter = { failures: 0, windowStart: now, lockedUntil: 0, lockouts: 0 }
      this.#counters.set(key, counter)
    }
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
