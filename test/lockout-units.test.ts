import { createSecretKey } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { describe, expect, it } from 'vitest'
import { normalizeUser } from '../src/auth/user-name.js'
import { createLogger } from '../src/observe/logger.js'
import type { CredentialProvider, CheckResult } from '../src/preauth/credential-provider.js'
import { Lockout } from '../src/preauth/lockout.js'
import { activeSyncDevice, type LockoutClock } from '../src/preauth/lockout-sources.js'
import { addressKey } from '../src/util/address-key.js'
import type { GateAnswer } from '../src/preauth/gate-outcome.js'
import { PreauthGate } from '../src/preauth/preauth-gate.js'
import { LogCapture, labConfig } from './helpers/lab.js'
import { writeFiles, tempDir } from './helpers/tmp.js'
import { hashPassword } from '../src/auth/password-hash.js'

const secret = createSecretKey(Buffer.alloc(32, 7))
const MINUTE = 60_000
const DAY = 24 * 60 * MINUTE
const config = { userThreshold: 5, addressThreshold: 20, windowMs: 15 * MINUTE, lockoutMs: 15 * MINUTE, maxLockoutMs: 4 * 60 * MINUTE, familiarForMs: 30 * DAY, familiarMaxEntries: 1_000 }
const PHONE = '198.51.100.7'
const SPRAYER = '203.0.113.66'
const NEW_NAT = '192.0.2.200'

/** TestClock is time the test moves: delays are recorded and pass at once. */
class TestClock implements LockoutClock {
  t = 1_700_000_000_000
  readonly delays: number[] = []
  now = (): number => this.t
  delay = async (ms: number): Promise<void> => {
    this.delays.push(ms)
    this.t += ms
  }

  random = (): number => 0.5 // jitter factor exactly 1
}

function failTimes (lockout: Lockout, times: number, user: string, address: string | undefined, now: number, device?: string): Array<ReturnType<Lockout['recordFailure']>> {
  return Array.from({ length: times }, () => lockout.recordFailure(user, address, now, device))
}

describe('smart lockout: familiar sources keep working', () => {
  it('a sprayer\'s five wrong passwords lock the user for unfamiliar sources only: the phone\'s address, and its device behind a new NAT address, keep working', () => {
    const lockout = new Lockout(config, secret)
    const now = 1_000_000
    lockout.recordSuccess('jdoe', PHONE, now, 'appl-f17d')
    const events = failTimes(lockout, 5, 'CONTOSO\\JDoe', SPRAYER, now + 1)
    expect(events.slice(0, 4)).toEqual([{}, {}, {}, {}])
    expect(events[4]).toEqual({ userLockedForMs: 15 * MINUTE })
    expect(lockout.lockedFor('jdoe', SPRAYER, now + 2)).toBe('user')
    expect(lockout.lockedFor('jdoe@contoso.com', '203.0.113.67', now + 2)).toBe('user') // any unfamiliar address
    expect(lockout.lockedFor('jdoe', PHONE, now + 2)).toBeUndefined()
    expect(lockout.lockedFor('jdoe', NEW_NAT, now + 2, 'appl-f17d')).toBeUndefined()
    // A device ID the user never signed in with is no key: a sprayer inventing one stays locked.
    expect(lockout.lockedFor('jdoe', SPRAYER, now + 2, 'invented')).toBe('user')
    expect(lockout.lockedFor('jdoe', NEW_NAT, now + 2)).toBe('user')
    // Other users from the sprayer's address are not locked by five failures.
    expect(lockout.lockedFor('asmith', SPRAYER, now + 2)).toBeUndefined()
  })

  it('a phone with an old password locks only itself: the user\'s other devices, its address for others and new places still work', () => {
    const lockout = new Lockout(config, secret)
    let now = 1_000_000
    lockout.recordSuccess('jdoe', PHONE, now, 'old-phone')
    lockout.recordSuccess('jdoe', PHONE, now, 'tablet')
    const events = failTimes(lockout, 5, 'jdoe', PHONE, now, 'old-phone')
    expect(events[0]).toEqual({ familiar: 'device' })
    expect(events[4]).toEqual({ familiar: 'device', sourceLockedForMs: 15 * MINUTE })
    expect(lockout.lockedFor('jdoe', PHONE, now, 'old-phone')).toBe('source')
    expect(lockout.lockedFor('jdoe', NEW_NAT, now, 'old-phone')).toBe('source') // wherever it goes
    expect(lockout.lockedFor('jdoe', PHONE, now, 'tablet')).toBeUndefined()
    expect(lockout.lockedFor('jdoe', PHONE, now)).toBeUndefined() // the laptop's browser, same address
    expect(lockout.lockedFor('jdoe', NEW_NAT, now)).toBeUndefined() // the unfamiliar count was not touched
    // Back-off: it keeps failing, each lockout doubles.
    now += 15 * MINUTE
    expect(failTimes(lockout, 5, 'jdoe', PHONE, now, 'old-phone')[4]).toEqual({ familiar: 'device', sourceLockedForMs: 30 * MINUTE })
    // The new password on it: that source starts over.
    now += 30 * MINUTE
    lockout.recordSuccess('jdoe', PHONE, now, 'old-phone')
    expect(failTimes(lockout, 5, 'jdoe', PHONE, now, 'old-phone')[4]).toEqual({ familiar: 'device', sourceLockedForMs: 15 * MINUTE })
  })

  it('twenty failures from one carrier NAT address lock it for users unfamiliar there, not for those who signed in from it', () => {
    const lockout = new Lockout(config, secret)
    const now = 1_000_000
    lockout.recordSuccess('jdoe', NEW_NAT, now)
    const events = Array.from({ length: 20 }, (_, i) => lockout.recordFailure(`user${i}`, NEW_NAT, now))
    expect(events.slice(0, 19).every((event) => event.addressLockedForMs === undefined)).toBe(true)
    expect(events[19]).toEqual({ addressLockedForMs: 15 * MINUTE })
    expect(lockout.lockedFor('asmith', NEW_NAT, now)).toBe('address')
    expect(lockout.lockedFor('jdoe', NEW_NAT, now)).toBeUndefined()
    expect(lockout.lockedFor('asmith', PHONE, now)).toBeUndefined()
    // A familiar user's own failures there count for (user, address): five lock jdoe there only.
    expect(failTimes(lockout, 5, 'jdoe', NEW_NAT, now)[4]).toEqual({ familiar: 'address', sourceLockedForMs: 15 * MINUTE })
    expect(lockout.lockedFor('jdoe', NEW_NAT, now)).toBe('source')
    expect(lockout.lockedFor('jdoe', PHONE, now)).toBeUndefined()
  })

  it('a success from a familiar source does not restart a guesser\'s count; one from an unfamiliar source does', () => {
    const lockout = new Lockout(config, secret)
    const now = 1_000_000
    lockout.recordSuccess('jdoe', PHONE, now)
    failTimes(lockout, 4, 'jdoe', SPRAYER, now)
    lockout.recordSuccess('jdoe', PHONE, now) // the phone syncs
    expect(lockout.recordFailure('jdoe', SPRAYER, now)).toEqual({ userLockedForMs: 15 * MINUTE })
    const fresh = new Lockout(config, secret)
    failTimes(fresh, 4, 'jdoe', SPRAYER, now)
    fresh.recordSuccess('jdoe', '192.0.2.1', now) // the user, from a hotel: not locked yet, the password is right
    expect(fresh.recordFailure('jdoe', SPRAYER, now)).toEqual({})
  })

  it('forgets a source familiarForMs after its last success; familiarForMs 0 is the plain per-user lockout', () => {
    const lockout = new Lockout(config, secret)
    let now = 1_000_000
    lockout.recordSuccess('jdoe', PHONE, now)
    now += 30 * DAY + 1
    failTimes(lockout, 5, 'jdoe', SPRAYER, now)
    expect(lockout.lockedFor('jdoe', PHONE, now)).toBe('user')

    const plain = new Lockout({ ...config, familiarForMs: 0 }, secret)
    plain.recordSuccess('jdoe', PHONE, now, 'phone')
    expect(failTimes(plain, 5, 'jdoe', SPRAYER, now)[4]).toEqual({ userLockedForMs: 15 * MINUTE })
    expect(plain.lockedFor('jdoe', PHONE, now, 'phone')).toBe('user')
  })

  it('counts IPv6 by its /64 and IPv4-mapped addresses as IPv4; reads ActiveSync device IDs in both query forms', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:DB8:0001:0002:ffff:1:2:3')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64')
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64')
    expect(addressKey('::ffff:198.51.100.7')).toBe('198.51.100.7')
    expect(addressKey('198.51.100.7')).toBe('198.51.100.7')
    const lockout = new Lockout(config, secret)
    const events = Array.from({ length: 20 }, (_, i) => lockout.recordFailure(`user${i}`, `2001:db8:1:2::${(i + 1).toString(16)}`, 0))
    expect(events[19]).toEqual({ addressLockedForMs: 15 * MINUTE })
    expect(lockout.lockedFor('asmith', '2001:db8:1:2:ffff::9', 0)).toBe('address')
    expect(lockout.lockedFor('asmith', '2001:db8:1:3::9', 0)).toBeUndefined()

    expect(activeSyncDevice('/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=ApplF17D&DeviceType=iPhone')).toBe('applf17d')
    expect(activeSyncDevice('/microsoft-server-activesync?deviceid=X1')).toBe('x1')
    // Base64 query (MS-ASHTTP 2.2.1.1.1.1): version, command, locale, then the length-prefixed device ID.
    const encoded = Buffer.from([141, 0, 9, 4, 3, 0xab, 0xcd, 0xef, 0]).toString('base64')
    expect(activeSyncDevice(`/Microsoft-Server-ActiveSync?${encoded}`)).toBe('abcdef')
    expect(activeSyncDevice('/EWS/Exchange.asmx?DeviceId=X1')).toBeUndefined()
    expect(activeSyncDevice('/Microsoft-Server-ActiveSync?Cmd=Ping&User=jdoe')).toBeUndefined()
  })
})

// --- The gate: timing of locked answers, Exchange's 401s, logs ----------------------------------

const PASSWORDS: Record<string, string> = { jdoe: 'Correct-Horse-1', asmith: 'Battery-Staple-2' }
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

/** A directory whose answers take known (simulated) time on the test clock. */
class TimedDirectory implements CredentialProvider {
  asked = 0
  constructor (readonly clock: TestClock, readonly latenciesMs: number[]) {}
  async check (user: string, password: string): Promise<CheckResult> {
    this.clock.t += this.latenciesMs[this.asked++ % this.latenciesMs.length]!
    return PASSWORDS[normalizeUser(user)] === password ? 'valid' : 'invalid'
  }
}

async function labGate (clock: TestClock, provider: CredentialProvider): Promise<{ gate: PreauthGate, logs: LogCapture }> {
  const dir = tempDir()
  const lines = await Promise.all(Object.entries(PASSWORDS).map(async ([user, password]) => `${user}:${await hashPassword(password, 14)}`))
  const { 'users.txt': usersFile } = writeFiles(dir, { 'users.txt': lines.join('\n') + '\n' })
  const built = await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { health: { enabled: false }, preauth: { usersFile } } })
  const logs = new LogCapture()
  return { gate: new PreauthGate(built.preauth!, provider, createLogger({ level: 'info', pretty: false }, logs), clock), logs }
}

const EWS = { path: '/EWS', healthPath: '/EWS/healthcheck.htm', preauth: 'basic' as const }
function request (url: string, authorization?: string): IncomingMessage {
  return { method: 'POST', url, headers: authorization === undefined ? {} : { authorization } } as unknown as IncomingMessage
}
async function wrongPasswordAnswer (gate: PreauthGate): Promise<GateAnswer> {
  const outcome = await gate.gate(request('/EWS/Exchange.asmx', basic('asmith', 'wrong')), EWS, '192.0.2.9', '/EWS/Exchange.asmx')
  if (!('answer' in outcome)) throw new Error('a wrong password passed')
  return outcome.answer
}

describe('lockout at the gate', () => {
  it('answers a locked logon after as long as a measured refusal takes, without asking the directory', async () => {
    const clock = new TestClock()
    const directory = new TimedDirectory(clock, [180])
    const { gate } = await labGate(clock, directory)
    for (let i = 0; i < 5; i++) expect(await gate.checkPassword('jdoe', `guess-${i}`, SPRAYER, 'basic')).toBe('invalid')
    expect(clock.delays).toEqual([])
    const asked = directory.asked
    const started = clock.t
    expect(await gate.checkPassword('jdoe', PASSWORDS.jdoe!, SPRAYER, 'basic')).toBe('invalid')
    expect(directory.asked).toBe(asked)
    expect(clock.delays).toEqual([180])
    expect(clock.t - started).toBe(180) // as long as the five refusals took each
    // With varied latencies, the wait is one of the recent ones (±5 % jitter), never instant.
    const varied = new TestClock()
    varied.random = () => 0.99
    const { gate: other } = await labGate(varied, new TimedDirectory(varied, [90, 400, 120, 260, 310]))
    for (let i = 0; i < 5; i++) await other.checkPassword('jdoe', `guess-${i}`, SPRAYER, 'forms')
    await other.checkPassword('jdoe', 'guess-6', SPRAYER, 'forms')
    expect(varied.delays).toHaveLength(1)
    expect(varied.delays[0]).toBeCloseTo(310 * 1.049, 6)
  })

  it('takes one user\'s checks one at a time: of forty parallel guesses, only those before the lock reach the directory', async () => {
    const clock = new TestClock()
    const directory = new TimedDirectory(clock, [100])
    const { gate } = await labGate(clock, directory)
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => gate.checkPassword('jdoe', `guess-${i}`, SPRAYER, 'basic')))
    expect(new Set(results)).toEqual(new Set(['invalid']))
    expect(directory.asked).toBe(5)
    expect(clock.delays).toHaveLength(35)
    // Another user's check does not wait for jdoe's.
    expect(await gate.checkPassword('asmith', PASSWORDS.asmith!, SPRAYER, 'basic')).toBe('valid')
  })

  it('counts Exchange\'s 401s to unchecked Basic like its own refusals, then answers those requests itself, like a wrong password', async () => {
    const clock = new TestClock()
    const { gate, logs } = await labGate(clock, new TimedDirectory(clock, [150]))
    expect(await gate.checkPassword('jdoe', PASSWORDS.jdoe!, PHONE, 'basic', 'appl-f17d')).toBe('valid')
    const url = '/EWS/mrsproxy.svc'
    // NTLM, Negotiate, no credentials or an empty password: a 401 is part of the handshake, not a failure.
    for (const authorization of [undefined, 'NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==', 'Negotiate YIIB', basic('jdoe', '')]) {
      for (let i = 0; i < 6; i++) gate.upstreamRejected(authorization, SPRAYER, url, 40)
      expect(gate.lockedAnswer(authorization, SPRAYER, url)).toBeUndefined()
    }
    expect(logs.lines.filter((line) => line.event === 'preauth-failed')).toEqual([])
    for (let i = 0; i < 4; i++) gate.upstreamRejected(basic('jdoe', `guess-${i}`), SPRAYER, url, 40 + i)
    expect(gate.lockedAnswer(basic('jdoe', 'guess-5'), SPRAYER, url)).toBeUndefined() // not locked yet: nothing to await
    gate.upstreamRejected(basic('CONTOSO\\jdoe', 'guess-4'), SPRAYER, url, 44)
    expect(logs.lines.filter((line) => line.event === 'preauth-failed')).toHaveLength(5)
    expect(logs.lines.filter((line) => line.event === 'preauth-failed').every((line) => line.via === 'exchange' && line.client === SPRAYER)).toBe(true)
    expect(logs.lines.find((line) => line.event === 'preauth-lockout')).toMatchObject({ scope: 'user', user: 'CONTOSO\\jdoe', client: SPRAYER, lockedForMs: 15 * MINUTE })

    // From now on the sprayer meets casgate's 401, on unchecked paths and on checked vdirs alike.
    const pending = gate.lockedAnswer(basic('jdoe', PASSWORDS.jdoe!), SPRAYER, url)
    expect(pending).toBeInstanceOf(Promise)
    const locked = await pending!
    const wrong = await wrongPasswordAnswer(gate)
    expect({ ...locked, reason: '' }).toEqual({ ...wrong, reason: '' })
    expect(locked.reason).toBe('locked-out')
    expect(clock.delays).toHaveLength(1)
    expect([40, 41, 42, 43, 44]).toContain(clock.delays[0]) // as long as Exchange took to refuse
    expect(await gate.checkPassword('jdoe', PASSWORDS.jdoe!, SPRAYER, 'basic')).toBe('invalid')
    // The user's phone, at home or behind a new NAT address, is not the sprayer.
    expect(gate.lockedAnswer(basic('jdoe', PASSWORDS.jdoe!), PHONE, url)).toBeUndefined()
    expect(gate.lockedAnswer(basic('jdoe', PASSWORDS.jdoe!), NEW_NAT, '/Microsoft-Server-ActiveSync?Cmd=Ping&User=jdoe&DeviceId=APPL-F17D&DeviceType=iPhone')).toBeUndefined()
    expect(await gate.checkPassword('jdoe', PASSWORDS.jdoe!, NEW_NAT, 'basic', 'appl-f17d')).toBe('valid')
  })

  it('logs user names and addresses, never a password or an Authorization value', async () => {
    const clock = new TestClock()
    const { gate, logs } = await labGate(clock, new TimedDirectory(clock, [100]))
    await gate.checkPassword('jdoe', PASSWORDS.jdoe!, PHONE, 'basic')
    for (let i = 0; i < 6; i++) await gate.checkPassword('jdoe', `Secret-Guess-${i}`, SPRAYER, 'basic')
    for (let i = 0; i < 6; i++) gate.upstreamRejected(basic('asmith', `Exchange-Guess-${i}`), SPRAYER, '/EWS/mrsproxy.svc', 30)
    await gate.lockedAnswer(basic('asmith', PASSWORDS.asmith!), SPRAYER, '/EWS/mrsproxy.svc')
    const raw = logs.raw.join('')
    expect(raw).toContain('"user":"jdoe"')
    expect(raw).toContain(`"client":"${SPRAYER}"`)
    for (const secretText of [...Object.values(PASSWORDS), 'Secret-Guess', 'Exchange-Guess', basic('asmith', 'Exchange-Guess-0').slice(6)]) expect(raw).not.toContain(secretText)
  })
})
