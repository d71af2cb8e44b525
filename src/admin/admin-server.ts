import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import type { AdminSettings } from '../config/admin-config.js'
import { adminAccess, tokenDigest, tokenMatches } from './admin-access.js'
import { ADMIN_SESSION_COOKIE, AdminSessions } from './admin-sessions.js'
import { statusPage } from './status-page.js'
import { sendError } from '../errors/error-reply.js'
import { CasgateError } from '../errors/errors.js'
import { readCookie } from '../util/cookies.js'
import type { RecentError } from '../observe/recent-errors.js'
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
  /** The last upstream failures, newest first. */
  recentErrors: () => readonly RecentError[]
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
        weight: backend.weight,
        pinnedConnections: backend.pinned,
        budgets: Object.fromEntries(Object.entries(backend.budgets).map(([kind, budget]) => [kind, { inUse: budget.inUse, limit: budget.limit, waiting: budget.waiting, refused: budget.refused }])),
        downVdirs: [...backend.down]
      }))
    }])),
    health: source.health.snapshot(),
    drained: source.drain.snapshot(),
    certificates: source.certificates(),
    rpcChannels: source.rpcChannels(),
    rules: { pack: source.rules.version, blocked: Object.fromEntries(source.rules.blocked), disabled: source.rules.disabled },
    recentErrors: source.recentErrors()
  }
}

/**
 * AdminSource is what the admin listener serves: one process's own snapshots, or (cluster/) the
 * workers' merged by the primary, and the drain control that reaches every process.
 */
export interface AdminSource {
  status: () => object | Promise<object>
  affinity: () => object | Promise<object>
  drain: Pick<DrainControl, 'drain' | 'enable' | 'snapshot' | 'setWeight'>
  /** The Prometheus text exposition (GET /metrics). */
  metrics: () => Promise<{ contentType: string, text: string }>
  /** Re-reads the whole configuration; undefined for a gateway started without a file (embedded, tests). */
  reload?: () => Promise<{ reloaded: boolean, problems?: unknown[] }>
  /** Forgets a user's failed logons (all sources): a locked-out user may try again at once. */
  clearLockout: (user: string) => void
  /** Where a user's affinity keys send them, per vdir; `clear` forgets them (next request placed anew). */
  userAffinity: (user: string, clear: boolean) => object | Promise<object>
}

/** Body is what a change may say, as JSON. */
interface Body { vdir?: unknown, deadlineMs?: unknown, user?: unknown, weight?: unknown }

function vdirOf (body: Body | undefined): string | undefined | Error {
  const vdir = body?.vdir
  if (vdir === undefined) return undefined
  return typeof vdir === 'string' && vdir.startsWith('/') ? vdir : new Error('vdir must be a path such as /owa')
}

/**
 * startAdminServer opens the admin listener: plain HTTP, JSON status, drain/enable, lockout and
 * affinity operations, behind the admin token, a Host check and same-origin changes
 * (admin-access.ts).
 */
export async function startAdminServer (config: AdminSettings, source: AdminSource): Promise<{ app: FastifyInstance, address: AddressInfo }> {
  const app = Fastify({ logger: false })
  const sessions = new AdminSessions()
  adminAccess(app, { token: config.token, names: config.names, sessions })
  // The status page; it signs in with the token once, then holds a session cookie.
  app.get('/', async (_request, reply) => {
    const page = statusPage()
    return reply.type('text/html; charset=utf-8').headers({ 'content-security-policy': page.csp, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' }).send(page.html)
  })
  const expected = tokenDigest(config.token)
  app.post<{ Body: { token?: unknown } | undefined }>('/session', async (request, reply) => {
    const token = request.body?.token
    if (typeof token !== 'string' || !tokenMatches(token, expected)) return sendError(reply, new CasgateError('CASGATE_ERR_ADMIN_UNAUTHORIZED'))
    return reply.header('set-cookie', sessions.open()).send({ signedIn: true })
  })
  app.post('/session/end', async (request, reply) => {
    sessions.close(readCookie(request.headers.cookie, ADMIN_SESSION_COOKIE))
    return reply.header('set-cookie', `${ADMIN_SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`).send({ signedIn: false })
  })
  app.get('/status', async () => source.status())
  app.get('/metrics', async (_request, reply) => {
    const { contentType, text } = await source.metrics()
    return reply.type(contentType).send(text)
  })
  // Tuning data: per vdir and server, keys held, requests and share (the carrier-NAT case shows as
  // one server with most of ActiveSync's keys and requests).
  app.get('/affinity', async () => source.affinity())
  // Maintenance: POST /backends/ex1.contoso.local:443/drain {"vdir": "/owa", "deadlineMs": 600000}, then …/enable.
  type Target = { Params: { name: string }, Body: Body | undefined }
  app.post<Target>('/backends/:name/drain', async (request, reply) => {
    const vdir = vdirOf(request.body)
    const deadline = request.body?.deadlineMs ?? DEFAULT_DRAIN_DEADLINE_MS
    if (vdir instanceof Error) return reply.code(400).send({ error: vdir.message })
    if (typeof deadline !== 'number' || !Number.isFinite(deadline) || deadline < 0) return reply.code(400).send({ error: 'deadlineMs must be a number of milliseconds' })
    if (!source.drain.drain(request.params.name, vdir, deadline)) return reply.code(404).send({ error: `no server named ${request.params.name}` })
    return { drained: source.drain.snapshot() }
  })
  app.post<Target>('/backends/:name/enable', async (request, reply) => {
    const vdir = vdirOf(request.body)
    if (vdir instanceof Error) return reply.code(400).send({ error: vdir.message })
    if (!source.drain.enable(request.params.name, vdir)) return reply.code(404).send({ error: `no server named ${request.params.name}` })
    return { drained: source.drain.snapshot() }
  })
  // HAProxy's "set weight": 0 takes no new work, 2 twice the share of 1 (the default).
  app.post<Target>('/backends/:name/weight', async (request, reply) => {
    const weight = request.body?.weight
    if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 256) return reply.code(400).send({ error: 'weight must be a whole number from 0 to 256' })
    if (!source.drain.setWeight(request.params.name, weight)) return reply.code(404).send({ error: `no server named ${request.params.name}` })
    return { backend: request.params.name, weight }
  })
  // The whole configuration, as SIGHUP does in a cluster.
  app.post('/reload', async (_request, reply) => {
    if (source.reload === undefined) return reply.code(409).send({ error: 'this gateway was started without a configuration file (embedded): there is nothing to re-read' })
    const result = await source.reload()
    return reply.code(result.reloaded ? 200 : 400).send(result)
  })
  // A user who locked themselves out (new password on an old phone) gets in again at once.
  app.post<{ Body: Body | undefined }>('/lockout/clear', async (request, reply) => {
    const user = request.body?.user
    if (typeof user !== 'string' || user.trim() === '') return reply.code(400).send({ error: 'user must be a user name' })
    source.clearLockout(user)
    return { cleared: user }
  })
  type User = { Params: { user: string }, Body: Body | undefined }
  app.get<User>('/affinity/users/:user', async (request) => source.userAffinity(request.params.user, false))
  app.post<User>('/affinity/users/:user/clear', async (request) => source.userAffinity(request.params.user, true))
  await app.listen({ host: config.host, port: config.port })
  return { app, address: app.server.address() as AddressInfo }
}
