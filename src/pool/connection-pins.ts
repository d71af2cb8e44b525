import type { Socket } from 'node:net'
import type { Client } from 'undici'
import type { Backend } from './backend-pool.js'
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

/** ConnectionPin is a client connection's own upstream connection to one backend. */
export interface ConnectionPin {
  readonly backend: Backend
  readonly upstream: Client
  /** Requests of this client connection now in flight on the pin. */
  inFlight: number
  /** Set when the upstream connection closed while a request was in flight. */
  closeWhenIdle: boolean
}

/**
 * ConnectionPins keeps, per client connection, the dedicated upstream connection it is pinned
 * to. A pin lives as long as its client connection; when the backend closes the pinned
 * connection, the client connection is closed too (once idle), so that the client
 * re-authenticates on a fresh connection instead of being moved silently.
 */
export class ConnectionPins {
  readonly #pins = new WeakMap<Socket, ConnectionPin>()
  /** Client connections pinned to each backend, for drain deadlines. */
  readonly #byBackend = new Map<Backend, Set<Socket>>()
  readonly #upstreams: UpstreamDispatcher
  readonly #idleTimeoutMs: number

  constructor (upstreams: UpstreamDispatcher, idleTimeoutMs: number) {
    this.#upstreams = upstreams
    this.#idleTimeoutMs = idleTimeoutMs
  }

  get (socket: Socket): ConnectionPin | undefined {
    return this.#pins.get(socket)
  }

  /** pin gives the client connection its own upstream connection to `backend`. */
  pin (socket: Socket, backend: Backend): ConnectionPin {
    const existing = this.#pins.get(socket)
    if (existing) return existing
    // The backend must not close an authenticated connection before the client would.
    const keepAliveMs = this.#idleTimeoutMs + 10_000
    const upstream = this.#upstreams.dedicated(backend.origin, { keepAliveTimeout: keepAliveMs, keepAliveMaxTimeout: keepAliveMs })
    const pin: ConnectionPin = { backend, upstream, inFlight: 0, closeWhenIdle: false }
    this.#pins.set(socket, pin)
    backend.pinned++
    let sockets = this.#byBackend.get(backend)
    if (!sockets) this.#byBackend.set(backend, sockets = new Set())
    sockets.add(socket)
    let released = false
    const release = (): void => {
      if (released) return
      released = true
      backend.pinned--
      sockets.delete(socket)
      upstream.destroy().catch(() => undefined)
    }
    socket.once('close', release)
    upstream.on('disconnect', () => {
      if (released) return
      // The backend dropped the logon: end the client connection too, after any answer in flight.
      if (pin.inFlight === 0) socket.end()
      else pin.closeWhenIdle = true
    })
    return pin
  }

  /** closeAll ends every client connection pinned to `backend` (a drain's deadline has come). */
  closeAll (backend: Backend): number {
    const sockets = this.#byBackend.get(backend)
    if (!sockets) return 0
    const count = sockets.size
    for (const socket of sockets) socket.end()
    return count
  }

  /** requestDone is called when a request on a pinned connection has finished. */
  requestDone (socket: Socket, pin: ConnectionPin): void {
    pin.inFlight--
    if (pin.closeWhenIdle && pin.inFlight === 0) socket.end()
  }
}
