import { connect as netConnect } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { addressKey } from '../src/util/address-key.js'
import type { Gateway } from '../src/gateway/gateway.js'
import { captureClientHello } from './helpers/client-hello.js'
import { labClient, labPki, rawExchange, send, startEmulators, startLabGateway } from './helpers/lab.js'

// What the front door holds before any request is read: how many connections, from whom, how
// long a handshake may take, and how large a request head may be.

type Opened = { state: 'served', socket: TLSSocket } | { state: 'closed' | 'unexpected answer' }

/** open connects from `localAddress` (any of 127/8 reaches loopback on Linux) and asks for /owa/. */
async function open (gateway: Gateway, localAddress: string): Promise<Opened> {
  const pki = await labPki()
  return new Promise((resolve) => {
    const raw = netConnect({ host: '127.0.0.1', port: gateway.address.port, localAddress })
    const socket = tlsConnect({ socket: raw, servername: 'mail.contoso.test', ca: pki.root.certPem }, () => {
      socket.write('GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n')
    })
    onTestFinished(() => { socket.destroy() })
    raw.on('error', () => undefined)
    socket.once('data', (chunk: Buffer) => {
      resolve(chunk.toString('latin1').startsWith('HTTP/1.1 200') ? { state: 'served', socket } : { state: 'unexpected answer' })
    })
    socket.on('error', () => undefined)
    socket.once('close', () => resolve({ state: 'closed' }))
  })
}

function warnings (gateway: Gateway & { logs: { lines: Array<Record<string, unknown>> } }, limit: string) {
  return gateway.logs.lines.filter((line) => String(line.msg).includes(limit))
}

async function limitedGateway (listen: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const [emulator] = await startEmulators(1)
  return startLabGateway({ mode: 'offload', servers: [emulator!.url], listen, extra })
}

describe('connections per address and in total', () => {
  it('closes the 4th connection from one address at once, serves the first 3 and other addresses, warns once a minute', async () => {
    const gateway = await limitedGateway({ maxConnectionsPerAddress: 3 })
    const first = await Promise.all([1, 2, 3].map(() => open(gateway, '127.0.0.1')))
    expect(first.map((o) => o.state)).toEqual(['served', 'served', 'served'])
    for (let i = 0; i < 3; i++) expect((await open(gateway, '127.0.0.1')).state).toBe('closed')
    expect((await open(gateway, '127.0.0.2')).state).toBe('served')
    expect(gateway.frontDoor.counters.refusedAtAddressLimit).toBe(3)
    const lines = warnings(gateway, 'maxConnectionsPerAddress')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatchObject({ level: 40, client: '127.0.0.1', limit: 3, open: 3 })

    // A closed connection frees its place.
    if (first[0]!.state === 'served') first[0]!.socket.destroy()
    await expect.poll(() => gateway.frontDoor.connections).toBe(3)
    expect((await open(gateway, '127.0.0.1')).state).toBe('served')

    // A minute later, the same flood is worth one more line.
    vi.useFakeTimers({ toFake: ['Date'] })
    onTestFinished(() => { vi.useRealTimers() })
    vi.setSystemTime(Date.now() + 61_000)
    expect((await open(gateway, '127.0.0.1')).state).toBe('closed')
    expect((await open(gateway, '127.0.0.1')).state).toBe('closed')
    expect(warnings(gateway, 'maxConnectionsPerAddress')).toHaveLength(2)
  })

  it('closes connections beyond maxConnections whatever their address, warning once', async () => {
    const gateway = await limitedGateway({ maxConnections: 2 })
    expect((await open(gateway, '127.0.0.1')).state).toBe('served')
    expect((await open(gateway, '127.0.0.2')).state).toBe('served')
    expect((await open(gateway, '127.0.0.3')).state).toBe('closed')
    expect((await open(gateway, '127.0.0.4')).state).toBe('closed')
    expect(gateway.frontDoor.counters.refusedAtTotalLimit).toBe(2)
    expect(warnings(gateway, 'maxConnections)')).toHaveLength(1)
  })

  it('does not limit a trusted proxy per address; others still are', async () => {
    const gateway = await limitedGateway({ maxConnectionsPerAddress: 2 }, { trustProxy: ['127.0.0.3'] })
    for (let i = 0; i < 3; i++) expect((await open(gateway, '127.0.0.3')).state).toBe('served')
    expect((await open(gateway, '127.0.0.4')).state).toBe('served')
    expect((await open(gateway, '127.0.0.4')).state).toBe('served')
    expect((await open(gateway, '127.0.0.4')).state).toBe('closed')
  })

  it('counts IPv4 (also IPv4-mapped) by address and IPv6 by /64', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7')
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7')
    // Privacy addresses of one phone (RFC 8981) share its /64.
    expect(addressKey('2001:db8:1:2:a1b2:c3d4:e5f6:1')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:0DB8:0001:0002::9')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:db8::1:2:3:4:5')).toBe('2001:db8:0:1::/64')
    expect(addressKey('2001:db8:1:3::1')).not.toBe(addressKey('2001:db8:1:2::1'))
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64')
    expect(addressKey('64:ff9b::192.0.2.7')).toBe('64:ff9b:0:0::/64')
  })
})

describe('handshake and header timeouts', () => {
  /** stall sends the first half of a ClientHello a byte at a time and times when the gateway hangs up. */
  async function stall (gateway: Gateway): Promise<number> {
    const hello = await captureClientHello('mail.contoso.test')
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host: '127.0.0.1', port: gateway.address.port }, () => {
        const started = performance.now()
        let sent = 0
        // Dripping, not just silent: the bound must hold for a client that keeps sending too.
        const drip = setInterval(() => { if (sent < hello.length / 2) socket.write(hello.subarray(sent, ++sent)) }, 20)
        socket.once('close', () => { clearInterval(drip); resolve(performance.now() - started) })
      })
      onTestFinished(() => { socket.destroy() })
      socket.on('error', () => undefined)
      setTimeout(() => reject(new Error('the gateway kept a half ClientHello open for 5 s')), 5_000).unref()
    })
  }

  it('closes a connection whose TLS handshake takes longer than listen.handshakeTimeoutMs', async () => {
    const gateway = await limitedGateway({ handshakeTimeoutMs: 300 })
    expect(await stall(gateway)).toBeGreaterThanOrEqual(250)
    expect(gateway.frontDoor.counters.handshakeFailures).toBe(1)
  })

  it('bounds the ClientHello peek of a gateway with a passthrough host the same way', async () => {
    const [emulator] = await startEmulators(1)
    const gateway = await startLabGateway({
      mode: 'offload',
      servers: [emulator!.url],
      listen: { handshakeTimeoutMs: 300 },
      extra: {
        // The peek never ends, so the passthrough backend is never dialled.
        pools: { cas: { servers: [emulator!.url] }, eas: { servers: ['https://127.0.0.1:9'] } },
        hostsExtra: [{ names: ['eas.contoso.test'], mode: 'passthrough', pool: 'eas' }],
        health: { enabled: false }
      }
    })
    expect(await stall(gateway)).toBeGreaterThanOrEqual(250)
    expect(gateway.frontDoor.counters.helloFailures).toBe(1)
  })

  it('answers and closes a request head still incomplete after listen.headersTimeoutMs', async () => {
    const gateway = await limitedGateway({ headersTimeoutMs: 300 })
    const pki = await labPki()
    const { elapsed, answer } = await new Promise<{ elapsed: number, answer: string }>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: gateway.address.port, servername: 'mail.contoso.test', ca: pki.root.certPem }, () => {
        const started = performance.now()
        socket.write('GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n')
        // A header line a byte at a time, never finished (slowloris).
        const drip = setInterval(() => socket.write('X'), 20)
        let answer = ''
        socket.on('data', (chunk: Buffer) => { answer += chunk.toString('latin1') })
        socket.once('close', () => { clearInterval(drip); resolve({ elapsed: performance.now() - started, answer }) })
      })
      onTestFinished(() => { socket.destroy() })
      socket.on('error', () => undefined)
      setTimeout(() => reject(new Error('the gateway kept an unfinished request head open for 5 s')), 5_000).unref()
    })
    expect(elapsed).toBeGreaterThanOrEqual(250)
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/)
    expect(answer).toContain('"message":"malformed request: request head not received in time"')
  })
})

describe('listen.maxHeaderBytes', () => {
  const negotiate = (bytes: number): string => `Negotiate ${'YII'.padEnd(bytes, 'A')}`

  it('passes a 40 KiB Kerberos token through; answers a 70 KiB one 431 and keeps serving', async () => {
    const [emulator] = await startEmulators(1)
    // The emulated Exchange server is set up per KB2020943 (64 KiB of headers).
    const gateway = await startLabGateway({ mode: 'offload', servers: [emulator!.url] })
    expect(gateway.config.listen.maxHeaderBytes).toBe(64 * 1024)
    const client = await labClient()

    const large = negotiate(40 * 1024)
    const passed = await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, headers: { authorization: large } })
    expect(passed.status).toBe(200)
    expect((JSON.parse(passed.text) as EchoBody).headers.authorization).toBe(large)

    const oversized = await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, headers: { authorization: negotiate(70 * 1024) } })
    expect(oversized.status).toBe(431)
    expect(oversized.headers['content-type']).toBe('application/json; charset=utf-8')
    expect(JSON.parse(oversized.text)).toEqual({
      statusCode: 431,
      code: 'CASGATE_ERR_HEADERS_TOO_LARGE',
      error: 'Request Header Fields Too Large',
      message: 'request headers are larger than 65536 bytes'
    })

    // A client still sending when refused gets the answer, not a reset that erases it.
    const flood = await rawExchange(gateway, `GET /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.contoso.test\r\nAuthorization: ${negotiate(1024 * 1024)}\r\n\r\n`)
    expect(flood).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/)
    expect(flood).toContain('"code":"CASGATE_ERR_HEADERS_TOO_LARGE"')
    expect(emulator!.requests).toBe(1)

    expect((await send(gateway, '/owa/', { dispatcher: client })).status).toBe(200)
  })

  it('answers what Node\'s parser refuses in casgate\'s shape', async () => {
    const [emulator] = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: [emulator!.url] })
    const answer = await rawExchange(gateway, 'GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: 1x\r\n\r\n')
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/)
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({
      statusCode: 400,
      code: 'CASGATE_ERR_BAD_REQUEST',
      error: 'Bad Request',
      message: 'malformed request: invalid character in content-length'
    })
    expect(emulator!.requests).toBe(0)
  })
})

describe('retiring', () => {
  it('retire(maxMs) ends at its deadline while a client still holds a connection (it does not wait for the client)', async () => {
    const gateway = await limitedGateway({ handshakeTimeoutMs: 120_000 })
    // A client that connects and says nothing: only the handshake timeout (2 min) would end it.
    const raw = netConnect({ host: '127.0.0.1', port: gateway.address.port })
    onTestFinished(() => { raw.destroy() })
    raw.on('error', () => undefined)
    const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()))
    await expect.poll(() => gateway.frontDoor.connections).toBe(1)
    await gateway.retire(300)
    // Past the deadline the retiring configuration cut what was left.
    await closed
  }, 15_000)
})
