import { activeSyncIdentity } from '../affinity/identity.js'

// What lockout reads of a request and of time: the clock (injected by tests), the durations of
// recent refused checks (a locked answer takes as long), and the ActiveSync device a request names.

/** LockoutClock is time as the lockout sees it; tests inject their own. */
export interface LockoutClock {
  /** now is the wall clock in milliseconds. */
  now: () => number
  /** delay resolves after `ms` milliseconds. */
  delay: (ms: number) => Promise<void>
  /** random is in [0, 1). */
  random: () => number
}

/** SYSTEM_CLOCK is real time. */
export const SYSTEM_CLOCK: LockoutClock = {
  now: Date.now,
  delay: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: Math.random
}

const CHECK_SAMPLES = 32

/** CheckTimes keeps the durations of recent refused checks, so that a locked answer takes as long. */
export class CheckTimes {
  readonly #samples: number[] = []
  #next = 0

  record (ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return
    if (this.#samples.length < CHECK_SAMPLES) this.#samples.push(ms)
    else this.#samples[this.#next] = ms
    this.#next = (this.#next + 1) % CHECK_SAMPLES
  }

  /** pick returns one recent duration at random (so locked answers vary as real ones do), or undefined. */
  pick (random: () => number): number | undefined {
    if (this.#samples.length === 0) return undefined
    return this.#samples[Math.min(this.#samples.length - 1, Math.floor(random() * this.#samples.length))]
  }
}

/** activeSyncDevice is the DeviceId of an ActiveSync request (plain or base64 query, MS-ASHTTP 2.2.1.1.1.1), else undefined. */
export function activeSyncDevice (url: string): string | undefined {
  if (!/^\/microsoft-server-activesync(?:[/?]|$)/i.test(url)) return undefined
  const identity = activeSyncIdentity(url)
  if (identity?.startsWith('device:')) return identity.slice(7)
  const mark = url.indexOf('?')
  if (mark === -1) return undefined
  for (const [name, value] of new URLSearchParams(url.slice(mark + 1))) {
    if (name.toLowerCase() === 'deviceid' && value.trim() !== '') return value.trim().toLowerCase()
  }
  return undefined
}
