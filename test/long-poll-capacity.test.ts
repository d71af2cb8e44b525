import { describe, expect, it, onTestFinished } from 'vitest'
import { Pool } from 'undici'
import { labPki, startEmulators, startLabGateway } from './helpers/lab.js'

// Long polls must never starve interactive requests: ActiveSync Pings held by Exchange take a
// budget of upstream connections of their own, so 3,000 phones waiting in a Ping on three
// servers are all answered, and an OWA click during them is answered while they are still held.
// (With one shared cap of 256 connections per server, Ping 769 waited for a Ping to end, and
// every OWA request queued behind it.)

const PINGS = 3_000
// Held until released (bounded by 10 minutes): the test waits for the crowd, not a guess of its pace.
const HOLD_MS = 10 * 60_000

describe('capacity for long polls', () => {
  it(`holds ${PINGS} ActiveSync Pings on 3 servers, answers every one, and serves OWA while they are held`, async () => {
    const servers = await startEmulators(3)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { health: { enabled: false }, log: { level: 'warn' } } })
    const pki = await labPki()
    const origin = `https://127.0.0.1:${gateway.address.port}`
    // A client connection per phone, as phones have.
    const phones = new Pool(origin, { connections: PINGS, connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
    const browser = new Pool(origin, { connections: 8, connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
    onTestFinished(async () => { await Promise.all([phones.destroy(), browser.destroy()]) })
    const backends = gateway.pools.get('cas')!.servers
    const held = (): number => backends.reduce((sum, backend) => sum + backend.outstanding, 0)

    let pingsAnswered = 0
    const pings: Array<Promise<number>> = []
    // Phones arrive a few hundred at a time (a whole crowd's TLS handshakes at once would only
    // measure this box's two cores); each batch is held at Exchange before the next comes.
    for (let batch = 0; batch < PINGS / 250; batch++) {
      for (let i = batch * 250; i < (batch + 1) * 250; i++) {
        pings.push(phones.request({
          path: `/Microsoft-Server-ActiveSync/__casgate/hold?ms=${HOLD_MS}&release=1&Cmd=Ping&DeviceId=D${i}`,
          method: 'POST',
          headers: { host: 'mail.contoso.test' },
          body: 'ping'
        }).then(async (response) => {
          await response.body.dump()
          pingsAnswered++
          return response.statusCode
        }))
      }
      await expect.poll(held, { timeout: 60_000, interval: 100 }).toBe(pings.length)
    }
    // Every Ping is at Exchange, none waits in a queue at casgate.
    expect(held()).toBe(PINGS)
    expect(pingsAnswered).toBe(0)
    const owa = await Promise.all(Array.from({ length: 20 }, async () => {
      const response = await browser.request({ path: '/owa/', method: 'GET', headers: { host: 'mail.contoso.test' } })
      await response.body.dump()
      return response.statusCode
    }))
    expect(owa.every((status) => status === 200)).toBe(true)
    // Answered while every Ping was still held.
    expect(pingsAnswered).toBe(0)
    expect(servers.reduce((sum, server) => sum + server.releaseHeld(), 0)).toBe(PINGS)
    const statuses = await Promise.all(pings)
    expect(statuses.filter((status) => status !== 200)).toEqual([])
    // Spread over the three servers (least outstanding).
    for (const server of servers) expect(server.requests).toBeGreaterThan(PINGS / 3 - 100)
  }, 180_000)
})

describe('a full budget', () => {
  it('queues a request at most queueTimeoutMs, then answers 503 with Retry-After, logged once; other budgets are untouched', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), pool: { longPollConnectionsPerServer: 2, queueTimeoutMs: 300 }, extra: { health: { enabled: false } } })
    const pki = await labPki()
    const client = new Pool(`https://127.0.0.1:${gateway.address.port}`, { connections: 16, connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
    onTestFinished(async () => { await client.destroy() })
    const ask = async (path: string, method: 'GET' | 'POST' = 'POST'): Promise<{ status: number, retryAfter: unknown, text: string }> => {
      const response = await client.request({ path, method, headers: { host: 'mail.contoso.test' }, ...(method === 'POST' ? { body: 'x' } : {}) })
      return { status: response.statusCode, retryAfter: response.headers['retry-after'], text: await response.body.text() }
    }
    const backend = gateway.pools.get('cas')!.servers[0]!
    const held = [ask('/Microsoft-Server-ActiveSync/__casgate/hold?ms=3000'), ask('/EWS/__casgate/hold?ms=3000')]
    await expect.poll(() => backend.budgets.longPoll.inUse).toBe(2)
    // A third long poll waits for a place, then is told to come back; a fourth right after it too.
    const [third, fourth] = await Promise.all([ask('/Microsoft-Server-ActiveSync/__casgate/hold?ms=10'), ask('/mapi/__casgate/hold?ms=10')])
    for (const refused of [third, fourth]) {
      expect(refused.status).toBe(503)
      expect(refused.retryAfter).toBeDefined()
      expect(JSON.parse(refused.text).code).toBe('CASGATE_ERR_CAPACITY')
    }
    // Interactive requests have connections of their own.
    expect((await ask('/owa/', 'GET')).status).toBe(200)
    expect(gateway.logs.lines.filter((line) => line.budget === 'longPoll')).toHaveLength(1)
    expect((await Promise.all(held)).map((answer) => answer.status)).toEqual([200, 200])
    expect(backend.budgets.longPoll.inUse).toBe(0)
  })

  it('gives a place that comes free to the first request in line', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), pool: { longPollConnectionsPerServer: 1, queueTimeoutMs: 20_000 }, extra: { health: { enabled: false } } })
    const pki = await labPki()
    const client = new Pool(`https://127.0.0.1:${gateway.address.port}`, { connections: 4, connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
    onTestFinished(async () => { await client.destroy() })
    const order: string[] = []
    const ping = (name: string, ms: number): Promise<number> => client.request({ path: `/Microsoft-Server-ActiveSync/__casgate/hold?ms=${ms}`, method: 'POST', headers: { host: 'mail.contoso.test' }, body: name })
      .then(async (response) => { await response.body.dump(); order.push(name); return response.statusCode })
    const backend = gateway.pools.get('cas')!.servers[0]!
    const first = ping('first', 500)
    await expect.poll(() => backend.budgets.longPoll.inUse).toBe(1)
    const second = ping('second', 10)
    await expect.poll(() => backend.budgets.longPoll.waiting).toBe(1)
    expect(await Promise.all([first, second])).toEqual([200, 200])
    expect(order).toEqual(['first', 'second'])
    expect(backend.budgets.longPoll.inUse).toBe(0)
  })
})
