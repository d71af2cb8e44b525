import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import { claimedUser } from '../auth/logon-user.js'
import { sendError, writeError } from '../errors/error-reply.js'
import { CasgateError } from '../errors/errors.js'
import type { GatePass } from '../preauth/gate-outcome.js'
import type { PreauthGate } from '../preauth/preauth-gate.js'
import type { BudgetAdmission } from '../upstream/budget-admission.js'
import type { BudgetClass } from '../upstream/budget.js'
import { isConnectionAuth, type ConnectionPin, type ConnectionPins } from '../upstream/connection-pins.js'
import { Lease } from '../upstream/lease.js'
import { RetryElsewhere } from '../upstream/retry-elsewhere.js'
import type { Server } from '../upstream/server.js'
import type { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'
import { removeCookies } from '../util/cookies.js'
import { declaresBody } from '../util/request-body.js'
import type { FailureReport } from './exchange-events.js'
import { clientAddress, replaceHeader, upstreamRequestHeaders, type TrustedProxies } from './headers.js'
import type { RoutedVdir } from './routed-vdir.js'
import { UpstreamExchange } from './upstream-exchange.js'
import { uploadOf } from './upload.js'

// RFC 9110 §9.2.2; PUT and DELETE are idempotent too but carry state Exchange acts on once.
const idempotent = new Set(['GET', 'HEAD', 'OPTIONS'])

/** RequestRecord is what the access line says of one request, and what its end releases. */
export interface RequestRecord {
  start: number
  client: string | undefined
  vdir: string | undefined
  /** Whether the vdir holds its requests (they get the long-poll duration histogram). */
  longPoll: boolean
  /** The host block whose table routed it (its first name), for metrics. */
  site: string
  /** The request's hold on its server (moved by a retry), released when the response closes. */
  lease: Lease | undefined
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
}

/** ForwardOptions are what sending a request upstream needs. */
export interface ForwardOptions {
  upstreams: UpstreamDispatcher
  pins: ConnectionPins
  admission: BudgetAdmission
  trusted: TrustedProxies
  /** Client socket idle timeout outside long requests; a vdir with a longer timeout raises it per request. */
  idleTimeoutMs: number
  preauth: PreauthGate | undefined
  events: FailureReport
  accessLog: Logger
}

/**
 * requestForwarder is the select and dispatch steps of the request path: it chooses the server
 * (the NTLM pin, else the vdir's affinity), takes the request's lease there with a place in the
 * server's budget, and dispatches the request with the policies that apply wrapped around the
 * handler that relays the response: retry elsewhere for what may be repeated, the NTLM offer
 * watch and the pinned-logon check.
 */
export function requestForwarder (options: ForwardOptions): (request: FastifyRequest, reply: FastifyReply, record: RequestRecord, vdir: RoutedVdir, pass: GatePass | undefined) => void {
  const { upstreams, pins, admission, trusted, idleTimeoutMs, preauth, events, accessLog } = options
  const preauthCookies = preauth?.forms.ownCookies ?? []
  const exhausted = new Set<string>()

  return function forward (request, reply, record, vdir, pass) {
    const res = reply.raw
    const socket = request.raw.socket
    const url = request.url
    let pin = pins.get(socket)
    if (pin && !vdir.serverPool.servers.includes(pin.lease.server)) pin = undefined // another pool: not this logon's business
    const affinity = vdir.selector
    let server: Server | undefined
    let affinityCookie: string | undefined
    if (pin) {
      server = pin.lease.server
      // An NTLM AUTHENTICATE names the user only now, on a connection already bound: remember it.
      if (request.headers.authorization !== undefined) affinity.learn({ url, headers: request.headers, client: record.client }, server)
    } else {
      const choice = affinity.select({ url, headers: request.headers, client: affinity.policy === 'source-ip' ? record.source ?? clientAddress(request.raw, trusted) : record.client })
      server = choice?.backend
      affinityCookie = choice?.setCookie
    }
    if (server === undefined) {
      // One line when a vdir runs out of servers, not one per request.
      if (!exhausted.has(vdir.path)) {
        exhausted.add(vdir.path)
        accessLog.error({ vdir: vdir.path, pool: vdir.pool }, 'no healthy backend left for vdir')
      }
      return sendError(reply, new CasgateError('CASGATE_ERR_NO_BACKEND', [vdir.path]))
    }
    if (exhausted.size > 0 && exhausted.delete(vdir.path)) accessLog.info({ vdir: vdir.path, pool: vdir.pool }, 'vdir has a healthy backend again')
    if (!pin && isConnectionAuth(request.headers.authorization)) pin = pins.pin(socket, server, vdir.path)
    const body = declaresBody(request.headers) ? uploadOf(request.raw, res) : null

    // From here casgate writes the response itself, upstream bytes straight to the socket.
    reply.hijack()
    // Long polls (ActiveSync Ping, MAPI NotificationWait) leave the client socket silent for as
    // long as the server holds the request; the socket must outlive the upstream timeout.
    if (vdir.timeoutMs > idleTimeoutMs) socket.setTimeout(vdir.timeoutMs + 5_000)
    const headers = upstreamRequestHeaders(request.raw.rawHeaders, record.client, trusted, record.host)
    if (preauth !== undefined) {
      // casgate's own cookies are nobody else's business; a forms session logs on to Exchange with Basic.
      removeCookies(headers, preauthCookies)
      if (pass?.authorization !== undefined) replaceHeader(headers, 'authorization', pass.authorization)
    }
    const unchecked = preauth !== undefined && pass !== undefined && pass.user === undefined && pass.authorization === undefined && claimedUser(request.headers.authorization) !== undefined
    const kind: BudgetClass = vdir.longPoll ? 'longPoll' : 'interactive'
    const dispatchOptions = (target: Server): Dispatcher.DispatchOptions => ({
      origin: target.origin,
      ...(target.tlsServerName ? { servername: target.tlsServerName } : {}),
      path: url,
      method: request.method as 'GET',
      headers,
      body,
      headersTimeout: vdir.timeoutMs,
      bodyTimeout: vdir.timeoutMs
    })
    const cookiesFor = (cookie: string | undefined): string[] | undefined =>
      pass?.setCookies === undefined ? (cookie === undefined ? undefined : [cookie]) : cookie === undefined ? pass.setCookies : [...pass.setCookies, cookie]

    const send = (lease: Lease): void => {
      record.lease = lease
      const exchange = new UpstreamExchange(res, events, lease, vdir.path)
      record.exchange = exchange
      exchange.responseCookies = cookiesFor(affinityCookie)
      if (affinity.followsCookies) exchange.followCookie = affinity
      exchange.hardening = vdir.hardening
      if (body !== null) exchange.request = request.raw
      // A logon Exchange checked instead of casgate (Basic, NTLM AUTHENTICATE): its 401 is a failed one.
      if (unchecked) exchange.onUnauthorized = () => preauth!.upstreamRejected(request.headers.authorization, record.source, url, performance.now() - record.start)
      affinity.count(lease.server)
      if (pin) {
        record.pin = pin
        // A pinned connection whose server is gone is closed, not moved: the client logs on anew.
        pins.dispatch(pin, dispatchOptions(lease.server), exchange, (err) => {
          const error = exchange.clientBrokeOff ? undefined : events.lostLogon(err)
          if (error === undefined) return false
          events.report(exchange, error, err, true)
          res.destroy()
          return true
        })
        return
      }
      let handler: Dispatcher.DispatchHandler = pins.watchOffer(socket, exchange, () => lease.server, vdir.path)
      // Retried at most once, and only what may be repeated: idempotent methods without a body.
      if (body === null && idempotent.has(request.method)) {
        handler = new RetryElsewhere(handler, (err, again) => {
          const error = events.mayRepeat(err)
          if (error === undefined || res.destroyed) return false
          const next = vdir.serverPool.select({ vdir: vdir.path, exclude: lease.server })
          // The retry needs a place on the next server now; it does not queue for one.
          if (next === undefined || !next.budgets[kind].tryAcquire()) return false
          events.report(exchange, error, err)
          lease.move(next, next.budgets[kind])
          affinity.count(next)
          // A cookie handed out with the failed attempt would send the browser back to it.
          if (affinityCookie !== undefined) exchange.responseCookies = cookiesFor(affinityCookie = affinity.cookieFor(next))
          upstreams.dispatchAs(kind, dispatchOptions(next), again)
          return true
        })
      }
      upstreams.dispatchAs(kind, dispatchOptions(lease.server), handler)
    }

    // A drain deadline: the exchange aborts upstream and closes the client; before one exists, the client alone.
    const cut = (): void => {
      if (record.exchange !== undefined) record.exchange.cut()
      else res.destroy()
    }
    // A pinned connection is the client's own: it takes no place in the shared pools' budgets.
    if (pin !== undefined) return send(new Lease(server, 'request', vdir.path, cut))
    const lease = admission.lease(server, kind, vdir.path, vdir.serverPool.config.queueTimeoutMs, res, cut)
    if (!(lease instanceof Promise)) return send(lease)
    lease.then((granted) => {
      if (res.destroyed) return granted?.release()
      if (granted === undefined) return writeError(res, new CasgateError('CASGATE_ERR_CAPACITY', [vdir.path]))
      send(granted)
    }).catch((err: unknown) => writeError(res, new CasgateError('CASGATE_ERR_INTERNAL', [], { cause: err })))
  }
}
