import { EventEmitter } from 'node:events'
import { Dispatcher } from 'undici'

/**
 * ClientAbort tells the upstream request that its client went away. undici accepts any
 * EventEmitter with `aborted` and an 'abort' event as a signal; this is lighter per request
 * than an AbortController.
 */
export class ClientAbort extends EventEmitter {
  aborted = false
  reason: Error | undefined

  abort (reason: Error = new Error('client closed the connection')): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    this.emit('abort')
  }
}

/**
 * kUpstreamContext keys the per-request context the proxy hands to the dispatcher. reply-from
 * passes request headers through as an object, and symbol keys ride along without ever being
 * sent (undici serialises string keys only).
 */
export const kUpstreamContext = Symbol('casgate.upstreamContext')

/** UpstreamContext is what the dispatcher knows of the client side of a request. */
export interface UpstreamContext {
  signal: ClientAbort
}

/**
 * UpstreamDispatcher is the undici dispatcher reply-from sends every proxied request through.
 * It owns one connection pool per backend origin; the SSL mode plugins fill it with pools
 * built for their transport (plain HTTP, or TLS with the pool's CA, SNI and client
 * certificate). Being the single door to the backends, it is also where connection-oriented
 * authentication (NTLM pinning) hooks in.
 */
export class UpstreamDispatcher extends Dispatcher {
  readonly #byOrigin = new Map<string, Dispatcher>()

  /** add registers the dispatcher that carries requests for `origin` (scheme://host:port). */
  add (origin: string, dispatcher: Dispatcher): void {
    if (this.#byOrigin.has(origin)) throw new Error(`upstream ${origin} is already registered`)
    this.#byOrigin.set(origin, dispatcher)
  }

  has (origin: string): boolean {
    return this.#byOrigin.has(origin)
  }

  override request (options: Dispatcher.RequestOptions, callback?: unknown): never {
    const headers = options.headers as Record<PropertyKey, unknown> | undefined
    const context = headers?.[kUpstreamContext] as UpstreamContext | undefined
    if (context !== undefined) {
      delete headers![kUpstreamContext]
      options = { ...options, signal: context.signal }
    }
    return (super.request as (options: Dispatcher.RequestOptions, callback?: unknown) => never)(options, callback)
  }

  override dispatch (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = typeof options.origin === 'string' ? options.origin : options.origin?.origin
    const upstream = origin === undefined ? undefined : this.#byOrigin.get(origin)
    if (!upstream) {
      handler.onError?.(new Error(`no upstream registered for ${String(origin)}`))
      return true
    }
    return upstream.dispatch(options, handler)
  }

  #all (method: 'close' | 'destroy'): Promise<void> {
    const upstreams = [...this.#byOrigin.values()]
    return Promise.all(upstreams.map((upstream) => method === 'close' ? upstream.close() : upstream.destroy())).then(() => undefined)
  }

  override close (): Promise<void>
  override close (callback: () => void): void
  override close (callback?: () => void): Promise<void> | undefined {
    const done = this.#all('close')
    if (!callback) return done
    done.then(callback, callback)
    return undefined
  }

  override destroy (): Promise<void>
  override destroy (err: Error | null): Promise<void>
  override destroy (callback: () => void): void
  override destroy (err: Error | null, callback: () => void): void
  override destroy (errOrCallback?: Error | null | (() => void), callback?: () => void): Promise<void> | undefined {
    const done = this.#all('destroy')
    const cb = typeof errOrCallback === 'function' ? errOrCallback : callback
    if (!cb) return done
    done.then(cb, cb)
    return undefined
  }
}
