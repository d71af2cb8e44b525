import { createServer as createHttpServer, STATUS_CODES, type Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import offloadMode from '../plugins/offload.js'
import reencryptMode from '../plugins/reencrypt.js'
import passthroughMode, { type PassthroughRelay } from '../plugins/passthrough.js'
import { healthPathFor } from './config/exchange-profile.js'
import type { GatewayConfig, PassthroughHost, ResolvedHost, TerminatedHost } from './config/load.js'
import { Affinity } from './affinity/affinity.js'
import { createCredentialProvider } from './preauth/credential-provider.js'
import { PreauthGate } from './preauth/preauth-gate.js'
import preauthRoutes from './preauth/preauth-routes.js'
import { DrainControl } from './pool/drain.js'
import { HealthMonitor } from './pool/health-monitor.js'
import { ConnectionPins } from './proxy/connection-pins.js'
import { addClientCertificateCheck, clientCertificateCheck } from './front/client-certificate-check.js'
import { FrontDoor, type SniRouting } from './front/front-door.js'
import { HostNameTable } from './front/host-names.js'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { startAdminServer } from './observe/admin-server.js'
import { createLogger } from './observe/logger.js'
import { BackendPool } from './pool/backend-pool.js'
import { UpstreamDispatcher } from './pool/upstream-dispatcher.js'
import casgateProxy, { type RoutedVdir } from './proxy/proxy-plugin.js'
import { trustedProxies } from './proxy/headers.js'
import { RpcChannels } from './proxy/rpc-channels.js'
import { VdirTable } from './routing/vdir-table.js'
import { RequestGuard } from './guard/request-guard.js'
import { RulePack } from './rules/rule-engine.js'
import { EXCHANGE_RULE_PACK } from './rules/exchange-pack.js'
import { CasgateError, ConfigError } from './errors.js'
import { CertificateWatch } from './tls/certificate-watch.js'
import { checkExtendedProtection } from './tls/extended-protection.js'
import { SniContexts } from './tls/sni-contexts.js'
import { errorBody, sendFrameworkError } from './proxy/error-reply.js'
import { hstsValue, responseHardening } from './proxy/response-hardening.js'

/** Gateway is a running casgate: its listener, app and the pools behind it. */
export interface Gateway {
  readonly config: GatewayConfig
  readonly app: FastifyInstance
  readonly frontDoor: FrontDoor
  readonly pools: ReadonlyMap<string, BackendPool>
  readonly address: AddressInfo
  /** Where the admin listener is, when configured. */
  readonly adminAddress: AddressInfo | undefined
  readonly logger: Logger
  readonly health: HealthMonitor
  readonly drain: DrainControl
  /** Affinity policies per vdir, their assignments and tuning data. */
  readonly affinity: Affinity
  /** Drift checks and certificate reload (SIGHUP). */
  readonly certificates: CertificateWatch
  /** url builds https://<host>:<port><path> for the bound port. */
  url: (path?: string, host?: string) => string
  close: (graceMs?: number) => Promise<void>
}

/** GatewayOptions override what the configuration says, for tests and embedding. */
export interface GatewayOptions {
  logger?: Logger
  /**
   * 'enforce' (default) refuses to start when a re-encrypting host's certificate differs from its
   * backends' while Extended Protection is on; 'warn' starts anyway, logging each mismatch as an error.
   */
  extendedProtection?: 'enforce' | 'warn'
}

function createClientHttpServer (config: GatewayConfig, handler: Parameters<typeof createHttpServer>[1]): HttpServer {
  const server = createHttpServer({
    // The whole-request timeout would cut 1 GB uploads and hour-long RPC channels; idle and
    // per-vdir upstream timeouts bound requests instead.
    requestTimeout: 0,
    headersTimeout: config.listen.headersTimeoutMs,
    // Node looks for heads past headersTimeout only every 30 s by default: a slow-header client
    // would hold its connection up to 30 s longer than configured.
    connectionsCheckingInterval: Math.min(1_000, config.listen.headersTimeoutMs),
    keepAliveTimeout: config.listen.idleTimeoutMs,
    // Node's 16 KiB default refuses the Kerberos tokens of users in many groups (KB2020943).
    maxHeaderSize: config.listen.maxHeaderBytes,
    noDelay: true
  }, handler)
  server.timeout = config.listen.idleTimeoutMs
  // Requests Node's parser refuses (a head over listen.maxHeaderBytes, malformed, too slow) never
  // reach a route: answer them here, in casgate's shape. Fastify's own clientErrorHandler is a
  // no-op so that it does not destroy the socket as soon as the answer is written: a socket closed
  // while the client is still sending (the rest of a 70 KiB header) is answered with a TCP reset,
  // and the reset erases the answer at the client before it is read. So close in stages, as
  // RFC 9112 §9.6 says: answer and half-close, keep reading (and discarding) until the client
  // closes, for a few seconds at most.
  const answered = new WeakSet<Duplex>()
  server.on('clientError', (err: Error & { code?: string, reason?: string }, socket: Duplex & { _httpMessage?: { headersSent: boolean } | null }) => {
    // Input after the refusal fails to parse again; the first answer stands.
    if (answered.has(socket) || socket.destroyed) return
    answered.add(socket)
    // As Node's own handler: nothing is written into a response already on its way (pipelining).
    if (err.code === 'ECONNRESET' || !socket.writable || socket._httpMessage?.headersSent === true) {
      socket.destroy()
      return
    }
    const error = err.code === 'HPE_HEADER_OVERFLOW'
      ? new CasgateError('CASGATE_ERR_HEADERS_TOO_LARGE', [config.listen.maxHeaderBytes])
      : new CasgateError('CASGATE_ERR_BAD_REQUEST', [err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request head not received in time' : (err.reason ?? 'unparsable request').toLowerCase()])
    const body = errorBody(error.statusCode, error.code, error.message)
    socket.end(`HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
    const linger = setTimeout(() => socket.destroy(), 5_000).unref()
    socket.once('close', () => clearTimeout(linger))
    socket.resume()
  })
  // This server never listens: the front door hands it decrypted sockets. Node starts the
  // headers-timeout sweep on 'listening', so announce it ourselves.
  server.emit('listening')
  return server
}

/**
 * sniRouting routes by the ClientHello's name: passthrough names away from the TLS servers, names
 * that require client certificates to the TLS server that asks for them. Undefined when neither
 * exists, and the ClientHello is then not read before TLS.
 */
function sniRouting (config: GatewayConfig, relay: PassthroughRelay): SniRouting | undefined {
  const hasClientCertificateHosts = config.hosts.some((host) => host.mode !== 'passthrough' && host.clientCertificate !== undefined)
  if (!hasClientCertificateHosts && !config.hosts.some((host) => host.mode === 'passthrough')) return undefined
  const byName = new HostNameTable<ResolvedHost>()
  for (const host of config.hosts) for (const name of host.names) byName.set(name, host)
  const hostFor = (serverName: string | undefined): ResolvedHost => (serverName === undefined ? undefined : byName.get(serverName)) ?? config.defaultHost
  return {
    passthroughFor (serverName) {
      const host = hostFor(serverName)
      return host.mode === 'passthrough' ? host : undefined
    },
    relay: relay.relay,
    hasClientCertificateHosts,
    requiresClientCertificate (serverName) {
      const host = hostFor(serverName)
      return host.mode !== 'passthrough' && host.clientCertificate !== undefined
    }
  }
}

/**
 * hostOfConnection names the host a connection was made to, for requests that name none (HTTP/1.0
 * without Host): its SNI name when casgate publishes it, else the default host's first name.
 * Without it undici would send the backend's own address as Host.
 */
function hostOfConnection (hosts: readonly TerminatedHost[], defaultHost: ResolvedHost): (socket: Socket) => string {
  const names = new HostNameTable<true>()
  for (const host of hosts) for (const name of host.names) names.set(name, true)
  const fallback = defaultHost.names.find((name) => !name.startsWith('*')) ?? hosts.flatMap((host) => host.names).find((name) => !name.startsWith('*')) ?? 'localhost'
  return (socket) => {
    const servername = (socket as TLSSocket).servername
    return typeof servername === 'string' && names.get(servername) !== undefined ? servername.toLowerCase() : fallback
  }
}

/** startGateway builds the app for a validated configuration and opens the client port. */
export async function startGateway (config: GatewayConfig, options: GatewayOptions = {}): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.log)
  for (const warning of config.warnings) logger.warn({ path: warning.path, fix: warning.fix }, warning.message)
  const ep = await checkExtendedProtection(config)
  for (const warning of ep.warnings) logger.warn({ path: warning.path, fix: warning.fix }, warning.message)
  if (ep.errors.length > 0) {
    if (options.extendedProtection !== 'warn') throw new ConfigError(config.source, ep.errors)
    for (const error of ep.errors) logger.error({ path: error.path, fix: error.fix }, `STARTING ANYWAY (--ignore-extended-protection): ${error.message}`)
  }

  const pools = new Map([...config.pools.values()].map((pool) => [pool.name, new BackendPool(pool)]))
  const terminated = config.hosts.filter((host): host is TerminatedHost => host.mode !== 'passthrough')
  const affinity = new Affinity(config.affinity)
  const hsts = hstsValue(config.hsts)
  const vdirs: RoutedVdir[] = config.vdirs.map((vdir) => ({
    ...vdir,
    backendPool: pools.get(vdir.pool)!,
    selector: affinity.forVdir(vdir, pools.get(vdir.pool)!),
    hardening: responseHardening(hsts, vdir.cspScriptSrcAttrNone)
  }))
  const passthroughHosts = config.hosts.filter((host): host is PassthroughHost => host.mode === 'passthrough')
  // Passthrough pools are registered too: their health probes travel like re-encrypted traffic.
  const usedPools = [...new Set([...vdirs.map((vdir) => vdir.backendPool), ...passthroughHosts.map((host) => pools.get(host.pool)!)])]
  const upstreams = new UpstreamDispatcher()
  const health = new HealthMonitor(config.health, upstreams, logger.child({ component: 'health' }))
  const pins = new ConnectionPins(upstreams, config.listen.idleTimeoutMs)
  const drain = new DrainControl(pools, pins, logger.child({ component: 'drain' }))

  let httpServer: HttpServer | undefined
  const app: FastifyInstance = Fastify({
    loggerInstance: logger.child({ component: 'app' }) as FastifyBaseLogger,
    // One access line per request comes from the proxy plugin instead.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: false,
    // Exchange clients send long URLs (OWA deep links, EAS query strings).
    routerOptions: { maxParamLength: 2048 },
    // Malformed URLs and the like are answered in casgate's error shape, with its codes.
    frameworkErrors: (err, _request, reply) => sendFrameworkError(reply, err),
    // createClientHttpServer answers what Node's parser refuses, and closes in stages.
    clientErrorHandler: () => undefined,
    serverFactory: (handler) => {
      httpServer = createClientHttpServer(config, handler)
      return httpServer
    }
  })
  await app.register(offloadMode, { pools: usedPools.filter((pool) => pool.config.scheme === 'http:'), upstreams })
  await app.register(reencryptMode, { pools: usedPools.filter((pool) => pool.config.scheme === 'https:'), upstreams })
  await app.register(passthroughMode, { pools, logger: logger.child({ component: 'passthrough' }) })
  const preauth = config.preauth === undefined ? undefined : new PreauthGate(config.preauth, createCredentialProvider(config.preauth.credentials), logger.child({ component: 'preauth' }))
  if (preauth) {
    const formsVdir = vdirs.find((vdir) => vdir.preauth === 'forms')
    await app.register(preauthRoutes, { gate: preauth, defaultReturnUrl: `${formsVdir?.path ?? '/owa'}/` })
  }
  const rules = new RulePack(EXCHANGE_RULE_PACK, config.rules.disable)
  for (const rule of rules.disabled) logger.warn({ rule: rule.id, cve: rule.cve }, 'exploit rule switched off by configuration (rules.disable)')
  const guard = new RequestGuard<RoutedVdir>({ vdirs: new VdirTable(vdirs), rules, sessionCookie: config.preauth?.cookieName, log: logger.child({ component: 'rules' }) })
  const fallbackHost = hostOfConnection(terminated, config.defaultHost)
  await app.register(casgateProxy, {
    guard,
    fallbackHost,
    hsts: config.hsts,
    upstreams,
    trusted: trustedProxies(config.trustProxy, config.trustProxyEntries),
    idleTimeoutMs: config.listen.idleTimeoutMs,
    accessLog: logger.child({ component: 'access' }),
    pins,
    preauth,
    onBackendFailure: (backend, vdir, reason) => health.reportFailure(backend, vdir, reason)
  })
  // The check runs only once the front door exists (it is built after the app is ready).
  const door: { current?: FrontDoor } = {}
  const certificateCheck = clientCertificateCheck(terminated, () => door.current!, logger.child({ component: 'client-certificate' }))
  addClientCertificateCheck(app, certificateCheck)
  await app.ready()

  const probeHost = terminated[0]?.names.find((name) => !name.startsWith('*')) ?? 'localhost'
  for (const vdir of vdirs) for (const backend of vdir.backendPool.backends) health.watch(backend, vdir.path, vdir.healthPath, probeHost)
  for (const host of passthroughHosts) {
    const name = host.names.find((n) => !n.startsWith('*')) ?? probeHost
    for (const backend of pools.get(host.pool)!.backends) health.watch(backend, host.monitorVdir, healthPathFor(host.monitorVdir), name)
  }

  // Outlook Anywhere needs the request-line peek only where /rpc is published.
  const rpcChannels = vdirs.some((vdir) => vdir.path === '/rpc')
    ? new RpcChannels({
      guard,
      upstreams,
      trusted: trustedProxies(config.trustProxy, config.trustProxyEntries),
      headersTimeoutMs: config.listen.headersTimeoutMs,
      maxHeaderBytes: config.listen.maxHeaderBytes,
      accessLog: logger.child({ component: 'access' }),
      hostCheck: (socket, hostName) => certificateCheck?.(socket, hostName),
      lockedOut: (authorization, client, url) => preauth?.lockedAnswer(authorization, client, url)
    })
    : undefined
  const frontDoor = new FrontDoor({
    host: config.listen.host,
    port: config.listen.port,
    handshakeTimeoutMs: config.listen.handshakeTimeoutMs,
    maxConnections: config.listen.maxConnections,
    maxConnectionsPerAddress: config.listen.maxConnectionsPerAddress,
    // A proxy in front carries many clients on its few addresses; the total limit still applies.
    unlimitedAddress: trustedProxies(config.trustProxy, config.trustProxyEntries),
    sni: terminated.length > 0 ? new SniContexts(terminated, config.defaultHost.mode === 'passthrough' ? undefined : config.defaultHost) : undefined,
    routing: sniRouting(config, app.passthrough),
    decrypted: rpcChannels ? (socket, toHttp) => rpcChannels.accept(socket, toHttp) : undefined,
    httpServer: httpServer!,
    logger: logger.child({ component: 'front' })
  })
  door.current = frontDoor
  let address: AddressInfo
  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined
  try {
    address = await frontDoor.listen()
    if (config.admin) {
      admin = await startAdminServer(config.admin, {
        frontDoor,
        pools,
        health,
        drain,
        affinity,
        certificates: () => certificates.status,
        rules: { version: rules.version, blocked: guard.blocked, disabled: rules.disabled.map((rule) => rule.id) },
        rpcChannels: () => rpcChannels?.open ?? 0
      })
      logger.info({ address: admin.address.address, port: admin.address.port }, 'admin listener on')
    }
  } catch (err) {
    await frontDoor.close()
    await app.close()
    throw err
  }
  health.start()
  affinity.start()
  const certificates = new CertificateWatch(config, frontDoor, logger.child({ component: 'certificates' }))
  certificates.status = { checkedAt: new Date().toISOString(), errors: ep.errors, warnings: ep.warnings }
  certificates.start()
  logger.info({ address: address.address, port: address.port, hosts: config.hosts.flatMap((h) => h.names), vdirs: vdirs.map((v) => v.path) }, 'casgate listening')

  const defaultHost = config.defaultHost.names.find((name) => !name.startsWith('*')) ?? 'localhost'
  return {
    config,
    app,
    frontDoor,
    pools,
    address,
    logger,
    url: (path = '/', host = defaultHost) => `https://${host}:${address.port}${path}`,
    adminAddress: admin?.address,
    health,
    drain,
    affinity,
    certificates,
    async close (graceMs = 0) {
      health.stop()
      affinity.stop()
      certificates.stop()
      drain.stop()
      await admin?.app.close()
      await frontDoor.close(graceMs)
      await app.close()
    }
  }
}
