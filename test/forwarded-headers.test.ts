import { describe, expect, it } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { labClient, send, startEmulators, startLabGateway } from './helpers/lab.js'

describe('X-Forwarded-* from the client are trusted only from configured proxies', () => {
  it('replaces what an untrusted client claims', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url) })
    const echo = JSON.parse((await send(gateway, '/owa/', {
      dispatcher: await labClient(),
      headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-host': 'evil.example', 'x-real-ip': '203.0.113.9', forwarded: 'for=203.0.113.9' }
    })).text) as EchoBody
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(echo.headers['x-forwarded-host']).toBe('mail.contoso.test')
    expect(echo.headers['x-real-ip']).toBeUndefined()
    expect(echo.headers.forwarded).toBeUndefined()
  })

  it('appends to the chain of a trusted proxy in front of casgate', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { trustProxy: ['127.0.0.0/8'] } })
    const echo = JSON.parse((await send(gateway, '/owa/', {
      dispatcher: await labClient(),
      headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' }
    })).text) as EchoBody
    expect(echo.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1')
  })
})
