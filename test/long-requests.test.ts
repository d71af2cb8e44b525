import { describe, expect, it } from 'vitest'
import { Agent } from 'undici'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { labConfig, labPki, startEmulators, startLabGateway } from './helpers/lab.js'
import { onTestFinished } from 'vitest'

describe('long requests', () => {
  it('holds 300 concurrent ActiveSync Pings and answers them all', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url) })
    const pki = await labPki()
    const agent = new Agent({ connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' }, connections: 300 })
    onTestFinished(() => agent.close())
    const answers = await Promise.all(Array.from({ length: 300 }, (_, i) => agent.request({
      origin: `https://127.0.0.1:${gateway.address.port}`,
      path: `/Microsoft-Server-ActiveSync/__casgate/hold?ms=1500&Cmd=Ping&User=u${i}`,
      method: 'GET',
      headers: { host: 'mail.contoso.test' }
    }).then(async (r) => ({ status: r.statusCode, echo: await r.body.json() as EchoBody }))))
    expect(answers.every((a) => a.status === 200)).toBe(true)
    expect(new Set(answers.map((a) => a.echo.url)).size).toBe(300)
    expect(servers[0]!.requests + servers[1]!.requests).toBe(300)
  }, 60_000)

  it('shuts down gracefully: no new connections, requests in flight finish within the grace', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url) })
    const pki = await labPki()
    const agent = new Agent({ connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
    onTestFinished(() => agent.destroy())
    const origin = `https://127.0.0.1:${gateway.address.port}`
    const held = agent.request({ origin, path: '/EWS/__casgate/hold?ms=800', method: 'GET', headers: { host: 'mail.contoso.test' } })
    await expect.poll(() => servers[0]!.requests).toBe(1)
    const closing = gateway.close(10_000)
    const answer = await held
    expect(answer.statusCode).toBe(200)
    await answer.body.dump()
    await closing
    const late = await new Agent({ connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
      .request({ origin, path: '/owa/', method: 'GET', headers: { host: 'mail.contoso.test' } }).catch((err: Error) => err)
    expect(late).toBeInstanceOf(Error)
  })

  it('casgate check warns when a long-poll vdir times out before Exchange answers', async () => {
    const config = await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], vdirs: { '/Microsoft-Server-ActiveSync': { timeoutMs: 120_000 }, '/owa': { timeoutMs: 60_000 } } })
    expect(config.warnings).toHaveLength(1)
    expect(config.warnings[0]).toMatchObject({ path: 'vdirs./Microsoft-Server-ActiveSync.timeoutMs', fix: 'raise it to at least 1800000 (the profile default is 3900000)' })
    expect(config.warnings[0]!.message).toContain('Ping holds up to 59 min')
  })
})
