import { connect as tlsConnect } from 'node:tls'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { labClient, labPki, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { admin } from './helpers/admin.js'

const FAST = { intervalMs: 50, timeoutMs: 1_000, rise: 1, fall: 1 }

async function backendsOf (gateway: Awaited<ReturnType<typeof startLabGateway>>, path: string, times: number): Promise<string[]> {
  const client = await labClient()
  const names: string[] = []
  for (let i = 0; i < times; i++) {
    const response = await send(gateway, path, { dispatcher: client })
    names.push(response.status === 200 ? (JSON.parse(response.text) as EchoBody).server : `status ${response.status}`)
  }
  return names
}

describe('health per vdir from Managed Availability health pages', () => {
  it('takes a server out of one vdir only, and brings it back', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { health: FAST } })
    const ex1 = gateway.pools.get('cas')!.servers.find((b) => b.origin === servers[0]!.url)!
    servers[0]!.setHealthy('/owa', false)
    await expect.poll(() => ex1.down.has('/owa')).toBe(true)
    expect(new Set(await backendsOf(gateway, '/owa/x', 8))).toEqual(new Set(['ex2']))
    // Its EWS is still healthy: EWS traffic keeps using it.
    expect(new Set(await backendsOf(gateway, '/EWS/x', 8))).toEqual(new Set(['ex1', 'ex2']))
    servers[0]!.setHealthy('/owa', true)
    await expect.poll(() => ex1.down.has('/owa')).toBe(false)
    expect(new Set(await backendsOf(gateway, '/owa/x', 8))).toEqual(new Set(['ex1', 'ex2']))
    const changes = gateway.logs.lines.filter((line) => line.msg === 'backend health changed')
    expect(changes.map((line) => [line.vdir, line.from, line.to])).toEqual([['/owa', 'up', 'down'], ['/owa', 'down', 'up']])
    expect(changes[0]!.reason).toBe('status 404')
  })

  it('answers 503 with Retry-After when no server is healthy, and says so once', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { health: FAST } })
    for (const server of servers) server.setHealthy('/Microsoft-Server-ActiveSync', false)
    await expect.poll(() => gateway.pools.get('cas')!.servers.every((b) => b.down.has('/Microsoft-Server-ActiveSync'))).toBe(true)
    const client = await labClient()
    for (let i = 0; i < 5; i++) {
      const response = await send(gateway, '/Microsoft-Server-ActiveSync?Cmd=Ping', { dispatcher: client, method: 'POST', body: '' })
      expect(response.status).toBe(503)
      expect(response.headers['retry-after']).toBe('5')
      expect(JSON.parse(response.text).code).toBe('CASGATE_ERR_NO_BACKEND')
    }
    expect(servers[0]!.requests + servers[1]!.requests).toBe(0)
    expect(gateway.logs.lines.filter((line) => line.msg === 'no healthy backend left for vdir')).toHaveLength(1)
    // Other vdirs are unaffected.
    expect((await send(gateway, '/owa/', { dispatcher: client })).status).toBe(200)
  })

  it('gates passthrough servers on the monitored vdir, probed over HTTPS with the pool CA', async () => {
    const pki = await labPki()
    const tls = { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem }
    const eas = await Promise.all(['eas1', 'eas2'].map((name) => new ExchangeEmulator({ name, tls }).start()))
    onTestFinished(async () => { await Promise.all(eas.map((s) => s.close())) })
    const http = await startEmulators(1)
    const files = writeFiles(tempDir(), { 'root.pem': pki.root.certPem })
    const gateway = await startLabGateway({
      mode: 'offload',
      servers: http.map((s) => s.url),
      extra: {
        pools: { cas: { servers: http.map((s) => s.url) }, eas: { servers: eas.map((s) => s.url), ca: files['root.pem'], serverName: 'mail.contoso.test' } },
        hostsExtra: [{ names: ['eas.contoso.test'], mode: 'passthrough', pool: 'eas', balance: 'least-connections' }],
        health: FAST,
        admin: { host: '127.0.0.1', port: 0 }
      }
    })
    eas[0]!.setHealthy('/Microsoft-Server-ActiveSync', false)
    const easPool = gateway.pools.get('eas')!
    await expect.poll(() => easPool.servers[0]!.down.has('/Microsoft-Server-ActiveSync')).toBe(true)
    expect(eas[0]!.healthProbes).toBeGreaterThan(0)
    for (let i = 0; i < 6; i++) {
      await new Promise<void>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: gateway.address.port, servername: 'eas.contoso.test', ca: pki.root.certPem, checkServerIdentity: () => undefined }, () => {
          socket.end('GET /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: eas.contoso.test\r\nConnection: close\r\n\r\n')
        })
        socket.on('data', () => undefined)
        socket.on('close', () => resolve())
        socket.on('error', reject)
      })
    }
    expect(eas[0]!.requests).toBe(0)
    expect(eas[1]!.requests).toBe(6)
    const status = (await admin(gateway, '/status')).json as { health: Array<{ vdir: string, state: string }> }
    expect(status.health.filter((h) => h.state === 'down')).toEqual([expect.objectContaining({ vdir: '/Microsoft-Server-ActiveSync', reason: 'status 404' })])
  })
})

describe('monitors for vdirs behind certificate-based authentication', () => {
  it('reach a CBA-protected health page only with the pool\'s client certificate', async () => {
    const pki = await labPki()
    const { issueCertificate } = await import('../src/certificates/lab-ca.js')
    const monitor = await issueCertificate({ commonName: 'casgate-monitor', usage: ['clientAuth'] }, pki.intermediate)
    const tls = { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem, clientCa: pki.root.certPem + pki.intermediate.certPem }
    const [withCert, withoutCert] = await Promise.all(['cba1', 'cba2'].map((name) => new ExchangeEmulator({ name, tls }).start()))
    onTestFinished(async () => { await Promise.all([withCert!.close(), withoutCert!.close()]) })
    const http = await startEmulators(1)
    const files = writeFiles(tempDir(), { 'root.pem': pki.root.certPem, 'monitor.crt': monitor.certPem, 'monitor.key': monitor.keyPem })
    const gateway = await startLabGateway({
      mode: 'offload',
      servers: http.map((s) => s.url),
      extra: {
        pools: {
          cas: { servers: http.map((s) => s.url) },
          cba: { servers: [withCert!.url], ca: files['root.pem'], serverName: 'mail.contoso.test', clientCertificate: { cert: files['monitor.crt'], key: files['monitor.key'] } },
          plain: { servers: [withoutCert!.url], ca: files['root.pem'], serverName: 'mail.contoso.test' }
        },
        hostsExtra: [
          { names: ['eas.contoso.test'], mode: 'passthrough', pool: 'cba' },
          { names: ['eas2.contoso.test'], mode: 'passthrough', pool: 'plain' }
        ],
        health: FAST
      }
    })
    const cbaHosts = [withCert!, withoutCert!].map((server) => new URL(server.url).host)
    const byVdir = () => gateway.health.snapshot().filter((h) => h.vdir === '/Microsoft-Server-ActiveSync' && cbaHosts.includes(h.backend))
    await expect.poll(() => byVdir().map((h) => [h.backend, h.state, h.reason]).sort()).toEqual([
      [new URL(withCert!.url).host, 'up', 'healthy'],
      [new URL(withoutCert!.url).host, 'down', 'status 403']
    ].sort())
    expect(withCert!.healthProbes).toBeGreaterThan(0)
  })
})
