import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { describe, expect, it } from 'vitest'
import { Lease } from '../src/upstream/lease.js'
import { Server } from '../src/upstream/server.js'
import { labClient, labPki, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { admin } from './helpers/admin.js'

// Every piece of work on a server holds a lease (upstream/lease.ts): the counters balancing reads
// and the list a drain's deadline cuts move only with leases, for requests, Outlook Anywhere
// channels, NTLM pins and passthrough connections alike.

function server (index = 0): Server {
  return new Server(new URL(`https://ex${index + 1}.contoso.local`), index, { connectionsPerServer: 2, longPollConnectionsPerServer: 1 })
}

describe('a lease', () => {
  it('moves the counter of its kind, once, and leaves its server\'s list when released', () => {
    const ex1 = server()
    const cut: string[] = []
    const request = new Lease(ex1, 'request', '/owa', () => cut.push('request'))
    const pin = new Lease(ex1, 'pin', '/EWS', () => cut.push('pin'))
    const passthrough = new Lease(ex1, 'connection', '/Microsoft-Server-ActiveSync', () => cut.push('connection'))
    expect([ex1.outstanding, ex1.pinned, ex1.connections, ex1.leases.size]).toEqual([1, 1, 1, 3])
    for (const lease of ex1.leases) lease.cut()
    expect(cut).toEqual(['request', 'pin', 'connection'])
    request.release()
    request.release()
    pin.release()
    passthrough.release()
    expect([ex1.outstanding, ex1.pinned, ex1.connections, ex1.leases.size]).toEqual([0, 0, 0, 0])
    request.cut()
    expect(cut).toHaveLength(3)
  })

  it('moves with a retry, budget place included, and gives the place back when released', () => {
    const [ex1, ex2] = [server(0), server(1)]
    expect(ex1.budgets.interactive.tryAcquire()).toBe(true)
    const lease = new Lease(ex1, 'request', '/owa', () => undefined, ex1.budgets.interactive)
    expect(ex2.budgets.interactive.tryAcquire()).toBe(true)
    lease.move(ex2, ex2.budgets.interactive)
    expect([ex1.outstanding, ex1.budgets.interactive.inUse, ex1.leases.size]).toEqual([0, 0, 0])
    expect([ex2.outstanding, ex2.budgets.interactive.inUse, ex2.leases.has(lease)]).toEqual([1, 1, true])
    lease.release()
    expect([ex2.outstanding, ex2.budgets.interactive.inUse, ex2.leases.size]).toEqual([0, 0, 0])
    expect(() => lease.move(ex1, undefined)).toThrow(/released/)
  })
})

describe('leases on a running gateway', () => {
  it('cuts at a one-vdir drain\'s deadline only that vdir\'s work; the same server\'s other long polls go on', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { admin: { host: '127.0.0.1', port: 0 }, health: { enabled: false } } })
    const client = await labClient()
    const owa = send(gateway, '/owa/__casgate/hold?ms=60000', { dispatcher: client }).catch((err: Error) => err)
    const ping = send(gateway, '/Microsoft-Server-ActiveSync/__casgate/hold?ms=1500', { dispatcher: client }).catch((err: Error) => err)
    await expect.poll(() => servers[0]!.requests).toBe(2)
    const ex1 = gateway.pools.get('cas')!.servers[0]!
    expect(ex1.outstanding).toBe(2)
    expect((await admin(gateway, `/backends/${ex1.name}/drain`, { vdir: '/owa', deadlineMs: 300 })).status).toBe(200)
    const [owaAnswer, pingAnswer] = await Promise.all([owa, ping])
    expect(owaAnswer).toBeInstanceOf(Error)
    expect(pingAnswer).toMatchObject({ status: 200 })
    expect(gateway.logs.lines.find((line) => line.msg === 'drain deadline reached')).toMatchObject({ cutRequests: 1 })
    await expect.poll(() => ex1.outstanding).toBe(0)
  })

  it('gives an Outlook Anywhere channel a place in the long-poll budget: over it, 503; its close gives the place back', async () => {
    const pki = await labPki()
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), pool: { longPollConnectionsPerServer: 1 }, extra: { health: { enabled: false } } })
    const open = async (): Promise<{ socket: TLSSocket, answer: () => string, closed: Promise<void> }> => {
      const socket = tlsConnect({ host: '127.0.0.1', port: gateway.address.port, servername: 'mail.contoso.test', ca: pki.root.certPem })
      await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
      let text = ''
      socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
      socket.on('error', () => undefined)
      return { socket, answer: () => text, closed: new Promise<void>((resolve) => socket.once('close', () => resolve())) }
    }
    const channel = 'RPC_IN_DATA /rpc/rpcproxy.dll?ex1.contoso.local:6001 HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: 1073741824\r\n\r\nfirst bytes'
    const ex1 = gateway.pools.get('cas')!.servers[0]!
    const first = await open()
    first.socket.write(channel)
    await expect.poll(() => ex1.budgets.longPoll.inUse).toBe(1)
    const second = await open()
    second.socket.write(channel)
    await second.closed
    expect(second.answer()).toMatch(/^HTTP\/1\.1 503 /)
    expect(second.answer()).toContain('CASGATE_ERR_CAPACITY')
    first.socket.destroy()
    await expect.poll(() => ex1.budgets.longPoll.inUse).toBe(0)
    const third = await open()
    third.socket.write(channel)
    await expect.poll(() => ex1.outstanding).toBe(1)
    third.socket.destroy()
    await expect.poll(() => ex1.leases.size).toBe(0)
  })
})
