import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import { Client, Dispatcher } from 'undici'
import type { BudgetClass } from './budget.js'

/**
 * UpstreamDispatcher is the undici dispatcher every proxied request goes through.
 * It owns one connection pool per backend origin; the SSL mode plugins fill it with pools
 * built for their transport (plain HTTP, or TLS with the pool's CA, SNI and client
 * certificate). Being the single door to the backends, it is also where connection-oriented
 * authentication (NTLM pinning) hooks in.
 */
export class UpstreamDispatcher extends Dispatcher {
  /** Per origin, the pools of each budget class: long polls never wait for interactive connections. */
  readonly #byOrigin = new Map<string, Readonly<Record<BudgetClass, Dispatcher>>>()
  readonly #clientOptions = new Map<string, Client.Options>()

  /**
   * add registers the shared dispatchers that carry requests for `origin` (scheme://host:port),
   * one per budget class, and the connection options (TLS, timeouts) a dedicated connection to it
   * must use.
   */
  add (origin: string, dispatchers: Readonly<Record<BudgetClass, Dispatcher>>, clientOptions: Client.Options): void {
    if (this.#byOrigin.has(origin)) throw new Error(`upstream ${origin} is already registered`)
    this.#byOrigin.set(origin, dispatchers)
    this.#clientOptions.set(origin, clientOptions)
  }

  /** connectOptions are the TLS settings of `origin` (undefined for plain HTTP), for raw tunnels. */
  connectOptions (origin: string): Record<string, unknown> | undefined {
    const connect = this.#clientOptions.get(origin)?.connect
    return typeof connect === 'object' && connect !== null ? connect as Record<string, unknown> : undefined
  }

  /**
   * socketTo opens a raw connection to a backend with its transport's settings (TLS with the
   * pool's CA, SNI and client certificate for https://), for what undici cannot carry: Outlook
   * Anywhere's RPC_* requests. `connected` names the event that says it is ready.
   */
  socketTo (url: URL): { socket: Socket, connected: 'connect' | 'secureConnect' } {
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80))
    const host = url.hostname.replace(/^\[|\]$/g, '')
    if (url.protocol !== 'https:') return { socket: netConnect({ host, port }), connected: 'connect' }
    const tls = this.connectOptions(url.origin)
    return { socket: tlsConnect({ ...(tls as ConnectionOptions), host, port, ALPNProtocols: ['http/1.1'] }), connected: 'secureConnect' }
  }

  /**
   * dedicated opens a connection to `origin` that belongs to one client connection only: NTLM
   * and Negotiate authenticate the connection, so it must never carry anyone else's requests.
   */
  dedicated (origin: string, overrides: Client.Options = {}): Client {
    const options = this.#clientOptions.get(origin)
    if (!options) throw new Error(`no upstream registered for ${origin}`)
    return new Client(origin, { ...options, ...overrides, pipelining: 1 })
  }

  has (origin: string): boolean {
    return this.#byOrigin.has(origin)
  }

  /** dispatch sends an interactive request (health probes among them). */
  override dispatch (options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    return this.dispatchAs('interactive', options, handler)
  }

  /** dispatchAs sends a request on the pool of its budget class. */
  dispatchAs (kind: BudgetClass, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const origin = typeof options.origin === 'string' ? options.origin : options.origin?.origin
    const upstream = origin === undefined ? undefined : this.#byOrigin.get(origin)
    // Only the proxy builds origins, from configured backends: a miss is a bug, not input.
    if (!upstream) throw new Error(`no upstream registered for ${String(origin)}`)
    return upstream[kind].dispatch(options, handler)
  }

  #all (method: 'close' | 'destroy'): Promise<void> {
    const upstreams = [...this.#byOrigin.values()].flatMap((pools) => [pools.interactive, pools.longPoll])
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
