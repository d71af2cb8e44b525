import { describe, expect, it, onTestFinished } from 'vitest'
import { createLogger } from '../src/observe/logger.js'
import { RedisLink } from '../src/state/redis-link.js'
import { LogCapture } from './helpers/lab.js'
import { startSentinelSite, type SentinelSite } from './helpers/redis-sentinel.js'
import { until } from './helpers/until.js'

// The shared-state link behind Redis Sentinel, through a real failover: a master, its replica and
// one Sentinel (real redis-server processes); the master is killed and the Sentinel promotes the
// replica while two links keep publishing.

interface Rec { from: string, n: number }

interface TestLink {
  link: RedisLink<Rec>
  got: Array<{ record: Rec, own: boolean }>
  log: LogCapture
  published: Rec[]
  publish: () => void
}

const STREAM = 'casgate-test:records'
const UNREACHABLE = 'Redis unreachable: state kept and counted locally, will re-sync'
const BACK = 'Redis reachable again: state shared, records re-synced'

function newLink (site: SentinelSite, instance: string): TestLink {
  const log = new LogCapture()
  const link = new RedisLink<Rec>(site.settings(), { logger: createLogger({ level: 'info', pretty: false }, log), instance, blockMs: 200, heartbeatMs: 200, retryMaxMs: 200, startTimeoutMs: 5_000 })
  const got: TestLink['got'] = []
  link.onRecord = (record, own) => { got.push({ record, own }) }
  onTestFinished(() => link.close())
  const published: Rec[] = []
  return {
    link,
    got,
    log,
    published,
    publish: () => {
      const record = { from: instance, n: published.length + 1 }
      published.push(record)
      link.publish(record)
    }
  }
}

const both = (a: TestLink, b: TestLink, state: 'shared' | 'local') => () => a.link.status().state === state && b.link.status().state === state
const keyOf = (record: Rec): string => `${record.from}${record.n}`

/** Each link got every record published once (and the others'), in the same order, each publisher's in its order, its own flagged. */
function expectEachOnce (links: TestLink[], others: Rec[] = []): void {
  const all = [...links.flatMap((l) => l.published), ...others].map(keyOf).sort()
  for (const l of links) {
    const got = l.got.map((g) => keyOf(g.record))
    expect([...got].sort()).toEqual(all)
    expect(got).toEqual(links[0]!.got.map((g) => keyOf(g.record)))
    for (const from of links) expect(l.got.filter((g) => g.record.from === from.link.instance).map((g) => g.record)).toEqual(from.published)
    expect(l.got.every((g) => g.own === (g.record.from === l.link.instance))).toBe(true)
  }
}

async function streamKeys (site: SentinelSite): Promise<string[]> {
  const entries = await site.client(site.replica).xrange(STREAM, '-', '+')
  return entries.map(([, fields]) => keyOf(JSON.parse(fields[fields.indexOf('r') + 1]!) as Rec))
}

describe('RedisLink behind Redis Sentinel', () => {
  it('follows a failover: local while the master is gone, shared again on the promoted replica, every record once', async () => {
    const site = await startSentinelSite()
    const a = newLink(site, 'a')
    const b = newLink(site, 'b')
    await Promise.all([a.link.start(), b.link.start()])
    expect(a.link.status()).toMatchObject({ state: 'shared', where: `sentinels 127.0.0.1:${site.sentinelPort} (master casgate-test)` })
    a.publish()
    b.publish()
    await until('each link got both', () => a.got.length === 2 && b.got.length === 2, 5_000)
    await until('the replica has them', async () => await site.client(site.replica).xlen(STREAM) === 2, 5_000)

    await site.master.stop()
    // Both keep publishing through the failover, every 50 ms.
    const ticker = setInterval(() => { a.publish(); b.publish() }, 50)
    onTestFinished(() => clearInterval(ticker))
    await until('a and b local', both(a, b, 'local'), 3_000)
    await until('records queued while local', () => a.link.status().queued > 0 && b.link.status().queued > 0, 2_000)
    await until('the Sentinel names the replica as master', async () => await site.masterPort() === site.replica.port, 15_000, site.log)
    await until('a and b shared again', both(a, b, 'shared'), 10_000)
    const after = a.published.length + 10
    await until('more records published once shared', () => a.published.length >= after, 5_000)
    clearInterval(ticker)

    await until('every record reached both links', () => a.got.length >= a.published.length + b.published.length && b.got.length >= a.published.length + b.published.length, 10_000)
    // Anything delivered twice would come now: let a few read turns pass.
    await new Promise((resolve) => setTimeout(resolve, 600))
    expectEachOnce([a, b])
    expect(a.link.status()).toMatchObject({ state: 'shared', queued: 0, dropped: 0 })
    // Both links write to and read from the promoted replica, and the stream there holds every record.
    expect((await streamKeys(site)).sort()).toEqual([...a.published, ...b.published].map(keyOf).sort())
    const clients = await site.client(site.replica).client('LIST') as string
    for (const name of ['a:writer', 'a:reader', 'b:writer', 'b:reader']) expect(clients).toContain(` name=casgate:${name} `)
    for (const l of [a, b]) {
      expect(l.log.lines.filter((line) => line.msg === UNREACHABLE)).toHaveLength(1)
      expect(l.log.lines.filter((line) => line.msg === BACK)).toHaveLength(1)
    }
  }, 60_000)

  it('a promoted replica without the master\'s last entries: the links read its stream again, apply nothing twice and miss nothing later', async () => {
    const site = await startSentinelSite()
    const a = newLink(site, 'a')
    const b = newLink(site, 'b')
    await Promise.all([a.link.start(), b.link.start()])
    a.publish()
    b.publish()
    a.publish()
    await until('each link got three', () => a.got.length === 3 && b.got.length === 3, 5_000)
    await until('the replica has them', async () => await site.client(site.replica).xlen(STREAM) === 3, 5_000)

    // The replica stops and the master drops it: what the master takes now never reaches the
    // replica (asynchronous replication), as when a master dies before its replica caught up.
    site.replica.pause()
    onTestFinished(() => site.replica.resume())
    await site.client(site.master).call('CLIENT', 'KILL', 'TYPE', 'replica')
    b.publish()
    a.publish()
    b.publish()
    // And one from a third instance with an ID a minute ahead, as the master's clock may be ahead
    // of the replica's: what the promoted replica adds next has lower IDs than the last one the
    // links saw, and reading on from that ID would skip it all.
    const ahead = { from: 'x', n: 1 }
    await site.client(site.master).xadd(STREAM, `${Date.now() + 60_000}-0`, 'i', 'x', 'b', 'boot-x', 's', '1', 'r', JSON.stringify(ahead))
    await until('each link got the four the replica lacks', () => a.got.length === 7 && b.got.length === 7, 5_000)
    const lost = a.got.slice(3).map((g) => keyOf(g.record))

    await site.master.stop()
    site.replica.resume()
    a.publish()
    b.publish()
    await until('a and b local', both(a, b, 'local'), 3_000)
    await until('the Sentinel names the replica as master', async () => await site.masterPort() === site.replica.port, 15_000, site.log)
    await until('a and b shared again', both(a, b, 'shared'), 10_000)
    a.publish()
    b.publish()

    await until('every record reached both links', () => a.got.length >= 11 && b.got.length >= 11, 10_000)
    await new Promise((resolve) => setTimeout(resolve, 600))
    expectEachOnce([a, b], [ahead])
    // The new master's stream is the replica's copy, without the four it never got.
    const kept = await streamKeys(site)
    expect(kept).toHaveLength(7)
    for (const key of lost) expect(kept).not.toContain(key)
  }, 60_000)
})
