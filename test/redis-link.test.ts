import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import { createLogger } from '../src/observe/logger.js'
import { RedisLink, type RedisLinkOptions } from '../src/state/redis-link.js'
import { LogCapture } from './helpers/lab.js'
import { startRedis, type RedisServer } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

// The Redis transport of shared state against a real redis-server: order, history, trimming,
// a crash and a hung server (SIGSTOP), secrets that differ, and a clean close.

const run = promisify(execFile)

interface Rec { from: string, n: number }

interface TestLink {
  link: RedisLink<Rec>
  got: Array<{ record: Rec, own: boolean }>
  log: LogCapture
}

const quick = { blockMs: 200, heartbeatMs: 200, retryMaxMs: 200, startTimeoutMs: 2_000 }

function newLink (redis: RedisServer, instance: string, options: Partial<RedisLinkOptions> = {}, settings: Parameters<RedisServer['settings']>[0] = {}): TestLink {
  const log = new LogCapture()
  const link = new RedisLink<Rec>(redis.settings(settings), { logger: createLogger({ level: 'info', pretty: false }, log), instance, ...quick, ...options })
  const got: TestLink['got'] = []
  link.onRecord = (record, own) => { got.push({ record, own }) }
  onTestFinished(() => link.close())
  return { link, got, log }
}

function client (redis: RedisServer): Redis {
  const redisClient = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
  redisClient.on('error', () => {})
  onTestFinished(() => { redisClient.disconnect() })
  return redisClient
}

const messages = (log: LogCapture, level: number): string[] => log.lines.filter((line) => line.level === level).map((line) => String(line.msg))
const WARN = 40
const UNREACHABLE = 'Redis unreachable: state kept and counted locally, will re-sync'

describe('RedisLink carries records between instances through one stream', () => {
  it('delivers every record to every link in one stream order, each link\'s own flagged', async () => {
    const redis = await startRedis()
    const a = newLink(redis, 'a')
    const b = newLink(redis, 'b')
    await Promise.all([a.link.start(), b.link.start()])
    expect(a.link.status()).toMatchObject({ state: 'shared', queued: 0, dropped: 0, instance: 'a' })
    for (let n = 0; n < 30; n++) {
      (n % 3 === 0 ? b : a).link.publish({ from: n % 3 === 0 ? 'b' : 'a', n })
      if (n % 7 === 0) await new Promise((resolve) => setImmediate(resolve))
    }
    await until('both links got 30 records', () => a.got.length === 30 && b.got.length === 30)
    // The same order everywhere, and it is the stream's.
    const entries = await client(redis).xrange('casgate-test:records', '-', '+')
    const streamOrder = entries.map(([, fields]) => (JSON.parse(fields[fields.indexOf('r') + 1]!) as Rec).n)
    expect(a.got.map((g) => g.record.n)).toEqual(streamOrder)
    expect(b.got.map((g) => g.record.n)).toEqual(streamOrder)
    expect(new Set(streamOrder).size).toBe(30)
    // Each publisher's own records keep their order.
    expect(a.got.filter((g) => g.record.from === 'a').map((g) => g.record.n)).toEqual([...Array(30).keys()].filter((n) => n % 3 !== 0))
    expect(a.got.every((g) => g.own === (g.record.from === 'a'))).toBe(true)
    expect(b.got.every((g) => g.own === (g.record.from === 'b'))).toBe(true)
  })

  it('gives a link that starts later the history still in the stream before start() resolves', async () => {
    const redis = await startRedis()
    const a = newLink(redis, 'a')
    await a.link.start()
    for (let n = 0; n < 2_500; n++) a.link.publish({ from: 'a', n })
    await until('a saw its records', () => a.got.length === 2_500)
    const late = newLink(redis, 'late')
    await late.link.start()
    expect(late.got.length).toBe(2_500)
    expect(late.got.map((g) => g.record.n)).toEqual([...Array(2_500).keys()])
    expect(late.got.some((g) => g.own)).toBe(false)
  })

  it('keeps the stream bounded: by age (historyMs) and by length', async () => {
    const redis = await startRedis()
    const redisClient = client(redis)
    const byLength = newLink(redis, 'a', { maxStreamLength: 100 }, { keyPrefix: 'length:' })
    await byLength.link.start()
    for (let n = 0; n < 3_000; n++) byLength.link.publish({ from: 'a', n })
    // (The reader misses what is trimmed before it reads: the production cap is far above a burst.)
    await until('all sent', () => byLength.link.status().queued === 0)
    // Approximate trimming removes whole stream nodes (up to 100 entries or 4 KiB each).
    expect(await redisClient.xlen('length:records')).toBeLessThanOrEqual(200)

    const byAge = newLink(redis, 'b', { }, { keyPrefix: 'age:', historyMs: 300 })
    await byAge.link.start()
    for (let n = 0; n < 1_000; n++) byAge.link.publish({ from: 'b', n })
    await until('all sent', () => byAge.got.length === 1_000)
    await new Promise((resolve) => setTimeout(resolve, 400))
    byAge.link.publish({ from: 'b', n: 1_000 })
    await until('the last one sent', () => byAge.got.length === 1_001)
    expect(await redisClient.xlen('age:records')).toBeLessThanOrEqual(101)
  })

  it('applies a batch sent twice (a timeout after it had landed) once', async () => {
    const redis = await startRedis()
    const a = newLink(redis, 'a')
    const b = newLink(redis, 'b')
    await Promise.all([a.link.start(), b.link.start()])
    a.link.publish({ from: 'a', n: 1 })
    a.link.publish({ from: 'a', n: 2 })
    await until('b got both', () => b.got.length === 2)
    const redisClient = client(redis)
    for (const [, fields] of await redisClient.xrange('casgate-test:records', '-', '+')) await redisClient.xadd('casgate-test:records', '*', ...fields)
    a.link.publish({ from: 'a', n: 3 })
    await until('b got the next one', () => b.got.length >= 3)
    expect(b.got.map((g) => g.record.n)).toEqual([1, 2, 3])
    expect(a.got.map((g) => g.record.n)).toEqual([1, 2, 3])
  })

  it('reads a stream that began again (deleted, or a Redis with an older clock) from its start', async () => {
    const redis = await startRedis()
    const b = newLink(redis, 'b')
    await b.link.start()
    const redisClient = client(redis)
    await redisClient.xadd('casgate-test:records', '*', 'i', 'x', 'b', 'boot-x', 's', '1', 'r', JSON.stringify({ from: 'x', n: 1 }))
    await until('b got the first', () => b.got.length === 1)
    // IDs older than the last one b saw: reading on from that ID would never return them.
    await redisClient.multi().del('casgate-test:records').xadd('casgate-test:records', '5-1', 'i', 'y', 'b', 'boot-y', 's', '1', 'r', JSON.stringify({ from: 'y', n: 2 })).exec()
    await until('b got the record of the new stream', () => b.got.length === 2)
    expect(b.got.map((g) => g.record)).toEqual([{ from: 'x', n: 1 }, { from: 'y', n: 2 }])
  })
})

describe('RedisLink without Redis: traffic goes on, state is kept locally and re-synced', () => {
  it('queues while Redis is down (one warning), sends in order when it is back, the other link receives', async () => {
    const redis = await startRedis()
    const a = newLink(redis, 'a')
    const b = newLink(redis, 'b')
    await Promise.all([a.link.start(), b.link.start()])
    a.link.publish({ from: 'a', n: 0 })
    await until('b got the first', () => b.got.length === 1)

    await redis.stop()
    for (let n = 1; n <= 3; n++) a.link.publish({ from: 'a', n })
    await until('a and b local', () => a.link.status().state === 'local' && b.link.status().state === 'local')
    expect(a.link.status()).toMatchObject({ state: 'local', queued: 3, dropped: 0 })
    expect(a.link.status().lastError).toBeTruthy()
    // Several reconnection attempts fail meanwhile (retryMaxMs 200): still one warning.
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    a.link.publish({ from: 'a', n: 4 })
    expect(messages(a.log, WARN).filter((msg) => msg === UNREACHABLE)).toHaveLength(1)
    expect(messages(b.log, WARN).filter((msg) => msg === UNREACHABLE)).toHaveLength(1)

    await redis.restart()
    await until('a and b shared again', () => a.link.status().state === 'shared' && b.link.status().state === 'shared')
    await until('b got what a queued', () => b.got.length === 5)
    expect(b.got.map((g) => g.record.n)).toEqual([0, 1, 2, 3, 4])
    expect(a.link.status()).toMatchObject({ queued: 0, dropped: 0 })
    expect(a.log.lines.some((line) => line.msg === 'Redis reachable again: state shared, records re-synced')).toBe(true)
    expect(messages(a.log, WARN).filter((msg) => msg === UNREACHABLE)).toHaveLength(1)
  })

  it('drops the oldest queued records beyond maxQueued, and counts them', async () => {
    const redis = await startRedis()
    const a = newLink(redis, 'a', { maxQueued: 5 })
    const b = newLink(redis, 'b')
    await Promise.all([a.link.start(), b.link.start()])
    await redis.stop()
    await until('a local', () => a.link.status().state === 'local')
    for (let n = 1; n <= 8; n++) a.link.publish({ from: 'a', n })
    expect(a.link.status()).toMatchObject({ queued: 5, dropped: 3 })
    await redis.restart()
    await until('b got the queue', () => b.got.length === 5)
    expect(b.got.map((g) => g.record.n)).toEqual([4, 5, 6, 7, 8])
  })

  it('start() resolves without Redis, and the link shares once Redis answers', async () => {
    const redis = await startRedis()
    await redis.stop()
    const a = newLink(redis, 'a', { startTimeoutMs: 500 })
    a.link.publish({ from: 'a', n: 1 })
    await a.link.start()
    expect(a.link.status()).toMatchObject({ state: 'local', queued: 1 })
    expect(messages(a.log, WARN)).toEqual([UNREACHABLE])
    await redis.restart()
    await until('a shared', () => a.link.status().state === 'shared')
    await until('a got its own record back', () => a.got.length === 1)
    expect(a.got).toEqual([{ record: { from: 'a', n: 1 }, own: true }])
  })

  it('a hung Redis (SIGSTOP): commands time out within the bound, the link goes local, nothing piles up', async () => {
    const redis = await startRedis()
    const a = newLink(redis, 'a')
    const b = newLink(redis, 'b')
    await Promise.all([a.link.start(), b.link.start()])
    redis.pause()
    onTestFinished(() => redis.resume())
    a.link.publish({ from: 'a', n: 1 })
    // timeoutMs 300 for a command; the reader notices within blockMs + timeoutMs.
    await until('a local', () => a.link.status().state === 'local', 3_000)
    await until('b local', () => b.link.status().state === 'local', 3_000)
    // The event loop keeps turning and publish never waits.
    for (let n = 2; n <= 1_000; n++) a.link.publish({ from: 'a', n })
    expect(a.link.status().queued).toBe(1_000)
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    redis.resume()
    await until('a and b shared again', () => a.link.status().state === 'shared' && b.link.status().state === 'shared')
    await until('b got everything', () => b.got.length === 1_000)
    expect(b.got.map((g) => g.record.n)).toEqual([...Array(1_000).keys()].map((n) => n + 1))
    // Connection attempts to the hung server were dropped, not left open: each link has its writer and reader.
    const redisClient = client(redis)
    await until('two connections per link', async () => {
      const list = await redisClient.client('LIST') as string
      return list.split('\n').filter((line) => / name=casgate:a:/.test(line)).length === 2
    }, 5_000)
  })
})

describe('RedisLink authenticates', () => {
  it('with the password of a server that requires one, and says why when it is wrong (never printing it)', async () => {
    const redis = await startRedis({ password: 'right-password-for-the-test' })
    const a = newLink(redis, 'a')
    await a.link.start()
    expect(a.link.status().state).toBe('shared')
    const wrong = newLink(redis, 'w', { startTimeoutMs: 500 }, { password: 'wrong-password-for-the-test' })
    await wrong.link.start()
    expect(wrong.link.status()).toMatchObject({ state: 'local' })
    expect(wrong.link.status().lastError).toMatch(/WRONGPASS|invalid password/)
    expect(JSON.stringify([wrong.log.raw, wrong.link.status()])).not.toContain('wrong-password-for-the-test')
  })
})

describe('RedisLink compares the instances\' secret fingerprints', () => {
  it('reports a mismatch on both instances, and a match when they agree', async () => {
    const redis = await startRedis()
    const a = newLink(redis, 'a', { fingerprint: 'fp-1' })
    const b = newLink(redis, 'b', { fingerprint: 'fp-2' })
    await a.link.start()
    expect(a.link.status().fingerprint).toBe('match')
    await b.link.start()
    expect(b.link.status().fingerprint).toBe('mismatch')
    // a learns it at its next heartbeat.
    await until('a sees the mismatch', () => a.link.status().fingerprint === 'mismatch')
    expect(a.log.lines.filter((line) => line.level === 50).map((line) => line.others)).toEqual([['b']])
    await b.link.close()
    await until('a agrees again once b is gone', () => a.link.status().fingerprint === 'match')
    const c = newLink(redis, 'c', { fingerprint: 'fp-1' })
    await c.link.start()
    expect(c.link.status().fingerprint).toBe('match')
    expect(newLink(redis, 'd').link.status().fingerprint).toBe('unknown')
  })
})

describe('RedisLink.close()', () => {
  it('leaves nothing that keeps the process alive, with Redis up or unreachable', async () => {
    const module = 'dist/src/state/redis-link.js'
    expect(existsSync(module), 'run npm run build first').toBe(true)
    const redis = await startRedis()
    const script = `
      import { pino } from 'pino'
      import { RedisLink } from './${module}'
      const settings = (port) => ({ target: { kind: 'server', host: '127.0.0.1', port, db: 0 }, where: 'test', username: undefined, password: undefined, tls: undefined, keyPrefix: 'close:', historyMs: 60000, timeoutMs: 300 })
      const up = new RedisLink(settings(${redis.port}), { logger: pino({ level: 'silent' }), blockMs: 200, heartbeatMs: 100 })
      up.onRecord = () => {}
      await up.start()
      up.publish({ n: 1 })
      const down = new RedisLink(settings(1), { logger: pino({ level: 'silent' }), startTimeoutMs: 300, retryMaxMs: 100 })
      await down.start()
      down.publish({ n: 1 })
      await new Promise((resolve) => setTimeout(resolve, 300))
      await Promise.all([up.close(), down.close()])
      const left = process.getActiveResourcesInfo().filter((name) => name !== 'PipeWrap' && name !== 'TTYWrap' && name !== 'FSReqCallback')
      console.log(JSON.stringify({ statuses: [up.status(), down.status()], left }))
    `
    // Nothing may be left once close() resolved (a timer that merely delays the exit counts too).
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 })
    const { statuses: [up, down], left } = JSON.parse(stdout) as { statuses: Array<{ state: string, queued: number }>, left: string[] }
    expect(left).toEqual([])
    expect(up).toMatchObject({ state: 'local', queued: 0 })
    expect(down).toMatchObject({ state: 'local', queued: 1 })
  })
})
