import { closedPort } from './helpers/ports.js'
import { describe, expect, it } from 'vitest'
import { labClient, send, startEmulators, startLabGateway } from './helpers/lab.js'

// Probes every minute: whatever happens within a test is seen on live traffic only.
const SLOW_PROBES = { intervalMs: 60_000, timeoutMs: 1_000, rise: 1, fall: 2 }

describe('passive failure detection and retries', () => {
  it('keeps idempotent requests succeeding while a server dies mid-load, and takes it out', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), pool: { balance: 'round-robin' }, extra: { health: SLOW_PROBES } })
    const client = await labClient()
    const statuses: number[] = []
    let sent = 0
    const worker = async (): Promise<void> => {
      while (sent < 200) {
        sent++
        if (sent === 60) await servers[0]!.close()
        statuses.push((await send(gateway, `/EWS/Exchange.asmx?n=${sent}`, { dispatcher: client })).status)
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker))
    expect(statuses.filter((s) => s !== 200)).toEqual([])
    const dead = gateway.pools.get('cas')!.servers.find((b) => b.origin === servers[0]!.url)!
    expect(dead.down.has('/EWS')).toBe(true)
    // The log line is written through pino's stream: it may land a turn after the change itself.
    await expect.poll(() => gateway.logs.lines.some((line) => line.msg === 'backend health changed' && String(line.reason).startsWith('traffic: '))).toBe(true)
  }, 60_000)

  it('never retries a request with a body', async () => {
    const [good] = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: [`http://127.0.0.1:${await closedPort()}`, good!.url], pool: { balance: 'round-robin' }, extra: { health: { enabled: false } } })
    const client = await labClient()
    const posts = []
    for (let i = 0; i < 6; i++) posts.push((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'POST', body: '<soap/>' })).status)
    expect(posts).toEqual([502, 200, 502, 200, 502, 200])
    expect(good!.requests).toBe(3)
    // The same path with GET is retried on the healthy server.
    for (let i = 0; i < 6; i++) expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client })).status).toBe(200)
  })
})
