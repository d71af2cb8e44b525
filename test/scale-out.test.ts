import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import type { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { startEmulators } from './helpers/lab.js'
import { tempDir } from './helpers/tmp.js'
import { usersFile } from './helpers/users.js'
import { adminJson, formsSession, fresh, startCasgate, type Cluster } from './helpers/casgate-cli.js'
import { startRedis, type RedisServer } from './helpers/redis-server.js'
import { Redis } from 'ioredis'
import { promtool } from './helpers/promtool.js'

// Two casgate instances of one site share state through a real redis-server (state.redis): the
// real CLI twice, instance A one process and instance B a primary with two workers (the primary
// speaks for its workers), in front of the same emulated Exchange servers. Every request opens
// a connection of its own to the instance named.

const PASSWORDS = { jdoe: 'Correct-Horse-1', asmith: 'Battery-Staple-2' }

function basic (user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

interface Site {
  a: Cluster
  b: Cluster
  redis: RedisServer
}

/** startSite runs instances A and B with the secrets a multi-instance site shares (session, affinity). */
async function startSite (servers: ExchangeEmulator[], extra: Record<string, unknown> = {}): Promise<Site> {
  const redis = await startRedis()
  const secrets = tempDir()
  writeFileSync(`${secrets}/session-secret`, randomBytes(48).toString('base64'))
  writeFileSync(`${secrets}/affinity-secret`, randomBytes(48).toString('base64'))
  const site = {
    health: { enabled: false },
    preauth: { usersFile: await usersFile(PASSWORDS), secretFile: `${secrets}/session-secret`, lockout: { userThreshold: 4, addressThreshold: 6, lockoutMs: 60_000 } },
    state: { redis: { url: `redis://127.0.0.1:${redis.port}/0`, keyPrefix: 'site-test:', timeoutMs: 300 } },
    ...extra,
    affinity: { secretFile: `${secrets}/affinity-secret`, ...(extra.affinity as object | undefined) }
  }
  const [a, b] = await Promise.all([startCasgate(servers, site, 1), startCasgate(servers, site, 2)])
  return { a: a!, b: b!, redis }
}

/** sharedStateUp reads casgate_shared_state_up from an instance's /metrics (a cluster's primary adds its own to its workers'), linted by promtool. */
async function sharedStateUp (instance: Cluster): Promise<string | undefined> {
  const token = readFileSync(`${instance.dir}/admin-token`, 'utf8').trim()
  const text = await (await fetch(`http://127.0.0.1:${instance.admin}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text()
  const lint = await promtool(text)
  expect(lint.code, lint.output).toBe(0)
  return /^casgate_shared_state_up (\d)$/m.exec(text)?.[1]
}

async function sharedState (instance: Cluster): Promise<string> {
  return ((await adminJson(instance, '/status')) as { sharedState?: { state: string } }).sharedState?.state ?? 'none'
}

const ACTIVE_SYNC = (user: string): string => `/Microsoft-Server-ActiveSync?Cmd=Sync&User=${user}&DeviceId=D-${user}&DeviceType=iPhone`

describe('two instances share state through Valkey/Redis', () => {
  it('locks a password sprayer at the shared thresholds, whichever instance each guess reaches', async () => {
    const servers = await startEmulators(1)
    const { a, b } = await startSite(servers)
    expect(await sharedState(a)).toBe('shared')
    expect(await sharedState(b)).toBe('shared')
    // One user guessed at: two wrong passwords on each instance, four in all, the user threshold.
    for (let i = 0; i < 4; i++) expect((await fresh(i % 2 === 0 ? a : b, ACTIVE_SYNC('jdoe'), { authorization: basic('jdoe', `guess-${i}`) })).status).toBe(401)
    for (const instance of [a, b]) expect((await fresh(instance, ACTIVE_SYNC('jdoe'), { authorization: basic('jdoe', PASSWORDS.jdoe) })).status).toBe(401)
    // Many users from one address: six in all, the address threshold; then a real user from it is refused everywhere.
    for (let i = 0; i < 6; i++) expect((await fresh(i % 2 === 0 ? b : a, ACTIVE_SYNC(`user${i}`), { authorization: basic(`user${i}`, 'Winter2026!') })).status).toBe(401)
    for (const instance of [a, b]) expect((await fresh(instance, ACTIVE_SYNC('asmith'), { authorization: basic('asmith', PASSWORDS.asmith) })).status).toBe(401)
    for (const instance of [a, b]) await expect.poll(() => instance.lines.some((line) => line.event === 'preauth-locked-out')).toBe(true)
  })

  it('ends a session signed out on one instance on the other, and carries a drain to the other within a second', async () => {
    const servers = await startEmulators(2)
    const { a, b } = await startSite(servers)
    const session = await formsSession(a, 'jdoe', PASSWORDS.jdoe)
    expect((await fresh(b, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(200)
    expect((await fresh(a, '/owa/logoff.owa', { cookie: session })).status).toBe(302)
    await expect.poll(async () => (await fresh(b, '/owa/', { cookie: session, accept: 'text/html' })).status, { timeout: 1_000, interval: 50 }).toBe(302)

    const ex1 = new URL(servers[0]!.url).host
    expect((await adminJson(b, `/backends/${ex1}/drain`, { vdir: '/EWS' })).status).toBe(200)
    await expect.poll(async () => ((await adminJson(a, '/status')) as { drained: Array<{ backend: string, vdirs: string[] }> }).drained, { timeout: 1_000, interval: 50 }).toEqual([expect.objectContaining({ backend: ex1, vdirs: ['/EWS'] })])
    const answers = await Promise.all(Array.from({ length: 6 }, () => fresh(a, '/EWS/Exchange.asmx', { authorization: basic('asmith', PASSWORDS.asmith) })))
    expect(new Set(answers.map((answer) => answer.backend))).toEqual(new Set(['ex2']))
    expect((await adminJson(a, `/backends/${ex1}/enable`, {})).status).toBe(200)
    await expect.poll(async () => ((await adminJson(b, '/status')) as { drained: unknown[] }).drained, { timeout: 1_000, interval: 50 }).toEqual([])
  })

  it('sends a key that spilled off its first choice to the same server from both instances', async () => {
    const servers = await startEmulators(3)
    // A tight balance factor makes many keys spill; instance B, with no load of its own, would place each on its first choice.
    const { a, b } = await startSite(servers, { preauth: undefined, affinity: { balanceFactor: 1.05 } })
    const placed = new Map<number, string>()
    await Promise.all(Array.from({ length: 60 }, async (_, user) => {
      const answer = await fresh(a, `/Microsoft-Server-ActiveSync?Cmd=Sync&User=user${user}&DeviceId=D${user}&DeviceType=iPhone`)
      expect(answer.status).toBe(200)
      placed.set(user, answer.backend)
    }))
    const spilled = ((await adminJson(a, '/affinity')) as { vdirs: Array<{ vdir: string, spilled: number }> }).vdirs.find((vdir) => vdir.vdir === '/Microsoft-Server-ActiveSync')!.spilled
    expect(spilled).toBeGreaterThan(0)
    await expect.poll(async () => ((await adminJson(b, '/affinity')) as { vdirs: Array<{ vdir: string, keysHeld: number }> }).vdirs.find((vdir) => vdir.vdir === '/Microsoft-Server-ActiveSync')!.keysHeld, { timeout: 2_000 }).toBe(60)
    const elsewhere = await Promise.all(Array.from({ length: 60 }, async (_, user) => (await fresh(b, `/Microsoft-Server-ActiveSync?Cmd=Sync&User=user${user}&DeviceId=D${user}&DeviceType=iPhone`)).backend))
    expect(elsewhere.map((backend, user) => [user, backend]).filter(([user, backend]) => placed.get(user as number) !== backend)).toEqual([])
  })

  it('fails no request while Redis hangs or is killed, counts locally meanwhile, and shares again (with what was recorded) once it is back', async () => {
    const servers = await startEmulators(2)
    const { a, b, redis } = await startSite(servers)
    const session = await formsSession(a, 'jdoe', PASSWORDS.jdoe)
    const statuses: number[] = []
    let killed = false
    // Load across both instances; Redis hangs (SIGSTOP) a sixth of the way in, and is killed at a third.
    for (let i = 0; i < 60; i++) {
      if (i === 10) redis.pause()
      if (i === 20) {
        await redis.stop()
        killed = true
      }
      const instance = i % 2 === 0 ? a : b
      const answers = await Promise.all([
        fresh(instance, '/EWS/Exchange.asmx', { authorization: basic('asmith', PASSWORDS.asmith) }),
        fresh(instance, ACTIVE_SYNC(`user${i % 7}`), { authorization: basic('asmith', PASSWORDS.asmith) }),
        fresh(instance, '/owa/', { cookie: session, accept: 'text/html' })
      ])
      statuses.push(...answers.map((answer) => answer.status))
    }
    expect(killed).toBe(true)
    expect(statuses.filter((status) => status !== 200)).toEqual([])
    await expect.poll(() => sharedState(a), { timeout: 5_000 }).toBe('local')
    await expect.poll(() => sharedState(b), { timeout: 5_000 }).toBe('local')
    expect(a.lines.some((line) => line.msg === 'Redis unreachable: state kept and counted locally, will re-sync')).toBe(true)
    expect(await sharedStateUp(a)).toBe('0')
    expect(await sharedStateUp(b)).toBe('0')

    // While Redis is away: a sign-out and four wrong guesses on A, kept and counted there.
    expect((await fresh(a, '/owa/logoff.owa', { cookie: session })).status).toBe(302)
    for (let i = 0; i < 4; i++) expect((await fresh(a, ACTIVE_SYNC('jdoe'), { authorization: basic('jdoe', `guess-${i}`) })).status).toBe(401)
    expect((await fresh(a, ACTIVE_SYNC('jdoe'), { authorization: basic('jdoe', PASSWORDS.jdoe) })).status).toBe(401)

    await redis.restart()
    await expect.poll(() => sharedState(a), { timeout: 15_000 }).toBe('shared')
    await expect.poll(() => sharedState(b), { timeout: 15_000 }).toBe('shared')
    expect(await sharedStateUp(a)).toBe('1')
    expect(await sharedStateUp(b)).toBe('1')
    // What A recorded meanwhile reached B: the session is refused there, and jdoe is locked there.
    await expect.poll(async () => (await fresh(b, '/owa/', { cookie: session, accept: 'text/html' })).status, { timeout: 2_000, interval: 100 }).toBe(302)
    expect((await fresh(b, ACTIVE_SYNC('jdoe'), { authorization: basic('jdoe', PASSWORDS.jdoe) })).status).toBe(401)
  })

  it('drops records of a shape no instance writes (anything with access to Redis can write them), and keeps serving', async () => {
    const servers = await startEmulators(1)
    const { a, b, redis } = await startSite(servers)
    const client = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: true })
    await client.connect()
    try {
      const forged = [
        { kind: 'lockout', record: null },
        { kind: 'lockout', record: { kind: 'clear' } },
        { kind: 'drain', backend: new URL(servers[0]!.url).host, vdirs: 'all', deadlineAt: 0 },
        { kind: 'assignment', assignment: { owner: 1, key: [], server: {} } },
        { kind: 'revocation' },
        'not an object'
      ]
      for (const [n, record] of forged.entries()) await client.xadd('site-test:records', '*', 'i', 'intruder', 'b', 'forged', 's', String(n + 1), 'r', JSON.stringify(record))
      await client.xadd('site-test:records', '*', 'i', 'intruder', 'b', 'forged', 's', '99', 'r', '{not json')
    } finally {
      client.disconnect()
    }
    for (const instance of [a, b]) await expect.poll(() => instance.lines.some((line) => line.msg === 'malformed shared records in Valkey/Redis were dropped (another program writing under state.redis.keyPrefix?)'), { timeout: 3_000 }).toBe(true)
    for (const instance of [a, b]) expect((await fresh(instance, '/EWS/Exchange.asmx', { authorization: basic('asmith', PASSWORDS.asmith) })).status).toBe(200)
    expect(b.lines.some((line) => line.msg === 'worker exited; starting another')).toBe(false)
    expect(((await adminJson(a, '/status')) as { drained: unknown[] }).drained).toEqual([])
  })
})
