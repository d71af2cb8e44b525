import { createServer, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { labClient, labPki, rawExchange, send, startEmulators, startLabGateway } from './helpers/lab.js'

// Outlook Anywhere's RPC_* requests are read by casgate's own parser. These are the ways around
// the gateway that a raw pipe after the first request line allowed: each is sent over a real
// TLS socket and the emulated Exchange server's log of requests proves what reached it.

const RPC = 'RPC_IN_DATA /rpc/rpcproxy.dll?ex1.contoso.local:6001 HTTP/1.1\r\nHost: mail.contoso.test\r\n'

async function rpcLab (mode: 'offload' | 'reencrypt', listen: Record<string, unknown> = {}) {
  const pki = await labPki()
  const servers = await startEmulators(1, mode === 'reencrypt' ? { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem } : undefined)
  const gateway = await startLabGateway({ mode, servers: servers.map((s) => s.url), listen, extra: { health: { enabled: false } } })
  return { gateway, server: servers[0]! }
}

/** open starts a TLS conversation with the gateway; `answer` collects all it says. */
async function open (port: number): Promise<{ socket: TLSSocket, answer: () => string, closed: Promise<void> }> {
  const pki = await labPki()
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'mail.contoso.test', ca: pki.root.certPem })
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
  let text = ''
  socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  return { socket, answer: () => text, closed }
}

describe.each(['offload', 'reencrypt'] as const)('RPC over HTTP cannot carry anything past casgate (%s)', (mode) => {
  it('never forwards requests pipelined behind an RPC request: each is parsed, and the connection closes', async () => {
    const { gateway, server } = await rpcLab(mode)
    for (const smuggled of [
      'GET /powershell/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n',
      'POST /ecp/DDI/DDIService.svc/GetList HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: 2\r\n\r\n{}',
      'GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\nCookie: X-AnonResource-Backend=localhost/ecp/default.flt?~3; X-BEResource=localhost/owa/auth/logon.aspx?~3\r\n\r\n',
      'POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: 0\r\n\r\n'
    ]) {
      const before = server.seen.length
      const answer = await rawExchange(gateway, `${RPC}Content-Length: 0\r\n\r\n${smuggled}`)
      // The RPC request itself was forwarded and answered; what followed never left casgate.
      expect(answer, smuggled).toMatch(/^HTTP\/1\.1 200/)
      expect(server.seen.slice(before), smuggled).toEqual(['RPC_IN_DATA /rpc/rpcproxy.dll?ex1.contoso.local:6001'])
    }
    const refusals = gateway.logs.lines.filter((line) => line.tunnel === true && line.reason === 'not an RPC method')
    expect(refusals.map((line) => line.url)).toEqual(['/powershell/', '/ecp/DDI/DDIService.svc/GetList', '/owa/', '/EWS/Exchange.asmx'])
    expect((await send(gateway, '/owa/', { dispatcher: await labClient() })).status).toBe(200)
  })

  it('forwards exactly Content-Length bytes of body, then judges the next request head on the same upstream connection', async () => {
    const { gateway, server } = await rpcLab(mode)
    // The NTLM shape of Outlook Anywhere: an empty request, then the channel, on one connection.
    const answer = await rawExchange(gateway, `${RPC}Content-Length: 0\r\n\r\n${RPC}Content-Length: 5\r\n\r\nhello`)
    const echoes = answer.split('HTTP/1.1 200 OK').slice(1).map((part) => JSON.parse(part.slice(part.indexOf('{'))) as EchoBody)
    expect(echoes.map((echo) => echo.bodyBytes)).toEqual([0, 5])
    expect(echoes[0]!.connection).toBe(echoes[1]!.connection)
    // Behind an empty request the connection stays open to Exchange: a second head leaving /rpc is
    // refused there, and nothing of it is forwarded.
    const refused = await rawExchange(gateway, `${RPC}Content-Length: 0\r\n\r\n${RPC.replace('/rpc/rpcproxy.dll', '/rpc/../owa/')}Content-Length: 0\r\n\r\n`)
    expect(refused).toMatch(/^HTTP\/1\.1 200/)
    expect(server.seen).toEqual(Array.from({ length: 3 }, () => 'RPC_IN_DATA /rpc/rpcproxy.dll?ex1.contoso.local:6001'))
    expect(gateway.logs.lines.some((line) => line.tunnel === true && line.reason === 'path traversal' && line.url === '/rpc/../owa/?ex1.contoso.local:6001')).toBe(true)
  })

  it('refuses RPC targets that leave /rpc once decoded, before any backend is chosen', async () => {
    const { gateway, server } = await rpcLab(mode)
    for (const target of ['/rpc/../owa/', '/rpc/..%2f..%2fecp/', '/rpc/%2e%2e/powershell/', '/rpc/%2E%2E%5Cecp/', '/rpc/rpcproxy.dll#/x', '/rpc/..%252fecp/']) {
      const answer = await rawExchange(gateway, `RPC_IN_DATA ${target} HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: 1\r\n\r\nx`)
      expect(answer, target).toMatch(/^HTTP\/1\.1 4\d\d/)
    }
    expect(server.seen).toEqual([])
  })

  it('keeps the length it relays: a Connection header naming Content-Length cannot turn a body into a request', async () => {
    const { gateway, server } = await rpcLab(mode)
    const smuggled = 'GET /powershell/?x=1 HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n'
    const answer = await rawExchange(gateway, `${RPC}Connection: content-length\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`)
    expect(answer).toMatch(/^HTTP\/1\.1 200/)
    expect((JSON.parse(answer.slice(answer.indexOf('{'))) as EchoBody).bodyBytes).toBe(smuggled.length)
    expect(server.seen).toEqual(['RPC_IN_DATA /rpc/rpcproxy.dll?ex1.contoso.local:6001'])
  })

  it('refuses what HTTP framing cannot carry unambiguously', async () => {
    const { gateway, server } = await rpcLab(mode)
    for (const head of [
      `${RPC}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      `${RPC}Content-Length: 5\r\nContent-Length: 0\r\n\r\nhello`,
      `${RPC}Content-Length: 0\r\nAuthorization: Basic YTpi\r\nAuthorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==\r\n\r\n`,
      `${RPC}Content-Length: 0\r\nHost: evil.example\r\n\r\n`,
      `${RPC}Content-Length: 0\r\n folded: value\r\n\r\n`,
      `${RPC}Content-Length: 0\nX-Bare: lf\r\n\r\n`,
      `${RPC}Content-Length: -1\r\n\r\n`,
      `${RPC}Content-Length: 2147483648\r\n\r\n`,
      'RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.0\r\nHost: mail.contoso.test\r\nContent-Length: 0\r\n\r\n',
      'RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nContent-Length: 0\r\n\r\n'
    ]) {
      const answer = await rawExchange(gateway, head)
      expect(answer, JSON.stringify(head)).toMatch(/^HTTP\/1\.1 400/)
      expect(answer).toContain('CASGATE_ERR_BAD_REQUEST')
    }
    expect(server.seen).toEqual([])
  })

  it('sets the forwarding headers and strips hop-by-hop and front-end-only headers on RPC requests', async () => {
    const { gateway } = await rpcLab(mode)
    // A channel with a body: the emulated RPC proxy closes the connection after answering it.
    const answer = await rawExchange(gateway, `${RPC}Content-Length: 1\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: Keep-Alive, X-Private\r\nX-Private: 1\r\nX-CommonAccessToken: forged\r\nX-IsFromCafe: 1\r\n\r\nx`)
    const echo = JSON.parse(answer.slice(answer.indexOf('{'))) as EchoBody
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(echo.headers['x-forwarded-proto']).toBe('https')
    expect(echo.headers.host).toBe('mail.contoso.test')
    for (const name of ['connection', 'x-private', 'x-commonaccesstoken', 'x-isfromcafe']) expect(echo.headers[name], name).toBeUndefined()
  })

  it('closes a connection whose request head does not arrive in time, without opening a backend connection', async () => {
    const { gateway, server } = await rpcLab(mode, { headersTimeoutMs: 400 })
    for (const partial of ['RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\n', `${RPC}Content-Length: 0\r\nX-Slow: `]) {
      const client = await open(gateway.address.port)
      client.socket.write(partial)
      await client.closed
      expect(client.answer(), partial).toMatch(/^HTTP\/1\.1 400/)
    }
    expect(server.seen).toEqual([])
    expect(gateway.pools.get('cas')!.servers[0]!.outstanding).toBe(0)
  })

  it('counts an RPC channel on its server, and a drain deadline cuts it', async () => {
    const { gateway } = await rpcLab(mode)
    const backend = gateway.pools.get('cas')!.servers[0]!
    const client = await open(gateway.address.port)
    client.socket.write(`${RPC}Content-Length: 1073741824\r\n\r\nfirst bytes`)
    await expect.poll(() => backend.outstanding).toBe(1)
    expect(backend.leases.size).toBe(1)
    gateway.drain.drain(backend.name, undefined, 50)
    await client.closed
    expect(backend.outstanding).toBe(0)
    expect(backend.leases.size).toBe(0)
  })

  it('answers an oversized RPC request head with 431', async () => {
    const { gateway, server } = await rpcLab(mode, { maxHeaderBytes: 16 * 1024 })
    const answer = await rawExchange(gateway, `${RPC}Content-Length: 0\r\nAuthorization: Negotiate ${'A'.repeat(20_000)}\r\n\r\n`)
    expect(answer).toMatch(/^HTTP\/1\.1 431/)
    expect(answer).toContain('CASGATE_ERR_HEADERS_TOO_LARGE')
    expect(server.seen).toEqual([])
  })
})

describe('RPC connections are bounded in time', () => {
  it('gives up on a backend that takes the TCP connection and never answers TLS, within the pool\'s connect timeout', async () => {
    const accepted = new Set<Socket>()
    const silent = createServer((socket) => { accepted.add(socket.on('error', () => undefined)) })
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>((resolve) => {
      for (const socket of accepted) socket.destroy()
      silent.close(() => resolve())
    }))
    const gateway = await startLabGateway({ mode: 'reencrypt', servers: [`https://127.0.0.1:${(silent.address() as AddressInfo).port}`], pool: { connectTimeoutMs: 300 }, extendedProtection: false, extra: { health: { enabled: false } } })
    const answer = await rawExchange(gateway, `${RPC}Content-Length: 0\r\n\r\n`)
    expect(answer).toMatch(/^HTTP\/1\.1 504/)
    expect(answer).toContain('CASGATE_ERR_UPSTREAM_TIMEOUT')
    expect(gateway.pools.get('cas')!.servers[0]!.outstanding).toBe(0)
  })

  it('holds an idle connection between requests only for listen.idleTimeoutMs, not the vdir\'s 8 hours', async () => {
    const { gateway, server } = await rpcLab('offload', { idleTimeoutMs: 300 })
    const client = await open(gateway.address.port)
    client.socket.write(`${RPC}Content-Length: 0\r\n\r\n`)
    await client.closed
    expect(client.answer()).toMatch(/^HTTP\/1\.1 200/)
    expect(server.seen).toHaveLength(1)
    expect(gateway.pools.get('cas')!.servers[0]!.outstanding).toBe(0)
  })
})
