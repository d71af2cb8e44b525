import type { Server as HttpServer } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { PassthroughHost } from '../config/load.js'
import { TLS_MIN_VERSION, type SniContexts } from '../tls/sni-contexts.js'
import { MAX_CLIENT_HELLO, parseClientHello, type ClientHelloInfo } from './client-hello.js'
import { peekSocket } from './peek.js'

/** SniRouting sends connections for passthrough host names elsewhere than the TLS server. */
export interface SniRouting {
  /** The passthrough host for a server name (undefined: no SNI); undefined means terminate here. */
  passthroughFor: (serverName: string | undefined) => PassthroughHost | undefined
  relay: (client: Socket, hello: Buffer, host: PassthroughHost) => void
}

/** FrontDoorOptions configures the client-facing listener. */
export interface FrontDoorOptions {
  host: string
  port: number
  handshakeTimeoutMs: number
  /** Certificates of the terminated hosts; undefined when every host is passed through. */
  sni: SniContexts | undefined
  /** Set when some host is passed through: the ClientHello is read first, to route by SNI. */
  routing: SniRouting | undefined
  /** Receives every decrypted connection; never listens itself. */
  httpServer: HttpServer
  /** Looks at a decrypted connection before the HTTP server does (the RPC over HTTP tunnel). */
  decrypted?: ((socket: TLSSocket, toHttp: (socket: Socket) => void) => void) | undefined
  logger: Logger
}

/** FrontDoorCounters are what the front door has seen, for the admin listener. */
export interface FrontDoorCounters {
  /** TLS handshakes that failed (bad client, scanner, timeout). */
  handshakeFailures: number
  /** Connections closed because their ClientHello was malformed, too large, or too slow. */
  helloFailures: number
  passthroughConnections: number
  terminatedConnections: number
}

/**
 * FrontDoor owns the client-facing port. A plain TCP listener accepts; when some host is
 * passed through, the ClientHello is read first (without consuming it) and the SNI name
 * decides: pipe the bytes to a backend, or hand the socket to the terminating TLS server, whose
 * decrypted sockets go to the HTTP server behind Fastify. With no passthrough host there is no
 * peek at all.
 */
export class FrontDoor {
  readonly #net: NetServer
  readonly #tls: TlsServer | undefined
  #sni: SniContexts | undefined
  readonly #http: HttpServer
  readonly #sockets = new Set<Socket>()
  readonly #log: Logger
  readonly counters: FrontDoorCounters = { handshakeFailures: 0, helloFailures: 0, passthroughConnections: 0, terminatedConnections: 0 }

  constructor (readonly options: FrontDoorOptions) {
    this.#log = options.logger
    this.#http = options.httpServer
    this.#sni = options.sni
    if (options.sni) {
      const fallback = options.sni.fallbackCertificate
      this.#tls = createTlsServer({
        cert: fallback.certPem,
        key: fallback.keyPem,
        // Through #sni, so that a reload swaps every certificate at once.
        SNICallback: (servername, done) => this.#sni!.callback(servername, done),
        minVersion: TLS_MIN_VERSION,
        handshakeTimeout: options.handshakeTimeoutMs,
        ALPNProtocols: ['http/1.1']
      })
      const toHttp = (socket: Socket): void => {
        this.#http.emit('connection', socket)
        // A peek leaves the socket paused, and the HTTP server does not resume it itself.
        if (socket.isPaused()) socket.resume()
      }
      const decrypted = options.decrypted
      this.#tls.on('secureConnection', decrypted ? (socket: TLSSocket) => decrypted(socket, toHttp) : toHttp)
      this.#tls.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
        this.counters.handshakeFailures++
        this.#log.debug({ err: { code: err.code, message: err.message }, client: socket.remoteAddress }, 'tls handshake failed')
        socket.destroy()
      })
    }
    // Half-open: a passthrough client may send its FIN with the hello, before a backend is
    // connected; the FIN must wait for the backend instead of closing the client. Terminated
    // sockets are governed by their TLS socket, which is not half-open.
    this.#net = createNetServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.#accept(socket))
    this.#net.on('error', (err) => this.#log.error({ err }, 'listener error'))
  }

  /**
   * replaceCertificates makes new handshakes use `sni`; connections already open keep theirs.
   * The set of terminated hosts must be unchanged (a restart changes that).
   */
  replaceCertificates (sni: SniContexts): void {
    if (!this.#tls) throw new Error('no terminated host: nothing to reload')
    this.#sni = sni
    this.#tls.setSecureContext({ cert: sni.fallbackCertificate.certPem, key: sni.fallbackCertificate.keyPem, minVersion: TLS_MIN_VERSION })
  }

  /** handshakeFailures counts TLS handshakes that failed (bad client, scanner, timeout). */
  get handshakeFailures (): number {
    return this.counters.handshakeFailures
  }

  #accept (socket: Socket): void {
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
    // Errors on a client socket are the client's problem; they must never reach the process.
    socket.on('error', () => socket.destroy())
    const routing = this.options.routing
    if (!routing) {
      this.#terminate(socket, undefined)
      return
    }
    peekSocket<ClientHelloInfo>(socket, { timeoutMs: this.options.handshakeTimeoutMs, maxBytes: MAX_CLIENT_HELLO + 64 }, (bytes) => {
      const result = parseClientHello(bytes)
      return result.state === 'complete' ? { state: 'complete', value: result.hello } : result
    }, (outcome) => {
      if (!outcome.ok) {
        this.counters.helloFailures++
        this.#log.debug({ client: socket.remoteAddress, reason: outcome.reason }, 'connection closed before routing')
        socket.destroy()
        return
      }
      const passthrough = routing.passthroughFor(outcome.value.serverName)
      if (passthrough) {
        this.counters.passthroughConnections++
        routing.relay(socket, outcome.bytes, passthrough)
      } else {
        this.#terminate(socket, outcome.bytes)
      }
    })
  }

  #terminate (socket: Socket, peeked: Buffer | undefined): void {
    if (!this.#tls) {
      socket.destroy()
      return
    }
    this.counters.terminatedConnections++
    // Give the peeked bytes back: the TLS socket reads what is buffered on the socket first.
    if (peeked) socket.unshift(peeked)
    this.#tls.emit('connection', socket)
  }

  /** listen opens the port; resolves with the bound address (port 0 picks a free one). */
  listen (): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#net.once('error', reject)
      this.#net.listen({ host: this.options.host, port: this.options.port }, () => {
        this.#net.off('error', reject)
        resolve(this.#net.address() as AddressInfo)
      })
    })
  }

  /** connections is the number of open client connections. */
  get connections (): number {
    return this.#sockets.size
  }

  /**
   * close stops accepting, lets requests in flight finish for up to `graceMs`, then drops
   * whatever is left.
   */
  async close (graceMs = 0): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()))
    this.#http.closeIdleConnections()
    const deadline = Date.now() + graceMs
    while (this.#sockets.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      this.#http.closeIdleConnections()
    }
    for (const socket of this.#sockets) socket.destroy()
    await closed
  }
}
