import type { Server as HttpServer } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import { TLS_MIN_VERSION, type SniContexts } from '../tls/sni-contexts.js'

/** FrontDoorOptions configures the client-facing listener. */
export interface FrontDoorOptions {
  host: string
  port: number
  handshakeTimeoutMs: number
  sni: SniContexts
  /** Receives every decrypted connection; never listens itself. */
  httpServer: HttpServer
  logger: Logger
}

/**
 * FrontDoor owns the client-facing port. A plain TCP listener accepts, so that the
 * connection can be looked at before TLS (SNI passthrough); it then hands the socket to the
 * terminating TLS server, whose decrypted sockets go to the HTTP server behind Fastify.
 */
export class FrontDoor {
  readonly #net: NetServer
  readonly #tls: TlsServer
  readonly #http: HttpServer
  readonly #sockets = new Set<Socket>()
  readonly #log: Logger
  /** handshakeFailures counts TLS handshakes that failed (bad client, scanner, timeout). */
  handshakeFailures = 0

  constructor (readonly options: FrontDoorOptions) {
    this.#log = options.logger
    this.#http = options.httpServer
    const fallback = options.sni.fallbackCertificate
    this.#tls = createTlsServer({
      cert: fallback.certPem,
      key: fallback.keyPem,
      SNICallback: options.sni.callback,
      minVersion: TLS_MIN_VERSION,
      handshakeTimeout: options.handshakeTimeoutMs,
      ALPNProtocols: ['http/1.1']
    })
    this.#tls.on('secureConnection', (socket: TLSSocket) => this.#http.emit('connection', socket))
    this.#tls.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      this.handshakeFailures++
      this.#log.debug({ err: { code: err.code, message: err.message }, client: socket.remoteAddress }, 'tls handshake failed')
      socket.destroy()
    })
    this.#net = createNetServer({ noDelay: true }, (socket) => this.#accept(socket))
    this.#net.on('error', (err) => this.#log.error({ err }, 'listener error'))
  }

  #accept (socket: Socket): void {
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
    // Errors on a client socket are the client's problem; they must never reach the process.
    socket.on('error', () => socket.destroy())
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
