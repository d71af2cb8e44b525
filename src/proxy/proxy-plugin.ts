import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import type { VdirAffinity } from '../affinity/vdir-affinity.js'
import type { ResolvedVdir } from '../config/resolve.js'
import type { HstsConfig } from '../config/schema.js'
import { hstsValue, type ResponseHardening } from './response-hardening.js'
import { CasgateError } from '../errors/errors.js'
import type { Backend, BackendPool } from '../pool/backend-pool.js'
import type { Budget, BudgetClass } from '../pool/budget.js'
import type { UpstreamDispatcher } from '../pool/upstream-dispatcher.js'
import { sendError, sendFrameworkError, writeError } from '../errors/error-reply.js'
import { isConnectionAuth, type ConnectionPin, type ConnectionPins } from '../pool/connection-pins.js'
import { clientAddress, replaceHeader, upstreamRequestHeaders, type TrustedProxies } from './headers.js'
import { removeCookies } from '../util/cookies.js'
import { declaresBody } from '../util/request-body.js'
import { claimedUser } from '../auth/logon-user.js'
import type { RequestGuard } from '../guard/request-guard.js'
import type { GateOutcome, GatePass } from '../preauth/gate-outcome.js'
import type { PreauthGate } from '../preauth/preauth-gate.js'
import { UpstreamExchange } from './upstream-exchange.js'
import { exchangeEvents } from './exchange-events.js'
import { BudgetAdmission } from './budget-admission.js'
import { uploadOf } from './upload.js'

/** RoutedVdir is a published vdir bound to its pool and its affinity policy. */
export interface RoutedVdir extends ResolvedVdir {
  backendPool: BackendPool
  /** Picks the backend under the vdir's affinity policy and keeps its tuning data. */
  selector: VdirAffinity
  /** Headers added to its responses (HSTS, CSP mitigation); undefined for none. */
  hardening: ResponseHardening | undefined
}

/** ProxyPluginOptions wires the proxy to the routing table and the upstream side. */
export interface ProxyPluginOptions {
  /** Every request's checks and routing (target, Host, duplicates, rule pack, vdir). */
  guard: RequestGuard<RoutedVdir>
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
  /** Preauthentication; undefined when the configuration has no preauth block. */
  preauth: PreauthGate | undefined
  /** Hears failures of live traffic that are the server's fault (passive health). */
  onBackendFailure: (backend: Backend, vdir: string, reason: string) => void
}

// What Exchange 2013+ clients use. WebDAV went with Exchange 2010, TRACE only helps
// cross-site tracing; anything else gets casgate's 404. RPC_IN_DATA/RPC_OUT_DATA never reach
// here (llhttp rejects them): they are tunnelled before the parser.
const proxiedMethods = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']

// RFC 9110 §9.2.2; PUT and DELETE are idempotent too but carry state Exchange acts on once.
const idempotent = new Set(['GET', 'HEAD', 'OPTIONS'])

/** RequestRecord is what the access line says of one request. */
interface RequestRecord {
  start: number
  client: string | undefined
  vdir: string | undefined
  backend: Backend | undefined
  exchange: UpstreamExchange | undefined
  pin: ConnectionPin | undefined
  /** The user preauthentication let through. */
  user: string | undefined
  /** Why preauthentication answered, or what exclusion let the request pass. */
  preauth: string | undefined
  /** Host sent upstream: the client's, normalised, or the name it connected to. */
  host: string
  /** Why the guard refused the request. */
  refused: string | undefined
  /** The client behind a trusted proxy (else the peer), for lockout; set when preauth runs. */
  source: string | undefined
  /** The upstream connection budget the request holds a place in, released when it ends. */
  budget: Budget | undefined
}

async function casgateProxy (fastify: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  if (!options?.upstreams || !options.guard) throw new TypeError('casgate proxy: guard and upstreams are required')
  const { accessLog, upstreams, trusted, idleTimeoutMs, guard, fallbackHost } = options
  if (!options.pins) throw new TypeError('casgate proxy: pins is required')
  const pins = options.pins
  const preauth = options.preauth
  const preauthCookies = preauth?.forms.ownCookies ?? []
  const exhausted = new Set<string>()
  const admission = new BudgetAdmission(accessLog)
  const hsts = hstsValue(options.hsts)
  if (hsts !== undefined) {
    // casgate's own answers (errors, the sign-in page) carry it too; proxied ones get it in the exchange.
    fastify.addHook('onSend', (_request, reply, payload, done) => {
      if (!reply.hasHeader('strict-transport-security')) reply.header('strict-transport-security', hsts)
      done(null, payload)
    })
  }

  const events = exchangeEvents(accessLog, options.onBackendFailure)

  function logAccess (request: FastifyRequest, res: ServerResponse, record: RequestRecord): void {
    accessLog.info({
      client: record.client,
      method: request.method,
      url: request.url,
      vdir: record.vdir,
      backend: record.backend?.name,
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
    const record: RequestRecord = { start: performance.now(), client: socket.remoteAddress, vdir: undefined, backend: undefined, exchange: undefined, pin: undefined, user: undefined, preauth: undefined, host: '', refused: undefined, source: undefined, budget: undefined }
    res.once('close', () => {
      record.budget?.release()
      const { backend, exchange, pin } = record
      if (exchange) {
        exchange.backend.outstanding--
        exchange.backend.inFlight.delete(exchange)
        exchange.clientGone()
      }
      if (pin) pins.requestDone(socket, pin)
      // The backend offered NTLM/Negotiate: the client's next request starts the handshake,
      // which must run on a connection of its own, to this backend.
      else if (backend && exchange?.connectionAuthOffered && !socket.destroyed) pins.pin(socket, backend)
      logAccess(request, res, record)
    })

    const verdict = guard.check({ method: request.method, target: request.url, rawHeaders: request.raw.rawHeaders, headers: request.headers, client: record.client })
    if (!verdict.ok) {
      record.refused = verdict.reason
      return sendError(reply, verdict.error)
    }
    const vdir = verdict.vdir
    if (vdir === undefined) return sendError(reply, new CasgateError('CASGATE_ERR_NOT_PUBLISHED'))
    record.vdir = vdir.path
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

  /** forward picks the backend and sends the request on (the gate, if any, has let it through). */
  function forward (request: FastifyRequest, reply: FastifyReply, record: RequestRecord, vdir: RoutedVdir, pass: GatePass | undefined): void {
    const res = reply.raw
    const socket = request.raw.socket
    const url = request.url
    let pin = pins.get(socket)
    if (pin && !vdir.backendPool.backends.includes(pin.backend)) pin = undefined // another pool: not this logon's business
    const affinity = vdir.selector
    let backend: Backend | undefined
    let affinityCookie: string | undefined
    if (pin) {
      backend = pin.backend
      // An NTLM AUTHENTICATE names the user only now, on a connection already bound: remember it.
      if (request.headers.authorization !== undefined) affinity.learn({ url, headers: request.headers, client: record.client }, backend)
    } else {
      const choice = affinity.select({ url, headers: request.headers, client: affinity.policy === 'source-ip' ? record.source ?? clientAddress(request.raw, trusted) : record.client })
      backend = choice?.backend
      affinityCookie = choice?.setCookie
    }
    if (backend === undefined) {
      // One line when a vdir runs out of servers, not one per request.
      if (!exhausted.has(vdir.path)) {
        exhausted.add(vdir.path)
        accessLog.error({ vdir: vdir.path, pool: vdir.pool }, 'no healthy backend left for vdir')
      }
      return sendError(reply, new CasgateError('CASGATE_ERR_NO_BACKEND', [vdir.path]))
    }
    if (exhausted.size > 0 && exhausted.delete(vdir.path)) accessLog.info({ vdir: vdir.path, pool: vdir.pool }, 'vdir has a healthy backend again')
    if (!pin && isConnectionAuth(request.headers.authorization)) pin = pins.pin(socket, backend)
    const body = declaresBody(request.headers) ? uploadOf(request.raw, res) : null

    // From here casgate writes the response itself, upstream bytes straight to the socket.
    reply.hijack()
    // Long polls (ActiveSync Ping, MAPI NotificationWait) leave the client socket silent for as
    // long as the backend holds the request; the socket must outlive the upstream timeout.
    if (vdir.timeoutMs > idleTimeoutMs) socket.setTimeout(vdir.timeoutMs + 5_000)
    const headers = upstreamRequestHeaders(request.raw.rawHeaders, record.client, trusted, record.host)
    if (preauth !== undefined) {
      // casgate's own cookies are nobody else's business; a forms session logs on to Exchange with Basic.
      removeCookies(headers, preauthCookies)
      if (pass?.authorization !== undefined) replaceHeader(headers, 'authorization', pass.authorization)
    }
    const unchecked = preauth !== undefined && pass !== undefined && pass.user === undefined && pass.authorization === undefined && claimedUser(request.headers.authorization) !== undefined
    const kind: BudgetClass = vdir.longPoll ? 'longPoll' : 'interactive'
    // The one place a request is counted on a backend (and, on retry, moved to another).
    const send = (target: Backend, mayRetry: boolean): void => {
      const exchange = new UpstreamExchange(res, events, target, vdir.path)
      exchange.responseCookies = pass?.setCookies === undefined ? (affinityCookie === undefined ? undefined : [affinityCookie]) : affinityCookie === undefined ? pass.setCookies : [...pass.setCookies, affinityCookie]
      if (affinity.followsCookies) exchange.followCookie = affinity
      exchange.hardening = vdir.hardening
      if (body !== null) exchange.request = request.raw
      // A logon Exchange checked instead of casgate (Basic, NTLM AUTHENTICATE): its 401 is a failed one.
      if (unchecked) exchange.onUnauthorized = () => preauth!.upstreamRejected(request.headers.authorization, record.source, url, performance.now() - record.start)
      const previous = record.exchange
      if (previous) {
        previous.backend.outstanding--
        previous.backend.inFlight.delete(previous)
      }
      record.exchange = exchange
      record.backend = target
      target.outstanding++
      target.inFlight.add(exchange)
      affinity.count(target)
      if (pin) {
        record.pin = pin
        pin.inFlight++
        exchange.pinned = true
      }
      if (mayRetry) {
        exchange.retry = () => {
          const next = vdir.backendPool.select({ vdir: vdir.path, exclude: target })
          if (next === undefined || res.destroyed) return false
          // The retry needs a place on the next server now; it does not queue for one.
          if (record.budget !== undefined) {
            if (!next.budgets[kind].tryAcquire()) return false
            record.budget.release()
            record.budget = next.budgets[kind]
          }
          // A cookie handed out with the failed attempt would send the browser back to it.
          if (affinityCookie !== undefined) affinityCookie = affinity.cookieFor(next)
          send(next, false)
          return true
        }
      }
      const dispatchOptions: Dispatcher.DispatchOptions = {
        origin: target.origin,
        ...(target.tlsServerName ? { servername: target.tlsServerName } : {}),
        path: url,
        method: request.method as 'GET',
        headers,
        body,
        headersTimeout: vdir.timeoutMs,
        bodyTimeout: vdir.timeoutMs
      }
      if (pin) pin.upstream.dispatch(dispatchOptions, exchange)
      else upstreams.dispatchAs(kind, dispatchOptions, exchange)
    }
    // Retried at most once, and only what may be repeated: idempotent methods without a body,
    // not on a pinned (authenticated) connection.
    const mayRetry = pin === undefined && body === null && idempotent.has(request.method)
    // A pinned connection is the client's own: it takes no place in the shared pools' budgets.
    if (pin !== undefined) return send(backend, mayRetry)
    const place = admission.take(backend, kind, vdir.backendPool.config.queueTimeoutMs, res)
    if (!(place instanceof Promise)) {
      record.budget = place
      return send(backend, mayRetry)
    }
    const target = backend
    place.then((budget) => {
      if (res.destroyed) return
      if (budget === undefined) return writeError(res, new CasgateError('CASGATE_ERR_CAPACITY', [vdir.path]))
      record.budget = budget
      send(target, mayRetry)
    }).catch((err: unknown) => writeError(res, new CasgateError('CASGATE_ERR_INTERNAL', [], { cause: err })))
  }

  fastify.route({ method: proxiedMethods, url: '/*', handler: proxy })
  fastify.route({ method: proxiedMethods, url: '/', handler: proxy })
}

export default fp(casgateProxy, { fastify: '5.x', name: 'casgate-proxy' })
