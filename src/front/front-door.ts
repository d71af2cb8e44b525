import type { Server as HttpServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import type { Logger } from 'pino'
import type { PassthroughHost } from '../config/load.js'
import { certificateTlsPolicy, CLIENT_TLS_POLICY, type SniContexts } from '../tls/sni-contexts.js'
import { MAX_CLIENT_HELLO, parseClientHello, type ClientHelloInfo } from './client-hello.js'
import { peekSocket } from './peek.js'
import { ConnectionLimits } from './connection-limits.js'
import { ClientPort } from './client-port.js'

/** SniRouting decides by the ClientHello's server name where a connection goes. */
export interface SniRouting {
  /** The passthrough host for a server name (undefined: no SNI); undefined means terminate here. */
  passthroughFor: (serverName: string | undefined) => PassthroughHost | undefined
  relay: (client: Socket, hello: Buffer, host: PassthroughHost) => void
  /** Whether any terminated host requires client certificates (a second TLS server exists for them). */
  hasClientCertificateHosts: boolean
  /** Whether the terminated host of this name asks for a client certificate in the handshake. */
  requiresClientCertificate: (serverName: string | undefined) => boolean
}

/** FrontDoorOptions configures the client-facing listener. */
export interface FrontDoorOptions {
  host: string
  port: number
  handshakeTimeoutMs: number
  /** Most connections open at once; more are closed at accept (listen.maxConnections). */
  maxConnections: number
  /** Most connections open at once from one address, IPv6 by /64 (listen.maxConnectionsPerAddress). */
  maxConnectionsPerAddress: number
  /** Addresses exempt from the per-address limit: trusted proxies, which carry many clients. */
  unlimitedAddress?: ((address: string) => boolean) | undefined
  /** Certificates of the terminated hosts; undefined when every host is passed through. */
  sni: SniContexts | undefined
  /** Set when some host is passed through: the ClientHello is read first, to route by SNI. */
  routing: SniRouting | undefined
  /** Receives every decrypted connection; never listens itself. */
  httpServer: HttpServer
  /** Looks at a decrypted connection before the HTTP server does (the RPC over HTTP tunnel). */
  decrypted?: ((socket: TLSSocket, toHttp: (socket: Socket) => void) => void) | undefined
  /**
   * The port to serve, already listening when a reload hands it over from the previous front
   * door; by default the door opens a port of its own.
   */
  listener?: ClientPort | undefined
  logger: Logger
}

/**
 * presentedVerifiedCertificate says whether the client showed a certificate the host's CA verifies.
 * `authorized` alone is not enough: on a resumed TLS 1.3 session Node reports authorized without
 * any peer certificate, so a ticket from a handshake that showed none (or from another name) would
 * pass for one that did.
 */
export function presentedVerifiedCertificate (socket: TLSSocket): boolean {
  return socket.authorized && socket.getPeerCertificate()?.subject !== undefined
}

/** sameName compares the peeked server name with the one TLS negotiated (case, a trailing dot). */
function sameName (peeked: string | undefined, negotiated: string | false | null | undefined): boolean {
  const fold = (name: string | false | null | undefined): string => typeof name === 'string' ? name.toLowerCase().replace(/\.$/, '') : ''
  return fold(peeked) === fold(negotiated)
}

/** FrontDoorCounters are what the front door has seen, for the admin listener. */
export interface FrontDoorCounters {
  /** TLS handshakes that failed (bad client, scanner, timeout). */
  handshakeFailures: number
  /** Connections closed because their ClientHello was malformed, too large, or too slow. */
  helloFailures: number
  passthroughConnections: number
  terminatedConnections: number
  /** Connections closed at accept because listen.maxConnections were open. */
  refusedAtTotalLimit: number
  /** Connections closed at accept because their address had listen.maxConnectionsPerAddress open. */
  refusedAtAddressLimit: number
}

/**
 * FrontDoor owns the client-facing port. A plain TCP listener accepts; when some host is
 * passed through, the ClientHello is read first (without consuming it) and the SNI name
 * decides: pipe the bytes to a backend, or hand the socket to the terminating TLS server, whose
 * decrypted sockets go to the HTTP server behind Fastify. With no passthrough host there is no
 * peek at all.
 */
export class FrontDoor {
  readonly #port: ClientPort
  readonly #accept = (socket: Socket): void => this.#admit(socket)
  readonly #tls: TlsServer | undefined
  /** The TLS server that asks for client certificates, for the hosts that require them. */
  readonly #tlsWithClientCertificate: TlsServer | undefined
  /** Decrypted connections of hosts that require a client certificate (authorized or not). */
  readonly #certificateRequired = new WeakSet<Socket>()
  /** The server name each routed connection's first ClientHello gave, by its TCP socket. */
  readonly #peekedNames = new WeakMap<Socket, { name: string | undefined }>()
  #sni: SniContexts | undefined
  readonly #http: HttpServer
  readonly #sockets = new Set<Socket>()
  readonly #limits: ConnectionLimits
  readonly #log: Logger
  readonly counters: FrontDoorCounters = {
    handshakeFailures: 0,
    helloFailures: 0,
    passthroughConnections: 0,
    terminatedConnections: 0,
    refusedAtTotalLimit: 0,
    refusedAtAddressLimit: 0
  }

  constructor (readonly options: FrontDoorOptions) {
    this.#log = options.logger
    this.#http = options.httpServer
    this.#sni = options.sni
    if (options.sni) {
      this.#tls = this.#tlsServer(options.sni, false)
      // Client certificates are requested only where required: asked for elsewhere, browsers
      // with certificates installed would prompt their users on every site.
      if (options.routing?.hasClientCertificateHosts) this.#tlsWithClientCertificate = this.#tlsServer(options.sni, true)
    }
    this.#port = options.listener ?? new ClientPort(options.logger)
    this.#limits = new ConnectionLimits({ ...options, perAddress: this.#port.perAddress }, this.counters, options.logger)
  }

  #tlsServer (sni: SniContexts, requestCert: boolean): TlsServer {
    const fallback = sni.fallbackCertificate
    const server = createTlsServer({
      cert: fallback.certPem,
      key: fallback.keyPem,
      // Through #sni, so that a reload swaps every certificate at once.
      SNICallback: (servername, done) => this.#sni!.callback(servername, done),
      ...(requestCert ? certificateTlsPolicy() : CLIENT_TLS_POLICY),
      handshakeTimeout: this.options.handshakeTimeoutMs,
      ALPNProtocols: ['http/1.1'],
      // Verified against the host's CA and CRL; a missing or bad certificate is answered at the
      // HTTP layer with a page that says what is wrong, rather than a bare TLS alert.
      ...(requestCert ? { requestCert: true, rejectUnauthorized: false } : {})
    })
    const toHttp = (socket: Socket): void => {
      this.#http.emit('connection', socket)
      // A peek leaves the socket paused, and the HTTP server does not resume it itself.
      if (socket.isPaused()) socket.resume()
    }
    const decrypted = this.options.decrypted
    const accept = decrypted ? (socket: TLSSocket) => decrypted(socket, toHttp) : toHttp
    const routed = (socket: TLSSocket): boolean => {
      // The name routing (and the certificate demand) went by is the name TLS must have served.
      const peeked = this.#peekedNames.get((socket as TLSSocket & { _parent?: Socket })._parent as Socket)
      if (peeked === undefined || sameName(peeked.name, socket.servername)) return true
      this.counters.handshakeFailures++
      this.#log.warn({ client: socket.remoteAddress, peeked: peeked.name, negotiated: socket.servername || undefined }, 'server name changed during the handshake (a second ClientHello): connection closed')
      socket.destroy()
      return false
    }
    server.on('secureConnection', requestCert
      ? (socket: TLSSocket) => {
          if (!routed(socket)) return
          this.#certificateRequired.add(socket)
          // Without a good certificate nothing is tunnelled: the HTTP layer answers 403.
          if (presentedVerifiedCertificate(socket)) accept(socket)
          else toHttp(socket)
        }
      : (socket: TLSSocket) => { if (routed(socket)) accept(socket) })
    server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
      this.counters.handshakeFailures++
      this.#log.debug({ err: { code: err.code, message: err.message }, client: socket.remoteAddress }, 'tls handshake failed')
      socket.destroy()
    })
    return server
  }

  /**
   * clientCertificateProblem says why a connection of a host that requires a client certificate
   * may not be served (none presented, unknown CA, revoked, expired), or undefined when it may.
   */
  clientCertificateProblem (socket: Socket): string | undefined {
    if (!this.#certificateRequired.has(socket)) return undefined
    const tls = socket as TLSSocket
    if (presentedVerifiedCertificate(tls)) return undefined
    return tls.getPeerCertificate()?.subject === undefined ? 'no client certificate presented' : String(tls.authorizationError ?? 'client certificate not trusted')
  }

  /** demandedClientCertificate says whether the connection came through the handshake that asks for one. */
  demandedClientCertificate (socket: Socket): boolean {
    return this.#certificateRequired.has(socket)
  }

  /** requiresClientCertificates says whether some host asks for client certificates. */
  get requiresClientCertificates (): boolean {
    return this.#tlsWithClientCertificate !== undefined
  }

  /**
   * replaceCertificates makes new handshakes use `sni`; connections already open keep theirs.
   * The set of terminated hosts must be unchanged (a restart changes that).
   */
  replaceCertificates (sni: SniContexts): void {
    if (!this.#tls) throw new Error('no terminated host: nothing to reload')
    this.#sni = sni
    for (const server of [this.#tls, this.#tlsWithClientCertificate]) {
      // The whole policy again: setSecureContext does not keep the server's earlier options.
      server?.setSecureContext({ cert: sni.fallbackCertificate.certPem, key: sni.fallbackCertificate.keyPem, ...(server === this.#tlsWithClientCertificate ? certificateTlsPolicy() : CLIENT_TLS_POLICY) })
    }
  }

  /** handshakeFailures counts TLS handshakes that failed (bad client, scanner, timeout). */
  get handshakeFailures (): number {
    return this.counters.handshakeFailures
  }

  #admit (socket: Socket): void {
    // Errors on a client socket are the client's problem; they must never reach the process.
    socket.on('error', () => socket.destroy())
    // Counted with the connections a previous configuration's door still holds (a reload).
    if (!this.#limits.admit(socket, this.#port.open.size)) return
    this.#sockets.add(socket)
    this.#port.open.add(socket)
    socket.once('close', () => {
      this.#sockets.delete(socket)
      this.#port.open.delete(socket)
    })
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
      this.#peekedNames.set(socket, { name: outcome.value.serverName })
      const passthrough = routing.passthroughFor(outcome.value.serverName)
      if (passthrough) {
        this.counters.passthroughConnections++
        routing.relay(socket, outcome.bytes, passthrough)
      } else {
        this.#terminate(socket, outcome.bytes, routing.requiresClientCertificate(outcome.value.serverName))
      }
    })
  }

  #terminate (socket: Socket, peeked: Buffer | undefined, clientCertificate = false): void {
    const tls = clientCertificate ? this.#tlsWithClientCertificate : this.#tls
    if (!tls) {
      socket.destroy()
      return
    }
    this.counters.terminatedConnections++
    // Give the peeked bytes back: the TLS socket reads what is buffered on the socket first.
    if (peeked) socket.unshift(peeked)
    tls.emit('connection', socket)
  }

  /**
   * listen opens the port, or takes it over when it is already open (a reload); resolves with
   * the bound address (port 0 picks a free one).
   */
  async listen (): Promise<AddressInfo> {
    if (this.#port.listening) {
      this.#port.handTo(this.#accept)
      return this.#port.address()
    }
    const address = await this.#port.listen(this.options.host, this.options.port)
    this.#port.handTo(this.#accept)
    return address
  }

  /** The port's listener stops only while it still hands its connections to this door. */
  #stopAccepting (): Promise<void> {
    return this.#port.servedBy(this.#accept) ? this.#port.close() : Promise.resolve()
  }

  /** connections is the number of open client connections. */
  get connections (): number {
    return this.#sockets.size
  }

  /**
   * retire stops accepting and waits, up to `maxMs`, for the connections open now to end by
   * themselves — held long polls, RPC channels and pinned NTLM connections included — without
   * closing idle ones (a reload: the proxy answers their next request with Connection: close).
   */
  async retire (maxMs: number): Promise<void> {
    // Not awaited: a listener's close resolves only once every connection it accepted has ended,
    // which is what the deadline below bounds.
    this.#stopAccepting().catch(() => undefined)
    const deadline = Date.now() + maxMs
    while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200))
  }

  /**
   * close stops accepting, lets requests in flight finish for up to `graceMs`, then drops
   * whatever is left.
   */
  async close (graceMs = 0): Promise<void> {
    const closed = this.#stopAccepting()
    this.#http.closeIdleConnections()
    const deadline = Date.now() + graceMs
    while (this.#sockets.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      this.#http.closeIdleConnections()
    }
    for (const socket of this.#sockets) socket.destroy()
    // The HTTP server never listened, but its connection-check interval runs since 'listening'.
    this.#http.close(() => undefined)
    await closed
  }
}
