import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { VdirAffinity } from '../affinity/vdir-affinity.js'
import type { CasgateError } from '../errors/errors.js'
import type { Lease } from '../upstream/lease.js'
import type { Server } from '../upstream/server.js'
import { clientResponseHeaders } from './headers.js'
import { hardenResponse, type ResponseHardening } from './response-hardening.js'
import { upstreamFailure } from './upstream-errors.js'

/** ExchangeEvents lets the proxy hear how an exchange ended, for logs and counters. */
export interface ExchangeEvents {
  /** The upstream failed before a response could start; `error` is what the client gets. */
  onFailure: (exchange: UpstreamExchange, error: CasgateError, cause: Error) => void
  /** The client went away mid-request (its body broke off): nobody to answer, no server to blame. */
  onClientAbort: (exchange: UpstreamExchange, cause: Error) => void
}

/**
 * UpstreamExchange carries one proxied request: it is the undici dispatch handler for the
 * upstream side and writes the response straight to the client's ServerResponse. No
 * per-request streams or promises: on this path the proxy's CPU per request is what limits
 * throughput, and a raw handler costs about half of reply-from's stream pipeline.
 * Backpressure: when the client cannot take more, the upstream read is paused until 'drain'.
 */
export class UpstreamExchange implements Dispatcher.DispatchHandler {
  readonly res: ServerResponse
  readonly events: ExchangeEvents
  /** Response body bytes relayed to the client. */
  bodyBytes = 0
  /** Whether the upstream answered (headers relayed); false means casgate wrote the answer. */
  relayed = false
  /** Set-Cookie values of casgate's own (affinity, a refreshed session) added to the response. */
  responseCookies: string[] | undefined
  /** Headers added to the response (HSTS, the OWA CSP mitigation); undefined for none. */
  hardening: ResponseHardening | undefined
  /** Called when the backend answers 401 (a failed logon, when the credentials were the client's). */
  onUnauthorized: (() => void) | undefined
  /** The client's request, when its body is relayed: a failure of it is the client's. */
  request: IncomingMessage | undefined
  /** Set when the vdir follows a backend cookie: its Set-Cookie values are learned. */
  followCookie: VdirAffinity | undefined
  /** The request's hold on its server; a retry moves it. */
  readonly lease: Lease
  readonly vdir: string
  #controller: Dispatcher.DispatchController | undefined
  #done = false

  constructor (res: ServerResponse, events: ExchangeEvents, lease: Lease, vdir: string) {
    this.res = res
    this.events = events
    this.lease = lease
    this.vdir = vdir
  }

  /** server is where the request is now (after a retry, the second server). */
  get server (): Server {
    return this.lease.server
  }

  /** cut ends the exchange from casgate's side (a drain deadline): upstream aborted, client connection closed. */
  cut (): void {
    this.clientGone()
    this.res.destroy()
  }

  /** clientGone aborts the upstream request when the client leaves before the response is complete. */
  clientGone (): void {
    if (this.#done) return
    this.#done = true
    this.#controller?.abort(new Error('client closed the connection'))
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#done) controller.abort(new Error('client closed the connection'))
  }

  /** clientBrokeOff says whether the client's request body broke off (its connection closed mid-upload). */
  get clientBrokeOff (): boolean {
    const body = this.request
    return body !== undefined && (body.errored !== null || (body.destroyed && !body.complete))
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    // 1xx interim responses (100 Continue) were already handled on the client side.
    if (statusCode < 200) return
    if (statusCode === 401) this.onUnauthorized?.()
    const res = this.res
    if (res.destroyed) {
      controller.abort(new Error('client closed the connection'))
      return
    }
    this.followCookie?.learnFromResponse(headers['set-cookie'], this.lease.server)
    const out = clientResponseHeaders(headers)
    const cookies = this.responseCookies
    if (cookies !== undefined) for (const cookie of cookies) out.push('set-cookie', cookie)
    if (this.hardening !== undefined) hardenResponse(out, this.hardening)
    try {
      res.writeHead(statusCode, statusMessage || undefined, out)
    } catch (err) {
      // A header Node refuses to write (invalid characters): the response cannot be relayed.
      controller.abort(err as Error)
      return
    }
    this.relayed = true
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bodyBytes += chunk.length
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', () => controller.resume())
    }
  }

  onResponseEnd (): void {
    this.#done = true
    this.res.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    const clientGone = this.#done
    this.#done = true
    if (clientGone) return
    // Every failure is classified by the side that failed: a request body that broke off (the
    // client's connection closed: Node's 'aborted') surfaces here as a reset, yet it is the
    // client's doing, not the server's, and must never count against the server's health.
    if (this.clientBrokeOff) {
      this.events.onClientAbort(this, err)
      return
    }
    const res = this.res
    if (this.relayed || res.headersSent) {
      // The status line is out: the only honest signal left is to cut the connection.
      res.destroy(err)
      return
    }
    this.events.onFailure(this, upstreamFailure(err), err)
  }
}
