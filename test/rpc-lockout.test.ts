import { createServer, type AddressInfo, type Socket } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { basicCredentials } from '../src/auth/basic.js'
import { ResponseStatusWatch } from '../src/proxy/response-heads.js'
import { rawExchange, startLabGateway } from './helpers/lab.js'
import { usersFile } from './helpers/users.js'

// Outlook Anywhere with Basic authentication: /rpc is never preauthenticated (Outlook cannot
// answer casgate), so Exchange checks the password. Its 401s must count against the lockout as
// casgate's own refusals do, or /rpc is a password-guessing channel around it (issue 12, item 4).

const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

/** startRpcProxy plays IIS's rpcproxy.dll with Basic: 401 to a wrong password, 200 to jdoe's. */
async function startRpcProxy (): Promise<{ url: string, seen: string[] }> {
  const seen: string[] = []
  const server = createServer((socket: Socket) => {
    let buffer = ''
    socket.on('error', () => socket.destroy())
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1')
      let end: number
      while ((end = buffer.indexOf('\r\n\r\n')) !== -1) {
        const head = buffer.slice(0, end)
        buffer = buffer.slice(end + 4)
        const authorization = /\r\nauthorization: ([^\r]*)/i.exec(head)?.[1]
        const credentials = basicCredentials(authorization)
        seen.push(credentials?.user ?? '-')
        if (credentials?.user === 'jdoe' && credentials.password === 'Correct-Horse-1') socket.write('HTTP/1.1 200 Success\r\nContent-Length: 2\r\n\r\nok')
        else socket.write('HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="mail"\r\nContent-Length: 12\r\n\r\nUnauthorized')
        if (/\r\nconnection: close/i.test(head)) socket.end()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

describe('Outlook Anywhere and the lockout', () => {
  it('counts Exchange\'s 401s to Basic on /rpc: after five, casgate answers itself and nothing reaches Exchange', async () => {
    const exchange = await startRpcProxy()
    const users = await usersFile({ jdoe: 'Correct-Horse-1' })
    const gateway = await startLabGateway({ mode: 'offload', servers: [exchange.url], extra: { health: { enabled: false }, preauth: { usersFile: users } } })
    const rpc = (password: string, last = true): string => `RPC_IN_DATA /rpc/rpcproxy.dll?ex1:6001 HTTP/1.1\r\nHost: mail.contoso.test\r\nAuthorization: ${basic('jdoe', password)}\r\nContent-Length: 0\r\n${last ? 'Connection: close\r\n' : ''}\r\n`
    const statuses: string[] = []
    // Two guesses per connection: the second rides behind the first, as a guesser would try.
    for (let i = 0; i < 5; i++) {
      const answer = await rawExchange(gateway, rpc(`guess-${2 * i}`, false) + rpc(`guess-${2 * i + 1}`))
      statuses.push(...[...answer.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((match) => match[1]!))
    }
    expect(exchange.seen.length).toBeLessThanOrEqual(6)
    expect(exchange.seen.length).toBeGreaterThanOrEqual(5)
    expect(statuses.every((status) => status === '401')).toBe(true)
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-failed' && line.via === 'exchange').length).toBe(exchange.seen.length)
    expect(gateway.logs.lines.some((line) => line.event === 'preauth-lockout' && line.user === 'jdoe')).toBe(true)
    // Locked for this source now, the right password too gets casgate's 401, unforwarded.
    const before = exchange.seen.length
    expect(await rawExchange(gateway, rpc('Correct-Horse-1'))).toMatch(/^HTTP\/1\.1 401/)
    expect(exchange.seen.length).toBe(before)
  })
})

describe('ResponseStatusWatch', () => {
  it('reads each status in order across chunk boundaries, and stops at framing it cannot follow', () => {
    const seen: number[] = []
    const watch = new ResponseStatusWatch((status) => seen.push(status))
    const stream = Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHTTP/1.1 401 x\r\n')
    for (let i = 0; i < stream.length; i += 7) watch.feed(stream.subarray(i, i + 7))
    expect(seen).toEqual([401, 204, 200])
    expect(watch.watching).toBe(false)
  })
})
