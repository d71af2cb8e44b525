import { readdirSync } from 'node:fs'
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { closedPort } from './helpers/ports.js'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { issueCertificate } from '../src/certificates/lab-ca.js'
import { captureClientHello, splitIntoRecords } from './helpers/client-hello.js'
import { curl } from './helpers/curl.js'
import { labClient, labPki, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { admin } from './helpers/admin.js'

/** A raw TCP "backend" that records what it receives and, optionally, hangs up at once. */
async function recordingBackend (options: { hangUp?: boolean } = {}): Promise<{ server: Server, url: string, received: () => Buffer[] }> {
  const received: Buffer[] = []
  const server = createServer((socket) => {
    const chunks: Buffer[] = []
    received.push(Buffer.alloc(0))
    const index = received.length - 1
    socket.on('data', (chunk: Buffer) => { chunks.push(chunk); received[index] = Buffer.concat(chunks) })
    socket.on('error', () => undefined)
    if (options.hangUp) socket.once('data', () => socket.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, received: () => received }
}

/** A gateway that terminates mail.contoso.test (offload) and passes eas.contoso.test through. */
async function mixedGateway (easServers: string[], extra: Record<string, unknown> = {}) {
  const http = await startEmulators(1)
  return startLabGateway({
    mode: 'offload',
    servers: http.map((s) => s.url),
    extra: {
      pools: { cas: { servers: http.map((s) => s.url) }, eas: { servers: easServers } },
      hostsExtra: [{ names: ['eas.contoso.test'], mode: 'passthrough', pool: 'eas' }],
      // These backends are raw sockets, not Exchange: no health pages to probe.
      health: { enabled: false },
      ...extra
    }
  })
}

async function casBackend () {
  const pki = await labPki()
  const eas = await issueCertificate({ commonName: 'eas.contoso.test', names: ['eas.contoso.test'] }, pki.intermediate)
  const backend = await new ExchangeEmulator({ name: 'eas-cba', tls: { certPem: eas.certPem + pki.intermediate.certPem, keyPem: eas.keyPem, clientCa: pki.root.certPem + pki.intermediate.certPem } }).start()
  onTestFinished(() => backend.close())
  return backend
}

function peerName (port: number, servername: string, ca: string): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername, ca }, () => {
      resolve(socket.getPeerCertificate().subject?.CN as string | undefined)
      socket.end()
    })
    socket.on('error', reject)
  })
}

describe('passthrough by SNI on the same port as terminated hosts', () => {
  it('hands the client certificate to the backend untouched (real curl with --cert)', async () => {
    const pki = await labPki()
    const backend = await casBackend()
    const gateway = await mixedGateway([backend.url])
    const phone = await issueCertificate({ commonName: 'phone-alice', usage: ['clientAuth'] }, pki.intermediate)
    const files = writeFiles(tempDir(), { 'root.pem': pki.root.certPem, 'phone.crt': phone.certPem, 'phone.key': phone.keyPem })
    const port = gateway.address.port
    const body = await curl(['--cacert', files['root.pem'], '--cert', files['phone.crt'], '--key', files['phone.key'],
      '--resolve', `eas.contoso.test:${port}:127.0.0.1`, `https://eas.contoso.test:${port}/Microsoft-Server-ActiveSync?Cmd=Sync`])
    const echo = JSON.parse(body) as EchoBody
    expect(echo.server).toBe('eas-cba')
    expect(echo.tls?.clientCertificate).toBe('phone-alice')
    expect(echo.tls?.servername).toBe('eas.contoso.test')
    // No X-Forwarded-For: casgate never saw the HTTP inside.
    expect(echo.headers['x-forwarded-for']).toBeUndefined()
  })

  it('serves a terminated host and a passthrough host at once, each with its own certificate', async () => {
    const pki = await labPki()
    const backend = await casBackend()
    const gateway = await mixedGateway([backend.url])
    const port = gateway.address.port
    const [mail, eas] = await Promise.all([peerName(port, 'mail.contoso.test', pki.root.certPem), peerName(port, 'eas.contoso.test', pki.root.certPem)])
    expect(mail).toBe('mail.contoso.test') // casgate's certificate
    expect(eas).toBe('eas.contoso.test') // the backend's own
    const response = await send(gateway, '/owa/', { dispatcher: await labClient() })
    expect(response.status).toBe(200)
    expect(gateway.frontDoor.counters.passthroughConnections).toBe(1)
  })

  it('survives fuzzed, truncated, slow and oversized hellos, and keeps serving', async () => {
    const recorder = await recordingBackend()
    const gateway = await mixedGateway([recorder.url], { listen: { host: '127.0.0.1', port: 0, handshakeTimeoutMs: 300 } })
    const port = gateway.address.port
    const attacks: Array<Buffer | 'silent'> = [
      Buffer.from('GET / HTTP/1.1\r\nHost: eas.contoso.test\r\n\r\n'),
      Buffer.from([22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
      (await captureClientHello('eas.contoso.test')).subarray(0, 40),
      Buffer.from([22, 3, 1, 0x40, 0x00]),
      'silent'
    ]
    for (let i = 0; i < 50; i++) attacks.push(Buffer.from(Array.from({ length: 1 + (i * 37) % 200 }, (_, j) => (i * 31 + j * 7) % 256)))
    await Promise.all(attacks.map((attack) => new Promise<void>((resolve) => {
      const socket = netConnect({ host: '127.0.0.1', port }, () => { if (attack !== 'silent') socket.write(attack) })
      socket.on('error', () => undefined)
      socket.on('close', () => resolve())
      socket.setTimeout(5_000, () => socket.destroy())
    })))
    expect(gateway.frontDoor.counters.helloFailures).toBeGreaterThanOrEqual(5)
    expect(recorder.received().length).toBe(0)
    expect((await send(gateway, '/owa/', { dispatcher: await labClient() })).status).toBe(200)
  })

  it('routes a hello that arrives one byte at a time or in several records, and relays it byte for byte', async () => {
    const recorder = await recordingBackend()
    const gateway = await mixedGateway([recorder.url])
    const port = gateway.address.port
    const hello = splitIntoRecords(await captureClientHello('eas.contoso.test'), 64)
    const socket = netConnect({ host: '127.0.0.1', port })
    socket.on('error', () => undefined)
    await new Promise((resolve) => socket.once('connect', resolve))
    for (const byte of hello) {
      socket.write(Buffer.from([byte]))
      await sleep(1)
    }
    await expect.poll(() => recorder.received()[0]?.length ?? 0, { timeout: 5_000 }).toBe(hello.length)
    expect(recorder.received()[0]!.equals(hello)).toBe(true)
    socket.destroy()
  })

  it('avoids a backend that refuses connections', async () => {
    const pki = await labPki()
    const backend = await casBackend()
    const gateway = await mixedGateway([`https://127.0.0.1:${await closedPort()}`, backend.url])
    for (let i = 0; i < 5; i++) expect(await peerName(gateway.address.port, 'eas.contoso.test', pki.root.certPem)).toBe('eas.contoso.test')
  })

  it('closes both sides when the backend hangs up first, leaking no descriptors', async () => {
    const hangUp = await recordingBackend({ hangUp: true })
    const gateway = await mixedGateway([hangUp.url])
    const hello = await captureClientHello('eas.contoso.test')
    const count = (): number => readdirSync('/proc/self/fd').length
    const one = (): Promise<void> => new Promise((resolve) => {
      const socket: Socket = netConnect({ host: '127.0.0.1', port: gateway.address.port }, () => socket.write(hello))
      socket.on('error', () => undefined)
      socket.on('close', () => resolve())
    })
    await one()
    const before = count()
    for (let round = 0; round < 10; round++) await Promise.all(Array.from({ length: 20 }, one))
    await expect.poll(count, { timeout: 5_000 }).toBeLessThanOrEqual(before + 2)
    await expect.poll(() => gateway.pools.get('eas')!.servers[0]!.connections).toBe(0)
    expect(gateway.frontDoor.connections).toBe(0)
  })

  it('carries a half-close: the client ends its side and still gets the whole answer', async () => {
    const answer = Buffer.alloc(256 * 1024, 'a')
    const server = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('data', () => undefined)
      socket.on('end', () => socket.end(answer))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const gateway = await mixedGateway([`https://127.0.0.1:${(server.address() as AddressInfo).port}`])
    const hello = await captureClientHello('eas.contoso.test')
    const received = await new Promise<number>((resolve, reject) => {
      let total = 0
      const socket = netConnect({ host: '127.0.0.1', port: gateway.address.port, allowHalfOpen: true }, () => socket.end(hello))
      socket.on('data', (chunk: Buffer) => { total += chunk.length })
      socket.on('end', () => resolve(total))
      socket.on('error', reject)
    })
    expect(received).toBe(answer.length)
  })

  it('holds a lease for each passthrough connection: a drain deadline cuts it, a new connection goes elsewhere', async () => {
    const pki = await labPki()
    const backend = await casBackend()
    const gateway = await mixedGateway([backend.url], { admin: { host: '127.0.0.1', port: 0 } })
    const socket = tlsConnect({ host: '127.0.0.1', port: gateway.address.port, servername: 'eas.contoso.test', ca: pki.root.certPem })
    await new Promise((resolve) => socket.once('secureConnect', resolve))
    socket.on('error', () => undefined)
    const closed = new Promise((resolve) => socket.once('close', resolve))
    const eas = gateway.pools.get('eas')!.servers[0]!
    expect(eas.connections).toBe(1)
    const drained = await admin(gateway, `/backends/${eas.name}/drain`, { deadlineMs: 200 })
    expect(drained.status).toBe(200)
    await closed
    await expect.poll(() => eas.connections).toBe(0)
    expect(gateway.logs.lines.find((line) => line.msg === 'drain deadline reached')).toMatchObject({ cutPassthroughConnections: 1 })
  })

  it('shows open passthrough connections per backend on the admin listener', async () => {
    const pki = await labPki()
    const backend = await casBackend()
    const gateway = await mixedGateway([backend.url], { admin: { host: '127.0.0.1', port: 0 } })
    const socket = tlsConnect({ host: '127.0.0.1', port: gateway.address.port, servername: 'eas.contoso.test', ca: pki.root.certPem })
    await new Promise((resolve) => socket.once('secureConnect', resolve))
    onTestFinished(() => { socket.destroy() })
    const status = (await admin(gateway, '/status')).json as { pools: Record<string, { servers: Array<{ passthroughConnections: number }> }>, frontDoor: { passthroughConnections: number } }
    expect(status.pools.eas!.servers[0]!.passthroughConnections).toBe(1)
    expect(status.frontDoor.passthroughConnections).toBe(1)
  })
})
