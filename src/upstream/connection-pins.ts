import type { Socket } from 'node:net'
import type { Client, Dispatcher } from 'undici'
import { DelegatingHandler } from './delegating-handler.js'
import { Lease } from './lease.js'
import type { Server } from './server.js'
import type { UpstreamDispatcher } from './upstream-dispatcher.js'

// NTLM and Negotiate authenticate a TCP connection, not a request (MS-NLMP; IIS keeps the
// logon on the connection). Behind a proxy that means: the challenge, the AUTHENTICATE message
// and every later request of that client connection must travel on one upstream connection of
// their own. Through a shared keep-alive pool, handshakes of different users interleave and a
// request can ride on another user's logon.

const connectionAuth = /^\s*(NTLM|Negotiate)(\s|$)/i

/** isConnectionAuth says whether an Authorization value authenticates the connection. */
export function isConnectionAuth (authorization: string | undefined): boolean {
  return authorization !== undefined && connectionAuth.test(authorization)
}

/** challengesConnectionAuth says whether a WWW-Authenticate value offers NTLM or Negotiate. */
export function challengesConnectionAuth (wwwAuthenticate: string | string[] | undefined): boolean {
  if (wwwAuthenticate === undefined) return false
  const values = Array.isArray(wwwAuthenticate) ? wwwAuthenticate : [wwwAuthenticate]
  return values.some((value) => value.split(',').some((part) => connectionAuth.test(part)))
}

/** ConnectionPin is a client connection's own upstream connection to one server. */
export interface ConnectionPin {
  /** Holds the pin on its server (counted as pinned; a drain's deadline closes the client connection). */
  readonly lease: Lease
  readonly upstream: Client
  /** Requests of this client connection now in flight on the pin. */
  inFlight: number
  /** Set when the upstream connection closed while a request was in flight. */
  closeWhenIdle: boolean
}

/**
 * OfferWatch wraps the handler of a request on a shared connection: when the server answers 401
 * offering NTLM or Negotiate, the client's next request starts a handshake, which must run on a
 * connection of its own to this server — `pin` is called once the response is complete.
 */
class OfferWatch extends DelegatingHandler {
  readonly #pin: () => void
  #offered = false

  constructor (inner: Dispatcher.DispatchHandler, pin: () => void) {
    super(inner)
    this.#pin = pin
  }

  override onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: import('node:http').IncomingHttpHeaders, statusMessage?: string): void {
    if (statusCode === 401 && challengesConnectionAuth(headers['www-authenticate'])) this.#offered = true
    super.onResponseStart(controller, statusCode, headers, statusMessage)
  }

  override onResponseEnd (controller: Dispatcher.DispatchController, trailers: import('node:http').IncomingHttpHeaders): void {
    super.onResponseEnd(controller, trailers)
    if (this.#offered) this.#pin()
  }
}

/**
 * PinnedHandler wraps the handler of a request on a pinned connection: when the server refuses or
 * drops the connection before answering, the logon went with it. `lost` decides (it returns true
 * when it closed the client connection, so that the client logs on anew rather than being moved
 * silently to another server); otherwise the failure goes on as any other.
 */
class PinnedHandler extends DelegatingHandler {
  readonly #lost: (err: Error) => boolean

  constructor (inner: Dispatcher.DispatchHandler, lost: (err: Error) => boolean) {
    super(inner)
    this.#lost = lost
  }

  override onResponseError (controller: Dispatcher.DispatchController, err: Error): void {
    if (!this.responded && this.#lost(err)) return
    super.onResponseError(controller, err)
  }
}

/**
 * ConnectionPins keeps, per client connection, the dedicated upstream connection it is pinned
 * to. A pin lives as long as its client connection; when the server closes the pinned
 * connection, the client connection is closed too (once idle), so that the client
 * re-authenticates on a fresh connection instead of being moved silently.
 */
export class ConnectionPins {
  readonly #pins = new WeakMap<Socket, ConnectionPin>()
  readonly #upstreams: UpstreamDispatcher
  readonly #idleTimeoutMs: number

  constructor (upstreams: UpstreamDispatcher, idleTimeoutMs: number) {
    this.#upstreams = upstreams
    this.#idleTimeoutMs = idleTimeoutMs
  }

  get (socket: Socket): ConnectionPin | undefined {
    return this.#pins.get(socket)
  }

  /** pin gives the client connection its own upstream connection to `server`, for logons on `vdir`. */
  pin (socket: Socket, server: Server, vdir: string): ConnectionPin {
    const existing = this.#pins.get(socket)
    if (existing) return existing
    // The server must not close an authenticated connection before the client would.
    const keepAliveMs = this.#idleTimeoutMs + 10_000
    const upstream = this.#upstreams.dedicated(server.origin, { keepAliveTimeout: keepAliveMs, keepAliveMaxTimeout: keepAliveMs })
    const lease = new Lease(server, 'pin', vdir, () => socket.end())
    const pin: ConnectionPin = { lease, upstream, inFlight: 0, closeWhenIdle: false }
    this.#pins.set(socket, pin)
    socket.once('close', () => {
      lease.release()
      upstream.destroy().catch(() => undefined)
    })
    upstream.on('disconnect', () => {
      if (lease.released) return
      // The server dropped the logon: end the client connection too, after any answer in flight.
      if (pin.inFlight === 0) socket.end()
      else pin.closeWhenIdle = true
    })
    return pin
  }

  /**
   * watchOffer wraps the handler of a request sent on a shared connection so that a 401 offering
   * NTLM/Negotiate pins the client connection to the server that answered.
   */
  watchOffer (socket: Socket, handler: Dispatcher.DispatchHandler, server: () => Server, vdir: string): Dispatcher.DispatchHandler {
    return new OfferWatch(handler, () => {
      if (!socket.destroyed) this.pin(socket, server(), vdir)
    })
  }

  /** dispatch sends a request on the pinned connection; `lost` hears a failure that took the logon away. */
  dispatch (pin: ConnectionPin, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler, lost: (err: Error) => boolean): boolean {
    pin.inFlight++
    return pin.upstream.dispatch(options, new PinnedHandler(handler, lost))
  }

  /** requestDone is called when a request on a pinned connection has finished. */
  requestDone (socket: Socket, pin: ConnectionPin): void {
    pin.inFlight--
    if (pin.closeWhenIdle && pin.inFlight === 0) socket.end()
  }
}
