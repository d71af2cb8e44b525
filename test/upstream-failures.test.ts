import { closedPort } from './helpers/ports.js'
import { describe, expect, it } from 'vitest'
import { labClient, send, startEmulators, startLabGateway } from './helpers/lab.js'

describe('upstream failures map to status codes with stable error codes', () => {
  it('502 CASGATE_ERR_UPSTREAM_REFUSED when the backend refuses the connection', async () => {
    // Health off: under load, three failed probes could take the server out before the request arrives (503).
    const gateway = await startLabGateway({ mode: 'offload', servers: [`http://127.0.0.1:${await closedPort()}`], extra: { health: { enabled: false } } })
    const response = await send(gateway, '/owa/', { dispatcher: await labClient() })
    expect(response.status).toBe(502)
    expect(JSON.parse(response.text)).toEqual({ statusCode: 502, code: 'CASGATE_ERR_UPSTREAM_REFUSED', error: 'Bad Gateway', message: 'backend refused the connection' })
    expect(gateway.logs.lines.some((line) => line.msg === 'upstream request failed' && line.code === 'CASGATE_ERR_UPSTREAM_REFUSED')).toBe(true)
  })

  it('502 CASGATE_ERR_UPSTREAM_RESET when the backend drops the connection', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url) })
    const response = await send(gateway, '/owa/__casgate/reset', { dispatcher: await labClient() })
    expect(response.status).toBe(502)
    expect(JSON.parse(response.text).code).toBe('CASGATE_ERR_UPSTREAM_RESET')
  })

  it('504 CASGATE_ERR_UPSTREAM_TIMEOUT after the vdir timeout, while other vdirs keep theirs', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), vdirs: { '/EWS': { timeoutMs: 200 } } })
    const client = await labClient()
    const slow = await send(gateway, '/EWS/__casgate/hold?ms=1500', { dispatcher: client })
    expect(slow.status).toBe(504)
    expect(JSON.parse(slow.text).code).toBe('CASGATE_ERR_UPSTREAM_TIMEOUT')
    // /owa keeps the profile's five minutes: the same hold is answered.
    const patient = await send(gateway, '/owa/__casgate/hold?ms=1500', { dispatcher: client })
    expect(patient.status).toBe(200)
  })

  it('a held long poll is released upstream when its client disconnects', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url) })
    const client = await labClient()
    const controller = new AbortController()
    const pending = client.request({
      origin: `https://127.0.0.1:${gateway.address.port}`,
      path: '/Microsoft-Server-ActiveSync/__casgate/hold?ms=60000',
      method: 'GET',
      headers: { host: 'mail.contoso.test' },
      signal: controller.signal
    }).catch((err: Error) => err)
    await expect.poll(() => servers[0]!.requests).toBe(1)
    controller.abort()
    await pending
    await expect.poll(() => servers[0]!.abandoned, { timeout: 5_000 }).toBe(1)
    expect(gateway.pools.get('cas')!.servers[0]!.outstanding).toBe(0)
  })

  it('keeps serving everyone else after a bad request', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url) })
    const client = await labClient()
    const results = await Promise.all([
      send(gateway, '/owa/%', { dispatcher: client }),
      send(gateway, '/owa/', { dispatcher: client }),
      send(gateway, '/../../etc/passwd', { dispatcher: client }),
      send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'POST', body: 'x' })
    ])
    expect(results.map((r) => r.status)).toEqual([400, 200, 400, 200])
  })
})
