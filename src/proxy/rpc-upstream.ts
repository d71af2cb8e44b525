import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { Server } from '../upstream/server.js'
import type { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'
import { ResponseStatusWatch } from './response-heads.js'

// The upstream half of an Outlook Anywhere connection (rpc-channel.ts): the client connection's
// own connection to one Exchange server, opened within the pool's connect timeout. What Exchange
// sends is relayed to the client as it comes, with backpressure; the status of each response is
// read on the way (response-heads.ts) so that a 401 to a logon counts as a failed one. When
// Exchange ends the connection, the client's ends after what was sent has been written.

/** SentRequest is what a response's status is attributed to. */
export interface SentRequest {
  /** The client's logon attempt (Basic, NTLM AUTHENTICATE), when it sent one. */
  logon: string | undefined
  /** The client as lockout counts it (behind a trusted proxy, the address it forwards). */
  source: string | undefined
  url: string
  sentAt: number
}

/** RpcUpstreamEvents is what the client side hears of its upstream connection. */
export interface RpcUpstreamEvents {
  /** Connected: what was written so far is on its way, the client may be read again. */
  ready: () => void
  /** The connection could not be opened (refused, TLS, connect timeout). */
  failed: (err: Error) => void
  /** Exchange ended the connection (`graceful`: its FIN, after its last byte) or it broke. */
  ended: (graceful: boolean) => void
  /** Exchange answered 401 to a logon. */
  rejected: ((request: SentRequest, elapsedMs: number) => void) | undefined
  /** Everything forwarded has been answered in full: the connection sits between requests. */
  between: () => void
}

/** RpcUpstream is one RPC connection's upstream connection. */
export class RpcUpstream {
  readonly socket: Socket
  readonly backend: Server
  /** Bytes relayed to the client. */
  bytesOut = 0
  readonly #client: Socket
  readonly #events: RpcUpstreamEvents
  readonly #log: Logger
  /** Requests forwarded whose response status has not been seen yet, oldest first. */
  readonly #sent: SentRequest[] = []
  readonly #statuses: ResponseStatusWatch
  #gracefulEnd = false
  #connectTimer: NodeJS.Timeout | undefined

  constructor (backend: Server, upstreams: UpstreamDispatcher, client: Socket, connectTimeoutMs: number, log: Logger, events: RpcUpstreamEvents) {
    this.backend = backend
    this.#client = client
    this.#events = events
    this.#log = log
    this.#statuses = new ResponseStatusWatch((status) => {
      const request = this.#sent.shift()
      if (status === 401 && request?.logon !== undefined) events.rejected?.(request, performance.now() - request.sentAt)
    })
    const { socket, connected } = upstreams.socketTo(backend.url)
    this.socket = socket
    const failed = (err: Error): void => {
      clearTimeout(this.#connectTimer)
      socket.destroy()
      events.failed(err)
    }
    socket.once('error', failed)
    // TLS included: a server that takes the TCP connection and never answers the handshake.
    this.#connectTimer = setTimeout(() => failed(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), connectTimeoutMs)
    this.#connectTimer.unref()
    socket.once(connected, () => {
      clearTimeout(this.#connectTimer)
      socket.off('error', failed)
      socket.setNoDelay(true)
      socket.on('error', () => undefined) // 'close' follows and says it
      socket.on('data', (chunk: Buffer) => this.#relay(chunk))
      socket.once('end', () => {
        this.#gracefulEnd = true
        client.end()
      })
      socket.once('close', () => events.ended(this.#gracefulEnd))
      events.ready()
    })
  }

  /** between says whether no response is on its way: nothing forwarded is unanswered or half sent. */
  get between (): boolean {
    return this.#sent.length === 0 && this.#statuses.between
  }

  /** send writes a request head; false asks the caller to wait for 'drain'. */
  send (head: string, request: SentRequest): boolean {
    // Once framing is lost (a chunked response) statuses can no longer be attributed.
    if (this.#statuses.watching) this.#sent.push(request)
    return this.socket.write(head, 'latin1')
  }

  #relay (chunk: Buffer): void {
    this.bytesOut += chunk.length
    try {
      if (this.#statuses.watching) this.#statuses.feed(chunk)
    } catch (err) {
      // Reading statuses is bookkeeping: a bug there must not stop the relay, let alone the process.
      this.#log.error({ err, backend: this.backend.name }, 'rpc response status watch failed')
    }
    if (!this.#client.write(chunk)) {
      this.socket.pause()
      this.#client.once('drain', () => this.socket.resume())
    }
    if (this.between) this.#events.between()
  }
}
