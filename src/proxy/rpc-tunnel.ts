import { STATUS_CODES } from 'node:http'
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import type { Logger } from 'pino'
import { CasgateError } from '../errors.js'
import { peekSocket } from '../front/peek.js'
import { inspectRequestLine, MAX_REQUEST_LINE, RPC_METHODS, type RequestLine } from '../front/request-line.js'
import { splice } from '../front/splice.js'
import type { UpstreamDispatcher } from '../pool/upstream-dispatcher.js'
import type { VdirTable } from '../routing/vdir-table.js'
import { errorBody } from './error-reply.js'
import type { RoutedVdir } from './proxy-plugin.js'
import { upstreamFailure } from './upstream-errors.js'

// Outlook Anywhere (RPC over HTTP) opens two long-lived requests per session, RPC_IN_DATA and
// RPC_OUT_DATA, with Content-Lengths near 1 GB, open for hours. Node's HTTP parser has a fixed
// method table and answers them 400, with no flag to allow them. So on a decrypted connection
// casgate reads the first request line itself: an RPC method to the /rpc vdir is routed like any
// request (vdir, backend, offload or re-encrypt) and the connection becomes a byte tunnel to
// that backend — the NTLM handshake inside stays on one upstream connection by construction.
// Every other connection goes on to the HTTP server with the peeked bytes given back.

/** RpcTunnelOptions wire the tunnel to routing and the upstream side. */
export interface RpcTunnelOptions {
  vdirs: VdirTable<RoutedVdir>
  upstreams: UpstreamDispatcher
  /** How long a new connection may take to send its request line. */
  requestLineTimeoutMs: number
  accessLog: Logger
}

function answer (socket: Socket, error: CasgateError): void {
  const body = errorBody(error.statusCode, error.code, error.message)
  socket.end(`HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
}

/** RpcTunnel sits between TLS and the HTTP server for every decrypted connection. */
export class RpcTunnel {
  readonly #options: RpcTunnelOptions
  /** Tunnels open now. */
  open = 0

  constructor (options: RpcTunnelOptions) {
    this.#options = options
  }

  /** accept looks at a decrypted connection's first request line and tunnels it or hands it on. */
  accept (socket: Socket, toHttp: (socket: Socket) => void): void {
    peekSocket<RequestLine>(socket, { timeoutMs: this.#options.requestLineTimeoutMs, maxBytes: MAX_REQUEST_LINE }, inspectRequestLine, (outcome) => {
      if (outcome.ok && RPC_METHODS.has(outcome.value.method.toUpperCase())) {
        this.#tunnel(socket, outcome.value, outcome.bytes)
        return
      }
      if (!outcome.ok && outcome.bytes.length === 0) {
        socket.destroy()
        return
      }
      // Not RPC (or not HTTP at all): the HTTP server answers it, 400 included.
      socket.unshift(outcome.bytes)
      toHttp(socket)
    })
  }

  #tunnel (client: Socket, line: RequestLine, head: Buffer): void {
    const started = performance.now()
    const vdir = this.#options.vdirs.match(line.target)
    if (!vdir || vdir.path.toLowerCase() !== '/rpc') {
      answer(client, new CasgateError('CASGATE_ERR_METHOD_NOT_ALLOWED', [line.method, vdir ? vdir.path : 'this path']))
      return
    }
    // Only the request line is known here: source-ip affinity applies, the others balance.
    const backend = vdir.selector.select({ url: line.target, headers: {}, client: client.remoteAddress })?.backend
    if (!backend) {
      answer(client, new CasgateError('CASGATE_ERR_NO_BACKEND', [vdir.path]))
      return
    }
    const tls = this.#options.upstreams.connectOptions(backend.origin)
    const port = Number(backend.url.port || (backend.url.protocol === 'https:' ? 443 : 80))
    const host = backend.url.hostname.replace(/^\[|\]$/g, '')
    const upstream: Socket = backend.url.protocol === 'https:'
      ? tlsConnect({ ...(tls as ConnectionOptions), host, port, ALPNProtocols: ['http/1.1'] })
      : netConnect({ host, port })
    const connectedEvent = backend.url.protocol === 'https:' ? 'secureConnect' : 'connect'
    const log = this.#options.accessLog
    const fail = (err: Error): void => {
      upstream.destroy()
      const failure = upstreamFailure(err)
      log.warn({ err, backend: backend.name, code: failure.code }, 'rpc tunnel could not reach the backend')
      answer(client, failure)
    }
    upstream.once('error', fail)
    backend.outstanding++
    vdir.selector.count(backend)
    this.open++
    let bytesIn = 0
    let bytesOut = 0
    upstream.once(connectedEvent, () => {
      upstream.off('error', fail)
      upstream.setNoDelay(true)
      client.on('data', (chunk: Buffer) => { bytesIn += chunk.length })
      upstream.on('data', (chunk: Buffer) => { bytesOut += chunk.length })
      upstream.write(head)
      bytesIn += head.length
      splice(client, upstream, vdir.timeoutMs, () => undefined)
    })
    client.once('close', () => {
      upstream.destroy()
      backend.outstanding--
      this.open--
      log.info({ client: client.remoteAddress, method: line.method, url: line.target, vdir: vdir.path, backend: backend.name, tunnel: true, bytesIn, bytesOut, ms: Math.round(performance.now() - started) }, 'request')
    })
  }
}
