import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { CasgateError } from '../errors/errors.js'
import { parseRequestHead, type RequestHead } from '../front/request-head.js'
import type { RequestGuard } from '../guard/request-guard.js'
import type { Publications } from '../routing/publications.js'
import { claimedUser } from '../auth/logon-user.js'
import type { BudgetAdmission } from '../upstream/budget-admission.js'
import type { Lease } from '../upstream/lease.js'
import type { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'
import { errorResponseText } from '../errors/error-reply.js'
import { clientAddress, type TrustedProxies } from './headers.js'
import type { RoutedVdir } from './routed-vdir.js'
import { judgeRpcHead, upstreamRpcHead } from './rpc-request.js'
import { RpcUpstream, type SentRequest } from './rpc-upstream.js'
import { upstreamFailure } from './upstream-errors.js'

// One Outlook Anywhere connection, read by casgate's own HTTP/1.1 parser because Node's refuses
// the RPC_* methods. It is a request path like any other, not a pipe: every request head on the
// connection is parsed, guarded (target, rules, Host, client certificate, lockout) and routed
// to /rpc; its body — exactly Content-Length bytes, Outlook's 1 GiB channel — is relayed; the
// next bytes are a request head again or nothing at all. The first request chooses the server
// and opens the connection's own upstream connection (rpc-upstream.ts; NTLM authenticates it),
// which is counted on that server until the client connection ends, so drains see and cut it.

/** RpcChannelOptions wire RPC connections to the guard and the upstream side. */
export interface RpcChannelOptions {
  guard: RequestGuard<RoutedVdir>
  /** Which host's vdir table serves the connection (its SNI name). */
  publications: Publications<RoutedVdir>
  upstreams: UpstreamDispatcher
  trusted: TrustedProxies
  /** How long one request head may take to arrive, from its first byte. */
  headersTimeoutMs: number
  /** How long the connection may sit between requests, nothing on its way either way. */
  idleTimeoutMs: number
  maxHeaderBytes: number
  accessLog: Logger
  /** Gives a channel its lease on a server, with a place in the server's long-poll budget. */
  admission: BudgetAdmission
  /** casgate's own cookies (the forms session), never forwarded. */
  ownCookies: readonly string[]
  /** The client-certificate verdict of the HTTP path (403/421), for the Host of each request. */
  hostCheck: (socket: Socket, hostName: string | undefined) => CasgateError | undefined
  /** A logon of a user locked out for this client: the refusal to answer (after an equalised delay). */
  lockedOut: (authorization: string | undefined, client: string | undefined, url: string) => Promise<unknown> | undefined
  /** Exchange answered 401 to a logon (Basic, NTLM AUTHENTICATE): a failed one (undefined without preauth). */
  upstreamRejected: ((authorization: string, client: string | undefined, url: string, elapsedMs: number) => void) | undefined
}

/** RpcConnection carries one client connection that opened with an RPC_* request. */
export class RpcConnection {
  readonly #options: RpcChannelOptions
  readonly #client: Socket
  readonly #started = performance.now()
  readonly #onClosed: () => void
  #buffer: Buffer
  /**
   * head: reading a request head; body: relaying its body; draining: nothing more is read (the
   * client said Connection: close, or a request was refused) while Exchange answers what it got.
   */
  #state: 'head' | 'body' | 'draining' | 'closed' = 'head'
  #bodyLeft = 0
  /** Waiting for the upstream connection or its drain: the client is paused. */
  #blocked = false
  #headTimer: NodeJS.Timeout | undefined
  #upstream: RpcUpstream | undefined
  #vdir: RoutedVdir | undefined
  /** The channel's hold on its server (with a place in its long-poll budget): a drain deadline cuts it. */
  #lease: Lease | undefined
  #forwarded = 0
  #closeAfterBody = false
  #idleMs = 0
  #bytesIn = 0

  /** `headDeadline` is when the first head must be complete (the peek of its request line counts). */
  constructor (client: Socket, head: Buffer, options: RpcChannelOptions, headDeadline: number, onClosed: () => void) {
    this.#options = options
    this.#client = client
    this.#buffer = head
    this.#onClosed = onClosed
    client.on('data', (chunk: Buffer) => {
      if (this.#state === 'draining' || this.#state === 'closed') return
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk])
      this.#pump()
    })
    client.on('error', () => this.#close('client error'))
    client.once('close', () => this.#close('client closed'))
    client.once('end', () => this.#clientEnded())
    client.on('timeout', () => this.#close('idle timeout'))
    this.#startHeadTimer(Math.max(0, headDeadline - performance.now()))
    this.#pump()
    client.resume()
  }

  /**
   * clientEnded: the client sent its FIN. In the middle of a body the request can never be
   * complete: the channel closes (its lease with it). Between requests Exchange may still owe
   * answers: it is told (FIN upstream) and the channel closes once it has said the rest.
   */
  #clientEnded (): void {
    if (this.#upstream === undefined || (this.#state === 'body' && this.#bodyLeft > 0)) {
      this.#close('client ended')
      return
    }
    this.#upstream.socket.end()
  }

  #startHeadTimer (ms = this.#options.headersTimeoutMs): void {
    clearTimeout(this.#headTimer)
    this.#headTimer = setTimeout(() => this.#refuse(new CasgateError('CASGATE_ERR_BAD_REQUEST', ['request head not received in time']), 'headers timeout'), ms)
    this.#headTimer.unref()
  }

  /**
   * pump works through what the client sent. A bug on this path must cost one connection, not
   * the process (an exception out of a 'data' listener would be uncaught): it is logged and the
   * connection closed.
   */
  #pump (): void {
    this.#safely(() => this.#work())
  }

  #safely (work: () => void): void {
    try {
      work()
    } catch (err) {
      this.#options.accessLog.error({ err, client: this.#client.remoteAddress }, 'rpc connection failed')
      this.#close('internal error')
    }
  }

  /** work relays body bytes to the upstream and hands complete heads to #handle. */
  #work (): void {
    while (this.#buffer.length > 0 && !this.#blocked && (this.#state === 'head' || this.#state === 'body')) {
      if (this.#state === 'body') {
        const n = Math.min(this.#bodyLeft, this.#buffer.length)
        const part = n === this.#buffer.length ? this.#buffer : this.#buffer.subarray(0, n)
        this.#buffer = n === this.#buffer.length ? Buffer.alloc(0) : this.#buffer.subarray(n)
        this.#bodyLeft -= n
        this.#bytesIn += n
        if (!this.#upstream!.socket.write(part)) this.#waitForDrain()
        if (this.#bodyLeft === 0) this.#afterBody()
        continue
      }
      if (this.#headTimer === undefined) this.#startHeadTimer()
      const result = parseRequestHead(this.#buffer, this.#options.maxHeaderBytes)
      if (result.state === 'partial') return
      if (result.state === 'invalid') {
        const error = result.reason === 'headers too large'
          ? new CasgateError('CASGATE_ERR_HEADERS_TOO_LARGE', [this.#options.maxHeaderBytes])
          : new CasgateError('CASGATE_ERR_BAD_REQUEST', [result.reason])
        this.#refuse(error, result.reason)
        return
      }
      clearTimeout(this.#headTimer)
      this.#headTimer = undefined
      this.#buffer = this.#buffer.subarray(result.value.headLength)
      this.#handle(result.value)
    }
  }

  /** afterBody: a request is complete; the next bytes are a head, unless the client said it was the last. */
  #afterBody (): void {
    if (!this.#closeAfterBody) {
      this.#state = 'head'
      this.#refreshIdle()
      return
    }
    this.#state = 'draining'
    this.#buffer = Buffer.alloc(0)
    this.#upstream?.socket.end()
  }

  /** waitForDrain pauses the client until the upstream connection has room again (backpressure). */
  #waitForDrain (): void {
    this.#blocked = true
    this.#client.pause()
    this.#upstream!.socket.once('drain', () => this.#unblock())
  }

  #unblock (): void {
    if (this.#state === 'closed') return
    this.#blocked = false
    if (this.#state === 'draining') return
    this.#client.resume()
    this.#pump()
  }

  /**
   * refreshIdle bounds silence: a channel's body or response may be silent for the vdir's long
   * timeout (8 h for /rpc); between requests, with nothing on its way, the listener's idle
   * timeout applies, as on any keep-alive connection.
   */
  #refreshIdle (): void {
    const between = this.#state === 'head' && this.#buffer.length === 0 && this.#upstream?.between === true
    const ms = between || this.#vdir === undefined ? this.#options.idleTimeoutMs : this.#vdir.timeoutMs
    if (ms === this.#idleMs) return
    this.#idleMs = ms
    this.#client.setTimeout(ms)
  }

  #handle (head: RequestHead): void {
    const peer = this.#client.remoteAddress
    const verdict = judgeRpcHead(head, this.#client as TLSSocket, this.#options.guard, this.#options.publications, this.#options.hostCheck)
    if (!verdict.ok) {
      this.#refuse(verdict.error, verdict.reason, head)
      return
    }
    const vdir = verdict.vdir
    const authorization = head.headers.authorization
    const lockoutSource = clientAddress({ socket: this.#client, headers: head.headers }, this.#options.trusted)
    const locked = this.#options.lockedOut(authorization, lockoutSource, head.target)
    if (locked !== undefined) {
      // Answered like a wrong password, and only after a real check's time.
      this.#blocked = true
      this.#client.pause()
      locked.then(
        () => this.#safely(() => this.#refuse(new CasgateError('CASGATE_ERR_PREAUTH_REQUIRED'), 'locked-out', head)),
        () => this.#close('lockout check failed')
      )
      return
    }
    this.#vdir ??= vdir
    if (this.#upstream === undefined) {
      const server = vdir.selector.select({ url: head.target, headers: head.headers, client: peer })?.backend
      if (server === undefined) {
        this.#refuse(new CasgateError('CASGATE_ERR_NO_BACKEND', [vdir.path]), 'no backend', head)
        return
      }
      // A channel holds its upstream connection for hours: it counts in the long-poll budget.
      const lease = this.#options.admission.tryLease(server, 'longPoll', 'channel', vdir.path, () => this.#close('drain deadline'))
      if (lease === undefined) {
        this.#refuse(new CasgateError('CASGATE_ERR_CAPACITY', [vdir.path]), 'budget full', head)
        return
      }
      this.#connect(lease, vdir)
    }
    const upstream = this.#upstream!
    vdir.selector.count(upstream.backend)
    // The upstream connection is this client connection's alone: its end is the client's to say.
    this.#closeAfterBody = /(^|,)\s*close\s*(,|$)/i.test(String(head.headers.connection ?? ''))
    const text = upstreamRpcHead(head, peer, this.#options.trusted, verdict.host, this.#options.ownCookies, this.#closeAfterBody)
    this.#forwarded++
    this.#bytesIn += head.headLength
    this.#options.accessLog.info({ client: peer, method: head.method, url: head.target, vdir: vdir.path, backend: upstream.backend.name, tunnel: true, contentLength: head.contentLength }, 'request')
    const sent: SentRequest = { logon: claimedUser(authorization) === undefined ? undefined : authorization, source: lockoutSource, url: head.target, sentAt: performance.now() }
    const room = upstream.send(text, sent)
    this.#bodyLeft = head.contentLength
    this.#state = 'body'
    this.#refreshIdle()
    if (head.contentLength === 0) this.#afterBody()
    if (!room && !this.#blocked) this.#waitForDrain()
  }

  /** connect opens the connection's own upstream connection; the client waits until it is up. */
  #connect (lease: Lease, vdir: RoutedVdir): void {
    this.#lease = lease
    const backend = lease.server
    const rejected = this.#options.upstreamRejected
    this.#upstream = new RpcUpstream(backend, this.#options.upstreams, this.#client, vdir.serverPool.config.connectTimeoutMs, this.#options.accessLog, {
      ready: () => this.#safely(() => this.#unblock()),
      failed: (err) => {
        const failure = upstreamFailure(err)
        this.#options.accessLog.warn({ err, backend: backend.name, code: failure.code }, 'rpc channel could not reach the backend')
        this.#forwarded = 0
        this.#refuse(failure, 'upstream unreachable')
      },
      // Exchange's FIN: the client's connection ends once what was relayed is written (client.end);
      // a broken upstream connection takes the client's down at once.
      ended: (graceful) => graceful ? this.#finish() : this.#close('upstream closed'),
      rejected: rejected === undefined ? undefined : (request, elapsedMs) => rejected(request.logon!, request.source, request.url, elapsedMs),
      between: () => this.#safely(() => this.#refreshIdle())
    })
    this.#blocked = true
    this.#client.pause()
  }

  /**
   * refuse answers a request casgate will not forward. Before anything was forwarded the client
   * gets casgate's answer. After, Exchange's responses may still be on their way and an answer of
   * casgate's could land inside one: the input ends instead (nothing more is read or forwarded),
   * Exchange is told so by a FIN, and the connection closes once it has answered what it got, or
   * after the headers timeout.
   */
  #refuse (error: CasgateError, reason: string, head?: RequestHead): void {
    if (this.#state === 'closed' || this.#state === 'draining') return
    this.#options.accessLog.info({ client: this.#client.remoteAddress, method: head?.method, url: head?.target, vdir: this.#vdir?.path, status: error.statusCode, code: error.code, reason, tunnel: true }, 'request')
    if (this.#forwarded === 0) {
      this.#finish()
      this.#client.end(errorResponseText(error))
      this.#client.destroySoon()
      return
    }
    this.#state = 'draining'
    this.#buffer = Buffer.alloc(0)
    this.#client.pause()
    this.#upstream?.socket.end()
    clearTimeout(this.#headTimer)
    this.#headTimer = setTimeout(() => this.#close(reason), this.#options.headersTimeoutMs)
    this.#headTimer.unref()
  }

  #close (_reason: string): void {
    this.#finish()
    this.#client.destroy()
  }

  /** finish releases everything the connection holds, once; the client socket is the caller's to end. */
  #finish (): void {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    this.#buffer = Buffer.alloc(0)
    clearTimeout(this.#headTimer)
    this.#lease?.release()
    const upstream = this.#upstream
    if (upstream !== undefined) {
      upstream.socket.destroy()
      this.#upstream = undefined
      this.#options.accessLog.info({ client: this.#client.remoteAddress, vdir: this.#vdir?.path, backend: upstream.backend.name, tunnel: true, requests: this.#forwarded, bytesIn: this.#bytesIn, bytesOut: upstream.bytesOut, ms: Math.round(performance.now() - this.#started) }, 'rpc channel closed')
    }
    // A client that does not close after Exchange's last byte is closed for it.
    this.#client.setTimeout(this.#options.headersTimeoutMs)
    this.#onClosed()
  }
}
