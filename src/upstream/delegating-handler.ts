import type { IncomingHttpHeaders } from 'node:http'
import type { Dispatcher } from 'undici'

/**
 * DelegatingHandler passes every undici dispatch callback on to the handler it wraps. Policies
 * that watch or redirect an exchange (retry elsewhere, NTLM pinning) extend it and override the
 * one callback they care about, so the handler that relays the response stays free of them.
 */
export class DelegatingHandler implements Dispatcher.DispatchHandler {
  protected readonly inner: Dispatcher.DispatchHandler
  /** Whether a final (non-1xx) response started: after that, nothing may be redirected. */
  protected responded = false

  constructor (inner: Dispatcher.DispatchHandler) {
    this.inner = inner
  }

  onRequestStart (controller: Dispatcher.DispatchController, context: unknown): void {
    this.inner.onRequestStart?.(controller, context)
  }

  onRequestUpgrade (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, socket: import('node:stream').Duplex): void {
    this.inner.onRequestUpgrade?.(controller, statusCode, headers, socket)
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    if (statusCode >= 200) this.responded = true
    this.inner.onResponseStart?.(controller, statusCode, headers, statusMessage)
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.inner.onResponseData?.(controller, chunk)
  }

  onResponseEnd (controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.inner.onResponseEnd?.(controller, trailers)
  }

  onResponseError (controller: Dispatcher.DispatchController, err: Error): void {
    this.inner.onResponseError?.(controller, err)
  }
}
