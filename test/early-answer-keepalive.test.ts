import { connect as tlsConnect } from 'node:tls'
import { describe, expect, it } from 'vitest'
import { labPki, startEmulators, startLabGateway } from './helpers/lab.js'

// When an answer comes before the whole request body was read — Exchange's 401 to an NTLM or
// Negotiate upload, a redirect, or casgate's own 502 — the rest of the body must still be read
// off the client's connection, or the next request on it is never answered (issue 13, part 5:
// the connection froze until a timeout). Each case sends an upload whose answer comes early,
// then the rest of its body, then a second request on the same connection.

async function uploadThenAsk (port: number, target: string): Promise<{ first: string, second: string }> {
  const pki = await labPki()
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'mail.contoso.test', ca: pki.root.certPem })
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString('latin1') })
  socket.on('error', () => undefined)
  const wait = async (done: () => boolean): Promise<void> => {
    for (let i = 0; i < 250 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  socket.write(`POST ${target} HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: ${256 * 1024}\r\n\r\n`)
  socket.write(Buffer.alloc(64 * 1024, 'u'))
  await wait(() => received.includes('\r\n\r\n'))
  const first = received
  received = ''
  // The client sends the rest of its body (it cannot know), then its next request.
  socket.write(Buffer.alloc(192 * 1024, 'u'))
  socket.write('GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n')
  await wait(() => received.includes('\r\n\r\n'))
  socket.destroy()
  return { first: first.split('\r\n')[0]!, second: received.split('\r\n')[0] ?? '' }
}

describe('an answer before the end of the request body', () => {
  it.each([
    ['a redirect', '/owa/__casgate/redirect?to=/owa/', 'HTTP/1.1 302'],
    ['casgate\'s 502 after the backend reset', '/owa/__casgate/reset', 'HTTP/1.1 502']
  ])('leaves the connection usable after %s', async (_name, target, status) => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { health: { enabled: false } } })
    const { first, second } = await uploadThenAsk(gateway.address.port, target)
    expect(first.startsWith(status)).toBe(true)
    expect(second).toBe('HTTP/1.1 200 OK')
  })
})
