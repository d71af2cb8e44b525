import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { labClient, send, startLabGateway } from './helpers/lab.js'

// Optional response hardening: Microsoft's mitigation for CVE-2026-42897 (script-src-attr 'none'
// appended to the Content-Security-Policy of OWA's HTML) and HSTS on every response of the front.

/** startOwa answers HTML with the policy given in `?csp=` (none when absent), and JSON elsewhere. */
async function startOwa (): Promise<string> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://owa')
    const csp = url.searchParams.get('csp')
    if (url.pathname.endsWith('.json')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      return
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', ...(csp === null ? {} : { 'content-security-policy': csp }) }).end('<html><body onload="x()">OWA</body></html>')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

describe('response hardening', () => {
  it('appends script-src-attr \'none\' to OWA\'s HTML policies, adds one where there is none, and leaves other vdirs and non-HTML alone', async () => {
    const gateway = await startLabGateway({ mode: 'offload', servers: [await startOwa()], vdirs: { '/owa': { cspScriptSrcAttrNone: true } }, extra: { health: { enabled: false } } })
    const client = await labClient()
    const csp = async (path: string): Promise<unknown> => (await send(gateway, path, { dispatcher: client })).headers['content-security-policy']
    expect(await csp('/owa/')).toBe("script-src-attr 'none'")
    expect(await csp(`/owa/?csp=${encodeURIComponent("default-src 'self'; script-src 'self' 'nonce-x';")}`)).toBe("default-src 'self'; script-src 'self' 'nonce-x'; script-src-attr 'none'")
    // A policy that already says something of attributes keeps its own word.
    expect(await csp(`/owa/?csp=${encodeURIComponent("script-src-attr 'unsafe-hashes'")}`)).toBe("script-src-attr 'unsafe-hashes'")
    expect(await csp('/owa/service.json')).toBeUndefined()
    expect(await csp('/EWS/page')).toBeUndefined()
    // Off by default: no hardening header is added.
    expect((await send(gateway, '/owa/', { dispatcher: client })).headers['strict-transport-security']).toBeUndefined()
  })

  it('sends Strict-Transport-Security on proxied responses and on casgate\'s own answers when hsts is configured', async () => {
    const gateway = await startLabGateway({ mode: 'offload', servers: [await startOwa()], extra: { health: { enabled: false }, hsts: { maxAgeSeconds: 31536000, includeSubDomains: true } } })
    const client = await labClient()
    for (const path of ['/owa/', '/not-published/', '/owa/%zz']) {
      expect((await send(gateway, path, { dispatcher: client })).headers['strict-transport-security'], path).toBe('max-age=31536000; includeSubDomains')
    }
  })
})
