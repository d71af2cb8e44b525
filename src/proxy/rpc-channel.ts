import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import { CasgateError } from '../errors.js'
import { parseRequestHead, type RequestHead } from '../front/request-head.js'
import type { RequestGuard } from '../guard/request-guard.js'
import type { Backend } from '../pool/backend-pool.js'
import type { UpstreamDispatcher } from '../pool/upstream-dispatcher.js'
import { errorResponseText } from './error-reply.js'
import { clientAddress, upstreamRequestHeaders, type TrustedProxies } from './headers.js'
import type { RoutedVdir } from './proxy-plugin.js'
import { RPC_METHODS } from '../front/request-line.js'
import { upstreamFailure } from './upstream-errors.js'
import { ResponseStatusWatch } from './response-heads.js'
import { claimedUser } from '../auth/logon-user.js'

// One Outlook Anywhere connection, read by casgate's own HTTP/1.1 parser because Node's refuses
// the RPC_* methods. It is a request path like any other, not a pipe: every request head on the
// connection is parsed, guarded (target, rules, Host, client certificate, lockout) and routed
// to /rpc; its body — exactly Content-Length bytes, Outlook's 1 GiB channel — is relayed; the
// next bytes are a request head again or nothing at all. The first request chooses the server
// and opens the connection's own upstream connection (NTLM authenticates it), which is counted
// on that server until the client connection ends, so drains see and cut it.
// Responses are relayed as they come: they come from Exchange, in order.

/** RpcChannelOptions wire RPC connections to the guard and the upstream side. */
export interface RpcChannelOptions {
  guard: RequestGuard<RoutedVdir>
  upstreams: UpstreamDispatcher
  trusted: TrustedProxies
  /** How long one request head may take to arrive, from its first byte. */
  headersTimeoutMs: number
  maxHeaderBytes: number
  accessLog: Logger
  /** The client-certificate verdict of the HTTP path (403/421), for the Host of each request. */
  hostCheck: (socket: Socket, hostName: string | undefined) => CasgateError | undefined
  /** A Basic user locked out for this client: the refusal to answer (after an equalised delay). */
  lockedOut: (authorization: string | undefined, client: string | undefined, url: string) => Promise<unknown> | undefined
  /** Exchange answered 401 to a logon (Basic, NTLM AUTHENTICATE): a failed one (undefined without preauth). */
  upstreamRejected: ((authorization: string, client: string | undefined, url: string, elapsedMs: number) => void) | undefined
}

/** SentRequest is what a response's status is attributed to. */
interface SentRequest {
  /** The client's logon attempt (Basic, NTLM AUTHENTICATE), when it sent one. */
  logon: string | undefined
  client: string | undefined
  url: string
  sentAt: number
}

/** RpcConnection carries one client connection that opened with an RPC_* request. */
export class RpcConnection {
  readonly #options: RpcChannelOptions
  readonly #client: Socket
  readonly #started = performance.now()
  readonly #onClosed: () => void
  #buffer: Buffer
  /** draining: a refused request ended the input; Exchange answers what it got, then the connection closes. */
  #state: 'head' | 'body' | 'draining' | 'closed' = 'head'
  #bodyLeft = 0
  /** Waiting for the upstream connection or its drain: the client is paused. */
  #blocked = false
  #headTimer: NodeJS.Timeout | undefined
  #upstream: Socket | undefined
  #backend: Backend | undefined
  #vdir: RoutedVdir | undefined
  /** What a drain deadline calls. */
  readonly #lease = { cut: () => this.#close('drain deadline') }
  #forwarded = 0
  /** The client said Connection: close: nothing is read after this request's body. */
  #last = false
  /** Requests forwarded whose response has not been seen yet, oldest first. */
  readonly #sent: SentRequest[] = []
  #statuses: ResponseStatusWatch | undefined
  #bytesIn = 0
  #bytesOut = 0

  constructor (client: Socket, head: Buffer, options: RpcChannelOptions, onClosed: () => void) {
    this.#options = options
    this.#client = client
    this.#buffer = head
    this.#onClosed = onClosed
    client.on('data', (chunk: Buffer) => {
      if (this.#state === 'draining') return
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk])
      this.#pump()
    })
    client.on('error', () => this.#close('client error'))
    client.once('close', () => this.#close('client closed'))
    client.once('end', () => { if (this.#upstream === undefined) this.#close('client ended') })
    this.#startHeadTimer()
    this.#pump()
    client.resume()
  }

  #startHeadTimer (): void {
    clearTimeout(this.#headTimer)
    this.#headTimer = setTimeout(() => this.#refuse(new CasgateError('CASGATE_ERR_BAD_REQUEST', ['request head not received in time']), 'headers timeout'), this.#options.headersTimeoutMs)
    this.#headTimer.unref()
  }

  /**
   * pump works through what the client sent. A bug on this path must cost one connection, not
   * the process (an exception out of a 'data' listener would be uncaught): it is logged and the
   * connection closed.
   */
  #pump (): void {
    try {
      this.#work()
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
        if (this.#bodyLeft === 0) this.#state = this.#last ? 'draining' : 'head'
        if (!this.#upstream!.write(part)) this.#waitFor(this.#upstream!)
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

  /** waitFor pauses the client until `upstream` has room again (backpressure). */
  #waitFor (upstream: Socket): void {
    this.#blocked = true
    this.#client.pause()
    upstream.once('drain', () => this.#unblock())
  }

  #unblock (): void {
    if (this.#state === 'closed') return
    this.#blocked = false
    this.#client.resume()
    this.#pump()
  }

  #handle (head: RequestHead): void {
    const client = this.#client.remoteAddress
    if (!RPC_METHODS.has(head.method)) {
      this.#refuse(new CasgateError('CASGATE_ERR_METHOD_NOT_ALLOWED', [head.method, 'an RPC over HTTP connection']), 'not an RPC method', head)
      return
    }
    if (head.headers.host === undefined) {
      this.#refuse(new CasgateError('CASGATE_ERR_BAD_REQUEST', ['no Host header']), 'no host', head)
      return
    }
    const verdict = this.#options.guard.check({ method: head.method, target: head.target, rawHeaders: head.rawHeaders, headers: head.headers, client })
    if (!verdict.ok) {
      this.#refuse(verdict.error, verdict.reason, head)
      return
    }
    const vdir = verdict.vdir
    if (vdir === undefined || vdir.path !== '/rpc') {
      this.#refuse(new CasgateError('CASGATE_ERR_METHOD_NOT_ALLOWED', [head.method, vdir ? vdir.path : 'this path']), 'rpc outside /rpc', head)
      return
    }
    const certificate = this.#options.hostCheck(this.#client, verdict.host?.replace(/:\d+$/, ''))
    if (certificate !== undefined) {
      this.#refuse(certificate, 'client certificate', head)
      return
    }
    const source = clientAddress({ socket: this.#client, headers: head.headers }, this.#options.trusted)
    const locked = this.#options.lockedOut(head.headers.authorization, source, head.target)
    if (locked !== undefined) {
      // Answered like a wrong password, and only after a real check's time.
      this.#blocked = true
      this.#client.pause()
      locked.then(() => this.#refuse(new CasgateError('CASGATE_ERR_PREAUTH_REQUIRED'), 'locked-out', head), () => this.#close('lockout check failed'))
      return
    }
    this.#vdir ??= vdir
    if (this.#backend === undefined) {
      const backend = vdir.selector.select({ url: head.target, headers: head.headers, client })?.backend
      if (backend === undefined) {
        this.#refuse(new CasgateError('CASGATE_ERR_NO_BACKEND', [vdir.path]), 'no backend', head)
        return
      }
      this.#connect(backend, vdir)
    }
    vdir.selector.count(this.#backend!)
    const headers = upstreamRequestHeaders(head.rawHeaders, client, this.#options.trusted, verdict.host!)
    // The upstream connection is this client connection's alone: its end is the client's to say.
    this.#last = /(^|,)\s*close\s*(,|$)/i.test(String(head.headers.connection ?? ''))
    if (this.#last) headers.push('connection', 'close')
    let text = `${head.method} ${head.target} HTTP/1.1\r\n`
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`
    this.#forwarded++
    if (this.#statuses?.watching === true) {
      const authorization = head.headers.authorization
      this.#sent.push({ logon: claimedUser(authorization) === undefined ? undefined : authorization, client: source, url: head.target, sentAt: performance.now() })
    }
    this.#bytesIn += head.headLength
    this.#options.accessLog.info({ client, method: head.method, url: head.target, vdir: vdir.path, backend: this.#backend!.name, tunnel: true, contentLength: head.contentLength }, 'request')
    const upstream = this.#upstream!
    this.#bodyLeft = head.contentLength
    this.#state = head.contentLength > 0 ? 'body' : this.#last ? 'draining' : 'head'
    if (!upstream.write(`${text}\r\n`, 'latin1') && !this.#blocked) this.#waitFor(upstream)
  }

  /** connect opens the connection's own upstream connection; the client waits until it is up. */
  #connect (backend: Backend, vdir: RoutedVdir): void {
    const { socket: upstream, connected: ready } = this.#options.upstreams.socketTo(backend.url)
    this.#upstream = upstream
    this.#backend = backend
    const rejected = this.#options.upstreamRejected
    if (rejected !== undefined) {
      this.#statuses = new ResponseStatusWatch((status) => {
        const request = this.#sent.shift()
        if (status === 401 && request?.logon !== undefined) rejected(request.logon, request.client, request.url, performance.now() - request.sentAt)
      })
    }
    backend.outstanding++
    backend.inFlight.add(this.#lease)
    this.#blocked = true
    this.#client.pause()
    const connected = (): void => {
      upstream.off('error', failed)
      upstream.setNoDelay(true)
      upstream.on('error', () => this.#close('upstream error'))
      upstream.once('close', () => this.#close('upstream closed'))
      // Long channels are silent for long: the vdir's timeout bounds silence both ways
      // (a socket's timer is reset by reads and writes alike).
      this.#client.setTimeout(vdir.timeoutMs, () => this.#close('idle timeout'))
      upstream.on('data', (chunk: Buffer) => {
        this.#bytesOut += chunk.length
        if (this.#statuses?.watching === true) this.#statuses.feed(chunk)
        if (!this.#client.write(chunk)) {
          upstream.pause()
          this.#client.once('drain', () => upstream.resume())
        }
      })
      upstream.once('end', () => this.#client.end())
      this.#unblock()
    }
    const failed = (err: Error): void => {
      const failure = upstreamFailure(err)
      this.#options.accessLog.warn({ err, backend: backend.name, code: failure.code }, 'rpc channel could not reach the backend')
      this.#forwarded = 0
      this.#refuse(failure, 'upstream unreachable')
    }
    upstream.once('error', failed)
    upstream.once(ready, connected)
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
    clearTimeout(this.#headTimer)
    this.#client.pause()
    this.#upstream?.end()
    this.#headTimer = setTimeout(() => this.#close(reason), this.#options.headersTimeoutMs)
    this.#headTimer.unref()
  }

  #close (_reason: string): void {
    if (this.#state === 'closed') return
    this.#finish()
    this.#client.destroy()
  }

  /** finish releases everything the connection holds, once. */
  #finish (): void {
    this.#state = 'closed'
    this.#buffer = Buffer.alloc(0)
    clearTimeout(this.#headTimer)
    this.#upstream?.destroy()
    const backend = this.#backend
    if (backend !== undefined) {
      backend.outstanding--
      backend.inFlight.delete(this.#lease)
      this.#backend = undefined
      this.#options.accessLog.info({ client: this.#client.remoteAddress, vdir: this.#vdir?.path, backend: backend.name, tunnel: true, requests: this.#forwarded, bytesIn: this.#bytesIn, bytesOut: this.#bytesOut, ms: Math.round(performance.now() - this.#started) }, 'rpc channel closed')
    }
    this.#onClosed()
  }
}
