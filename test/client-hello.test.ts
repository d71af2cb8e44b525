import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { parseClientHello } from '../src/front/client-hello.js'
import { captureClientHello, splitIntoRecords } from './helpers/client-hello.js'

describe('ClientHello parsing', () => {
  it('reads SNI and ALPN from a real client hello', async () => {
    const hello = await captureClientHello('EAS.Contoso.test')
    const result = parseClientHello(hello)
    expect(result).toEqual({ state: 'complete', hello: { serverName: 'eas.contoso.test', alpn: [] } })
  })

  it('reports no server name when the client sends none', async () => {
    const result = parseClientHello(await captureClientHello())
    expect(result.state === 'complete' && result.hello.serverName).toBeUndefined()
  })

  it('waits for more at every cut of a hello, then completes', async () => {
    const hello = await captureClientHello('mail.contoso.test')
    for (let cut = 0; cut < hello.length; cut++) expect(parseClientHello(hello.subarray(0, cut)).state, `cut ${cut}`).toBe('partial')
    expect(parseClientHello(hello).state).toBe('complete')
  })

  it('gathers a hello split over several TLS records', async () => {
    const split = splitIntoRecords(await captureClientHello('mail.contoso.test'), 50)
    const result = parseClientHello(split)
    expect(result.state === 'complete' && result.hello.serverName).toBe('mail.contoso.test')
  })

  it('refuses what is not a hello, never throwing', () => {
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toMatchObject({ state: 'invalid', reason: 'not a TLS handshake' })
    expect(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]))).toMatchObject({ state: 'invalid', reason: 'hello too large' })
    expect(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0]))).toMatchObject({ state: 'invalid' })
    for (let i = 0; i < 2000; i++) {
      const noise = randomBytes(1 + (i % 300))
      if (i % 2 === 0) noise[0] = 22
      if (i % 4 === 0) noise[1] = 3
      expect(['partial', 'invalid', 'complete']).toContain(parseClientHello(noise).state)
    }
  })

  it('refuses a hello whose inner lengths lie', async () => {
    const hello = Buffer.from(await captureClientHello('mail.contoso.test'))
    // Session id length byte (after 5 record + 4 handshake + 2 version + 32 random) claims 255.
    hello[5 + 4 + 2 + 32] = 255
    expect(parseClientHello(hello).state).toBe('invalid')
  })
})
