import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { HstsConfig } from '../config/schema.js'
import { sendError, sendFrameworkError } from '../errors/error-reply.js'
import { CasgateError } from '../errors/errors.js'
import type { RequestGuard } from '../guard/request-guard.js'
import type { Publications } from '../routing/publications.js'
import type { GateOutcome } from '../preauth/gate-outcome.js'
import type { PreauthGate } from '../preauth/preauth-gate.js'
import type { BudgetAdmission } from '../upstream/budget-admission.js'
import type { ConnectionPins } from '../upstream/connection-pins.js'
import type { GatewayMetrics } from '../observe/metrics.js'
import type { RecentErrors } from '../observe/recent-errors.js'
import type { Server } from '../upstream/server.js'
import type { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'
import { exchangeEvents } from './exchange-events.js'
import { requestForwarder, type RequestRecord } from './forward-request.js'
import { clientAddress, type TrustedProxies } from './headers.js'
import { hstsValue } from './response-hardening.js'
import type { RoutedVdir } from './routed-vdir.js'

/** ProxyPluginOptions wires the proxy to the routing table and the upstream side. */
export interface ProxyPluginOptions {
  /** Every request's checks and routing (target, Host, duplicates, rule pack, vdir). */
  guard: RequestGuard<RoutedVdir>
  /** Which host's vdir table serves a connection, and whether a request's Host agrees with it. */
  publications: Publications<RoutedVdir>
  /** Strict-Transport-Security for every response, when configured. */
  hsts: HstsConfig | undefined
  /** Host sent upstream for an HTTP/1.0 request without one: the name the client connected to. */
  fallbackHost: (socket: Socket) => string
  upstreams: UpstreamDispatcher
  trusted: TrustedProxies
  /** Client socket idle timeout outside long requests; a vdir with a longer timeout raises it per request. */
  idleTimeoutMs: number
  accessLog: Logger
  /** Dedicated upstream connections of NTLM/Negotiate client connections. */
  pins: ConnectionPins
  /** Leases on servers with a place in their upstream budgets (shared with Outlook Anywhere channels). */
  admission: BudgetAdmission
  /** Preauthentication; undefined when the configuration has no preauth block. */
  preauth: PreauthGate | undefined
  /** Counts requests, durations and upstream errors for GET /metrics. */
  metrics: GatewayMetrics
  /** The last upstream failures, for /status and the status page. */
  recentErrors: RecentErrors
  /**
   * Whether this process is retiring (a cluster reload started workers with the new
   * configuration): a request on a keep-alive connection is answered with Connection: close, so
   * the client's next one reaches a new worker; a pinned NTLM connection keeps going.
   */
  retiring?: () => boolean
  /** Hears failures of live traffic that are the server's fault (passive health). */
  onBackendFailure: (backend: Server, vdir: string, reason: string) => void
}

// What Exchange 2013+ clients use. WebDAV went with Exchange 2010, TRACE only helps
// cross-site tracing; anything else gets casgate's 404. RPC_IN_DATA/RPC_OUT_DATA never reach
// here (llhttp rejects them): they are tunnelled before the parser.
const proxiedMethods = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']

async function casgateProxy (fastify: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  if (!options?.upstreams || !options.guard) throw new TypeError('casgate proxy: guard and upstreams are required')
  const { accessLog, upstreams, trusted, idleTimeoutMs, guard, publications, fallbackHost } = options
  if (!options.pins) throw new TypeError('casgate proxy: pins is required')
  const pins = options.pins
  const preauth = options.preauth
  const hsts = hstsValue(options.hsts)
  if (hsts !== undefined) {
    // casgate's own answers (errors, the sign-in page) carry it too; proxied ones get it in the exchange.
    fastify.addHook('onSend', (_request, reply, payload, done) => {
      if (!reply.hasHeader('strict-transport-security')) reply.header('strict-transport-security', hsts)
      done(null, payload)
    })
  }

  const metrics = options.metrics
  const events = exchangeEvents(accessLog, options.onBackendFailure, { metrics, recent: options.recentErrors })
  const forward = requestForwarder({ upstreams, pins, admission: options.admission, trusted, idleTimeoutMs, preauth, events, accessLog })

  function logAccess (request: FastifyRequest, res: ServerResponse, record: RequestRecord): void {
    const seconds = (performance.now() - record.start) / 1000
    const status = res.writableFinished ? `${Math.floor(res.statusCode / 100)}xx` : 'aborted'
    const preauthOutcome = preauth === undefined || record.vdir === undefined ? 'none' : record.preauth?.replace(/:.*$/, '') ?? 'passed'
    metrics.request({ host: record.site, vdir: record.vdir ?? 'none', server: record.lease?.server.name ?? 'none', status, preauth: preauthOutcome }, seconds, record.longPoll)
    accessLog.info({
      client: record.client,
      method: request.method,
      url: request.url,
      vdir: record.vdir,
      backend: record.lease?.server.name,
      ...(record.pin ? { pinned: true } : {}),
      ...(record.user !== undefined ? { user: record.user } : {}),
      ...(record.preauth !== undefined ? { preauth: record.preauth } : {}),
      ...(record.refused !== undefined ? { refused: record.refused } : {}),
      status: res.statusCode,
      bytes: record.exchange?.bodyBytes,
      ms: Math.round(performance.now() - record.start),
      ...(res.writableFinished ? {} : { aborted: true })
    }, 'request')
  }

  // Bodies are never parsed: the raw request stream goes to the upstream as it arrives.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('*', (_request, _payload, done) => done(null))
  fastify.setErrorHandler((err, _request, reply) => sendFrameworkError(reply, err as Error))
  fastify.setNotFoundHandler((_request, reply) => sendError(reply, new CasgateError('CASGATE_ERR_NOT_PUBLISHED')))

  function proxy (request: FastifyRequest, reply: FastifyReply): void {
    const res = reply.raw
    const socket = request.raw.socket
    const record: RequestRecord = { start: performance.now(), client: socket.remoteAddress, vdir: undefined, longPoll: false, site: '', lease: undefined, exchange: undefined, pin: undefined, user: undefined, preauth: undefined, host: '', refused: undefined, source: undefined }
    if (options.retiring?.() === true && pins.get(socket) === undefined) res.shouldKeepAlive = false
    res.once('close', () => {
      record.lease?.release()
      record.exchange?.clientGone()
      if (record.pin) pins.requestDone(socket, record.pin)
      logAccess(request, res, record)
    })

    // Routed by host first: the table of the host the connection was made to (its SNI name).
    const publication = publications.forServerName((socket as TLSSocket).servername)
    record.site = publication.host.names[0]!
    const verdict = guard.check({ method: request.method, target: request.url, rawHeaders: request.raw.rawHeaders, headers: request.headers, client: record.client }, publication.vdirs)
    if (!verdict.ok) {
      record.refused = verdict.reason
      return sendError(reply, verdict.error)
    }
    if (publications.misdirected(publication, verdict.hostName)) {
      record.refused = 'host of another connection'
      return sendError(reply, new CasgateError('CASGATE_ERR_MISDIRECTED', [verdict.host]))
    }
    const vdir = verdict.vdir
    if (vdir === undefined) return sendError(reply, new CasgateError('CASGATE_ERR_NOT_PUBLISHED'))
    record.vdir = vdir.path
    record.longPoll = vdir.longPoll
    record.host = verdict.host ?? fallbackHost(socket)
    if (preauth === undefined) return forward(request, reply, record, vdir, undefined)
    // Lockout and familiar sources count the client behind a trusted proxy, not the proxy.
    record.source = clientAddress(request.raw, trusted)
    const outcome = preauth.gate(request.raw, vdir, record.source, verdict.target.path)
    if (!(outcome instanceof Promise)) return admit(request, reply, record, vdir, outcome)
    // A throw in admit/forward lands in catch too: a bug costs this request a 500, nothing more.
    outcome
      .then((decided) => { if (!res.destroyed) admit(request, reply, record, vdir, decided) })
      .catch((err: unknown) => sendError(reply, new CasgateError('CASGATE_ERR_INTERNAL', [], { cause: err })))
  }

  /** admit answers a request the gate refused, or forwards it with what the gate adds. */
  function admit (request: FastifyRequest, reply: FastifyReply, record: RequestRecord, vdir: RoutedVdir, outcome: GateOutcome): void {
    if ('answer' in outcome) {
      record.preauth = outcome.answer.reason
      reply.code(outcome.answer.status).headers(outcome.answer.headers).send(outcome.answer.body)
      return
    }
    record.user = outcome.pass.user
    record.preauth = outcome.pass.excluded === undefined ? undefined : `excluded:${outcome.pass.excluded}`
    forward(request, reply, record, vdir, outcome.pass)
  }

  fastify.route({ method: proxiedMethods, url: '/*', handler: proxy })
  fastify.route({ method: proxiedMethods, url: '/', handler: proxy })
}

export default fp(casgateProxy, { fastify: '5.x', name: 'casgate-proxy' })
