import { describe, expect, it } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { labClient, labPki, rawExchange, send, startEmulators, startLabGateway } from './helpers/lab.js'

describe('reencrypt transport', () => {
  it('sends the configured server name as SNI, not the client\'s Host, and verifies the backend against it', async () => {
    const pki = await labPki()
    const servers = await startEmulators(1, { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem })
    const gateway = await startLabGateway({ mode: 'reencrypt', servers: servers.map((s) => s.url), pool: { serverName: 'autodiscover.contoso.test' } })
    const echo = JSON.parse((await send(gateway, '/owa/', { dispatcher: await labClient() })).text) as EchoBody
    expect(echo.headers.host).toBe('mail.contoso.test')
    expect(echo.tls?.servername).toBe('autodiscover.contoso.test')
  })

  it('refuses a backend whose certificate the pool CA did not sign: 502 with a TLS code', async () => {
    const { createLabPki } = await import('../src/certificates/lab-ca.js')
    const stranger = await createLabPki(['127.0.0.1'])
    const servers = await startEmulators(1, { certPem: stranger.server.certPem + stranger.intermediate.certPem, keyPem: stranger.server.keyPem })
    // Extended Protection off: its start-up check would already refuse this backend's certificate.
    // Health off: its first probe fails the same way and, on a busy box, can take the server out
    // before the request is sent (a 503 then, not the 502 under test).
    const gateway = await startLabGateway({ mode: 'reencrypt', servers: servers.map((s) => s.url), extendedProtection: false, extra: { health: { enabled: false } } })
    const response = await send(gateway, '/owa/', { dispatcher: await labClient() })
    expect(response.status).toBe(502)
    expect(JSON.parse(response.text).code).toBe('CASGATE_ERR_UPSTREAM_TLS')
    expect(servers[0]!.requests).toBe(0)
  })
})

describe.each(['offload', 'reencrypt'] as const)('%s mode', (mode) => {
  async function setup () {
    const pki = await labPki()
    const servers = await startEmulators(2, mode === 'reencrypt' ? { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem } : undefined)
    const gateway = await startLabGateway({ mode, servers: servers.map((s) => s.url) })
    return { servers, gateway, client: await labClient() }
  }

  it('runs as the plugin of its host\'s mode, and only that one', async () => {
    const { gateway } = await setup()
    const other = mode === 'offload' ? 'reencrypt' : 'offload'
    expect(gateway.app.hasPlugin(`casgate-${mode}`)).toBe(true)
    expect(gateway.app.hasPlugin(`casgate-${other}`)).toBe(false)
    expect(gateway.app.hasPlugin('casgate-passthrough')).toBe(false)
  })

  it('forwards a published vdir to a backend, keeping Host and describing the client', async () => {
    const { gateway, client } = await setup()
    const response = await send(gateway, '/owa/service.svc?action=GetFolder', { dispatcher: client, headers: { 'x-forwarded-for': '6.6.6.6', via: '1.1 evil' } })
    expect(response.status).toBe(200)
    const echo = JSON.parse(response.text) as EchoBody
    expect(echo.url).toBe('/owa/service.svc?action=GetFolder')
    expect(echo.headers.host).toBe('mail.contoso.test')
    expect(echo.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(echo.headers['x-forwarded-proto']).toBe('https')
    expect(echo.headers['x-forwarded-host']).toBe('mail.contoso.test')
    expect(response.headers['x-backend']).toMatch(/^ex[12]$/)
  })

  it('matches vdirs case-insensitively and spreads requests over the pool', async () => {
    const { gateway, client, servers } = await setup()
    for (const path of ['/OWA/', '/owa/x', '/Owa/y', '/microsoft-server-activesync?Cmd=Sync', '/EWS/Exchange.asmx', '/ews/exchange.asmx']) {
      expect((await send(gateway, path, { dispatcher: client })).status).toBe(200)
    }
    expect(servers[0]!.requests).toBeGreaterThan(0)
    expect(servers[1]!.requests).toBeGreaterThan(0)
  })

  it('answers unpublished paths itself with 404 and forwards nothing', async () => {
    const { gateway, client, servers } = await setup()
    for (const path of ['/', '/ecp/', '/PowerShell/', '/owa2/', '/aspnet_client/x.js']) {
      const response = await send(gateway, path, { dispatcher: client })
      expect(response.status, path).toBe(404)
      expect(JSON.parse(response.text)).toMatchObject({ statusCode: 404, code: 'CASGATE_ERR_NOT_PUBLISHED' })
    }
    expect(servers[0]!.requests + servers[1]!.requests).toBe(0)
  })

  it('rejects traversal and bad encoding with 400 and keeps serving', async () => {
    const { gateway, client, servers } = await setup()
    for (const path of ['/owa/%2e%2e/ecp/', '/owa/%zz']) {
      const response = await send(gateway, path, { dispatcher: client })
      expect(response.status, path).toBe(400)
      expect(JSON.parse(response.text).code).toBe('CASGATE_ERR_BAD_REQUEST')
    }
    expect(servers[0]!.requests + servers[1]!.requests).toBe(0)
    expect((await send(gateway, '/owa/', { dispatcher: client })).status).toBe(200)
  })

  it('strips hop-by-hop headers both ways and adds no Via', async () => {
    const { gateway, client } = await setup()
    const response = await send(gateway, '/owa/', {
      dispatcher: client,
      headers: { 'proxy-authorization': 'Basic Zm9vOmJhcg==', te: 'trailers', 'x-emulator-hop': '1' }
    })
    const echo = JSON.parse(response.text) as EchoBody
    for (const name of ['proxy-authorization', 'te', 'via']) expect(echo.headers[name], name).toBeUndefined()
    // The backend named x-backend-private in its Connection header: it must not reach the client.
    expect(response.headers['x-backend-private']).toBeUndefined()
    expect(response.headers.connection).not.toContain('x-backend-private')
    expect(response.headers.via).toBeUndefined()
  })

  it('drops the headers a client names in Connection (raw request, as a client sends it)', async () => {
    const { gateway } = await setup()
    const answer = await rawExchange(gateway, 'GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close, x-secret\r\nX-Secret: drop me\r\nKeep-Alive: timeout=5\r\n\r\n')
    expect(answer).toMatch(/^HTTP\/1\.1 200/)
    const echo = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as EchoBody
    expect(echo.headers['x-secret']).toBeUndefined()
    expect(echo.headers['keep-alive']).toBeUndefined()
    expect(answer.toLowerCase()).toContain('connection: close')
  })

  it('writes one access line per request with secrets redacted', async () => {
    const { gateway, client } = await setup()
    await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'POST', body: '<soap/>', headers: { authorization: 'Basic dXNlcjpodW50ZXIy', cookie: 'X-OWA-CANARY=abc' } })
    const access = gateway.logs.lines.filter((line) => line.component === 'access')
    expect(access).toHaveLength(1)
    expect(access[0]).toMatchObject({ method: 'POST', url: '/EWS/Exchange.asmx', vdir: '/EWS', status: 200, backend: expect.stringMatching(/127\.0\.0\.1:\d+/) })
    const everything = gateway.logs.raw.join('')
    expect(everything).not.toContain('dXNlcjpodW50ZXIy')
    expect(everything).not.toContain('X-OWA-CANARY')
  })
})
