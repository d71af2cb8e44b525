import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import type { AdminConfig } from '../config/schema.js'
import type { FrontDoorCounters } from '../front/front-door.js'
import type { ServerPool } from '../upstream/server-pool.js'
import type { DrainControl } from '../upstream/drain.js'
import type { HealthStatus } from '../upstream/health-monitor.js'
import type { CertificateStatus } from '../tls/certificate-watch.js'

/** StatusSource is what the admin listener reports on. */
export interface StatusSource {
  frontDoor: { connections: number, counters: FrontDoorCounters }
  pools: ReadonlyMap<string, ServerPool>
  health: { snapshot: () => HealthStatus[] }
  drain: DrainControl
  certificates: () => CertificateStatus
  /** The exploit rule pack: its version, blocks per rule id, the rules switched off. */
  rules: { version: string, blocked: ReadonlyMap<string, number>, disabled: readonly string[] }
  /** Outlook Anywhere connections open now. */
  rpcChannels: () => number
}

/** DEFAULT_DRAIN_DEADLINE_MS lets an ActiveSync Ping (59 min) finish before pinned logons are cut. */
export const DEFAULT_DRAIN_DEADLINE_MS = 60 * 60_000

/** statusSnapshot is the JSON of GET /status: listener counters and every backend's load. */
export function statusSnapshot (source: StatusSource): object {
  const memory = process.memoryUsage()
  return {
    process: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed, externalBytes: memory.external, arrayBuffersBytes: memory.arrayBuffers },
    frontDoor: { openConnections: source.frontDoor.connections, ...source.frontDoor.counters },
    pools: Object.fromEntries([...source.pools].map(([name, pool]) => [name, {
      balance: pool.config.balance,
      servers: pool.servers.map((backend) => ({
        name: backend.name,
        origin: backend.origin,
        outstandingRequests: backend.outstanding,
        passthroughConnections: backend.connections,
        pinnedConnections: backend.pinned,
        budgets: Object.fromEntries(Object.entries(backend.budgets).map(([kind, budget]) => [kind, { inUse: budget.inUse, limit: budget.limit, waiting: budget.waiting, refused: budget.refused }])),
        downVdirs: [...backend.down]
      }))
    }])),
    health: source.health.snapshot(),
    drained: source.drain.snapshot(),
    certificates: source.certificates(),
    rpcChannels: source.rpcChannels(),
    rules: { pack: source.rules.version, blocked: Object.fromEntries(source.rules.blocked), disabled: source.rules.disabled }
  }
}

/**
 * AdminSource is what the admin listener serves: one process's own snapshots, or (cluster/) the
 * workers' merged by the primary, and the drain control that reaches every process.
 */
export interface AdminSource {
  status: () => object | Promise<object>
  affinity: () => object | Promise<object>
  drain: Pick<DrainControl, 'drain' | 'enable' | 'snapshot'>
}

/**
 * startAdminServer opens the admin listener: plain HTTP, JSON status and drain/enable. It has no
 * authentication, which is why it binds to loopback unless told otherwise.
 */
export async function startAdminServer (config: AdminConfig, source: AdminSource): Promise<{ app: FastifyInstance, address: AddressInfo }> {
  const app = Fastify({ logger: false })
  app.get('/status', async () => source.status())
  // Tuning data: per vdir and server, keys held, requests and share (the carrier-NAT case shows as
  // one server with most of ActiveSync's keys and requests).
  app.get('/affinity', async () => source.affinity())
  // Maintenance: POST /backends/ex1.contoso.local:443/drain?vdir=/owa&deadlineMs=600000, then …/enable.
  type Target = { Params: { name: string }, Querystring: { vdir?: string, deadlineMs?: string } }
  app.post<Target>('/backends/:name/drain', async (request, reply) => {
    const deadlineMs = request.query.deadlineMs === undefined ? DEFAULT_DRAIN_DEADLINE_MS : Number(request.query.deadlineMs)
    if (!Number.isFinite(deadlineMs) || deadlineMs < 0) return reply.code(400).send({ error: 'deadlineMs must be a number of milliseconds' })
    if (!source.drain.drain(request.params.name, request.query.vdir, deadlineMs)) return reply.code(404).send({ error: `no server named ${request.params.name}` })
    return { drained: source.drain.snapshot() }
  })
  app.post<Target>('/backends/:name/enable', async (request, reply) => {
    if (!source.drain.enable(request.params.name, request.query.vdir)) return reply.code(404).send({ error: `no server named ${request.params.name}` })
    return { drained: source.drain.snapshot() }
  })
  await app.listen({ host: config.host, port: config.port })
  return { app, address: app.server.address() as AddressInfo }
}
