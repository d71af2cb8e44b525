import { promtool } from './helpers/promtool.js'
import { describe, expect, it } from 'vitest'
import type { Gateway } from '../src/gateway/gateway.js'
import { labClient, rawExchange, send, startEmulators, startLabGateway } from './helpers/lab.js'

// GET /metrics on the admin listener, scraped as Prometheus would (with the admin token) and
// checked by Prometheus's own linter, promtool (Debian's prometheus package; .ci/run installs it).

async function scrape (gateway: Gateway): Promise<{ status: number, type: string | null, text: string }> {
  const response = await fetch(`http://127.0.0.1:${gateway.adminAddress!.port}/metrics`, { headers: { authorization: `Bearer ${gateway.config.admin!.token}` } })
  return { status: response.status, type: response.headers.get('content-type'), text: await response.text() }
}

/** value reads one sample of the exposition: the metric with exactly these labels. */
function value (text: string, name: string, labels: Record<string, string>): number | undefined {
  const wanted = Object.entries(labels).map(([key, v]) => `${key}="${v}"`)
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue
    const inside = line.slice(name.length + 1, line.lastIndexOf('}'))
    const got = inside.split(/,(?=\w+=")/)
    if (got.length === wanted.length && wanted.every((pair) => got.includes(pair))) return Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return undefined
}

describe('GET /metrics', () => {
  it('exposes requests, durations, health, blocks, certificates and the process, and promtool accepts it', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), pool: { balance: 'round-robin' }, extra: { admin: { host: '127.0.0.1', port: 0 }, health: { enabled: false } } })
    const client = await labClient()
    for (let i = 0; i < 4; i++) expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client })).status).toBe(200)
    expect((await send(gateway, '/nothing/here', { dispatcher: client })).status).toBe(404)
    expect(await rawExchange(gateway, 'GET /owa/x HTTP/1.1\r\nHost: mail.contoso.test\r\nCookie: X-AnonResource-Backend=localhost/ecp/default.flt?~3\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 403 /)
    servers[1]!.setHealthy('/EWS', false)
    gateway.pools.get('cas')!.servers[1]!.down.add('/EWS')

    const metrics = await scrape(gateway)
    expect(metrics.status).toBe(200)
    expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/)
    const lint = await promtool(metrics.text)
    expect(lint, lint.output).toMatchObject({ code: 0 })

    const [ex1, ex2] = gateway.pools.get('cas')!.servers.map((server) => server.name)
    for (const server of [ex1!, ex2!]) expect(value(metrics.text, 'casgate_requests_total', { host: 'mail.contoso.test', vdir: '/EWS', server, status: '2xx', preauth: 'none' })).toBe(2)
    expect(value(metrics.text, 'casgate_requests_total', { host: 'mail.contoso.test', vdir: 'none', server: 'none', status: '4xx', preauth: 'none' })).toBe(2)
    // EWS holds streaming notifications: its durations go to the long-poll histogram.
    expect(value(metrics.text, 'casgate_long_poll_duration_seconds_count', { vdir: '/EWS' })).toBe(4)
    expect(value(metrics.text, 'casgate_request_duration_seconds_count', { vdir: 'none' })).toBe(2)
    expect(value(metrics.text, 'casgate_rule_blocks_total', { rule: 'proxylogon-anonresource-backend' })).toBe(1)
    expect(value(metrics.text, 'casgate_server_up', { pool: 'cas', server: ex2!, vdir: '/EWS' })).toBe(0)
    expect(value(metrics.text, 'casgate_server_up', { pool: 'cas', server: ex1!, vdir: '/EWS' })).toBe(1)
    const expiry = value(metrics.text, 'casgate_certificate_expiry_timestamp_seconds', { host: 'mail.contoso.test' })!
    expect(Math.floor((expiry * 1000 - Date.now()) / 86_400_000)).toBeGreaterThan(300)
    expect(metrics.text).toMatch(/^casgate_nodejs_eventloop_lag_seconds \d/m)
    expect(metrics.text).toMatch(/^casgate_process_resident_memory_bytes \d/m)
  })

  it('is behind the admin token like everything else on the listener', async () => {
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { admin: { host: '127.0.0.1', port: 0 }, health: { enabled: false } } })
    const response = await fetch(`http://127.0.0.1:${gateway.adminAddress!.port}/metrics`)
    expect(response.status).toBe(401)
  })
})
