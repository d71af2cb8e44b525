import { describe, expect, it, onTestFinished } from 'vitest'
import { Client } from 'undici'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { labClient, labPki, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { logOn } from './helpers/ntlm-client.js'
import { admin } from './helpers/admin.js'

async function servedBy (gateway: Awaited<ReturnType<typeof startLabGateway>>, path: string, times: number): Promise<Set<string>> {
  const client = await labClient()
  const names = new Set<string>()
  for (let i = 0; i < times; i++) names.add(String((await send(gateway, path, { dispatcher: client })).headers['x-backend']))
  return names
}

describe('drain from the admin listener', () => {
  it('keeps new work away from a drained vdir of one server, the rest of it still serving', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { admin: { host: '127.0.0.1', port: 0 }, health: { enabled: false } } })
    const ex1 = new URL(servers[0]!.url).host
    expect((await admin(gateway, `/backends/${ex1}/drain`, { vdir: '/owa' })).status).toBe(200)
    expect(await servedBy(gateway, '/owa/', 6)).toEqual(new Set(['ex2']))
    expect(await servedBy(gateway, '/EWS/x', 6)).toEqual(new Set(['ex1', 'ex2']))
    const status = (await admin(gateway, '/status')).json as { drained: Array<{ backend: string, vdirs: string[] }> }
    expect(status.drained).toEqual([expect.objectContaining({ backend: ex1, vdirs: ['/owa'] })])
    expect((await admin(gateway, `/backends/${ex1}/enable`, {})).status).toBe(200)
    expect(await servedBy(gateway, '/owa/', 6)).toEqual(new Set(['ex1', 'ex2']))
    expect((await admin(gateway, '/backends/nowhere:443/drain', {})).status).toBe(404)
  })

  it('lets held long polls run until the deadline, then cuts them', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), pool: { balance: 'round-robin' }, extra: { admin: { host: '127.0.0.1', port: 0 }, health: { enabled: false } } })
    const client = await labClient()
    const ping = (ms: number) => send(gateway, `/Microsoft-Server-ActiveSync/__casgate/hold?ms=${ms}`, { dispatcher: client }).catch((err: Error) => err)
    const longPing = ping(60_000) // round robin: ex1
    await expect.poll(() => servers[0]!.requests).toBe(1)
    const shortPing = ping(300) // ex2
    await expect.poll(() => servers[1]!.requests).toBe(1)
    const pings = [longPing, shortPing]
    expect((await admin(gateway, `/backends/${new URL(servers[0]!.url).host}/drain`, { deadlineMs: 600 })).status).toBe(200)
    const [long, short] = await Promise.all(pings)
    // The short Ping (on ex2) finished normally; the long one (on ex1) was cut at the deadline.
    expect(short).toMatchObject({ status: 200 })
    expect(long).toBeInstanceOf(Error)
    await expect.poll(() => servers[0]!.abandoned).toBe(1)
    expect(gateway.logs.lines.find((line) => line.msg === 'drain deadline reached')).toMatchObject({ cutRequests: 1 })
  })

  it('lets a pinned NTLM connection finish until the deadline, then closes it', async () => {
    const directory = { domain: 'CONTOSO', users: { alice: 'Secret-1' } }
    const servers = await Promise.all(['ex1', 'ex2'].map((name) => new ExchangeEmulator({ name, ntlm: directory }).start()))
    onTestFinished(async () => { await Promise.all(servers.map((s) => s.close())) })
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { admin: { host: '127.0.0.1', port: 0 }, health: { enabled: false } } })
    const pki = await labPki()
    const client = new Client(`https://127.0.0.1:${gateway.address.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' }, pipelining: 1 })
    onTestFinished(() => client.destroy())
    const get = (authorization?: string) => client.request({ path: '/EWS/Exchange.asmx', method: 'GET', headers: { host: 'mail.contoso.test', ...(authorization ? { authorization } : {}) } })
    const first = await (await logOn(client, '/EWS/Exchange.asmx', 'alice', 'Secret-1', 'CONTOSO')).body.json() as EchoBody
    const pinnedTo = servers.find((s) => s.name === first.server)!
    expect((await admin(gateway, `/backends/${new URL(pinnedTo.url).host}/drain`, { deadlineMs: 400 })).status).toBe(200)
    // New clients go elsewhere; the logged-on connection keeps its server until the deadline.
    expect(await servedBy(gateway, '/EWS/x', 4)).toEqual(new Set([servers.find((s) => s !== pinnedTo)!.name]))
    expect(await (await get()).body.json()).toMatchObject({ user: 'alice', server: pinnedTo.name })
    const drained = gateway.pools.get('cas')!.servers.find((b) => b.origin === pinnedTo.url)!
    await expect.poll(() => drained.pinned, { timeout: 5_000 }).toBe(0)
    expect(gateway.logs.lines.some((line) => line.msg === 'drain deadline reached' && line.closedPinnedConnections === 1)).toBe(true)
  })
})
