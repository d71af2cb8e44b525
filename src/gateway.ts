import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
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
import { addClientCertificateCheck } from './front/client-certificate-check.js'
import { FrontDoor, type SniRouting } from './front/front-door.js'
import { HostNameTable } from './front/host-names.js'
import { startAdminServer } from './observe/admin-server.js'
import { createLogger } from './observe/logger.js'
import { BackendPool } from './pool/backend-pool.js'
import { UpstreamDispatcher } from './pool/upstream-dispatcher.js'
import casgateProxy, { type RoutedVdir } from './proxy/proxy-plugin.js'
import { trustedProxies } from './proxy/headers.js'
import { RpcTunnel } from './proxy/rpc-tunnel.js'
import { VdirTable } from './routing/vdir-table.js'
import { ConfigError } from './errors.js'
import { CertificateWatch } from './tls/certificate-watch.js'
import { checkExtendedProtection } from './tls/extended-protection.js'
import { SniContexts } from './tls/sni-contexts.js'
import { sendFrameworkError } from './proxy/error-reply.js'

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
    keepAliveTimeout: config.listen.idleTimeoutMs,
    noDelay: true
  }, handler)
  server.timeout = config.listen.idleTimeoutMs
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
  const vdirs: RoutedVdir[] = config.vdirs.map((vdir) => ({ ...vdir, backendPool: pools.get(vdir.pool)!, selector: affinity.forVdir(vdir, pools.get(vdir.pool)!) }))
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
  await app.register(casgateProxy, {
    vdirs,
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
  addClientCertificateCheck(app, terminated, () => door.current!, logger.child({ component: 'client-certificate' }))
  await app.ready()

  const probeHost = terminated[0]?.names.find((name) => !name.startsWith('*')) ?? 'localhost'
  for (const vdir of vdirs) for (const backend of vdir.backendPool.backends) health.watch(backend, vdir.path, vdir.healthPath, probeHost)
  for (const host of passthroughHosts) {
    const name = host.names.find((n) => !n.startsWith('*')) ?? probeHost
    for (const backend of pools.get(host.pool)!.backends) health.watch(backend, host.monitorVdir, healthPathFor(host.monitorVdir), name)
  }

  // Outlook Anywhere needs the request-line peek only where /rpc is published.
  const rpcTunnel = vdirs.some((vdir) => vdir.path === '/rpc')
    ? new RpcTunnel({ vdirs: new VdirTable(vdirs), upstreams, requestLineTimeoutMs: config.listen.headersTimeoutMs, accessLog: logger.child({ component: 'access' }) })
    : undefined
  const frontDoor = new FrontDoor({
    host: config.listen.host,
    port: config.listen.port,
    handshakeTimeoutMs: config.listen.handshakeTimeoutMs,
    sni: terminated.length > 0 ? new SniContexts(terminated, config.defaultHost.mode === 'passthrough' ? undefined : config.defaultHost) : undefined,
    routing: sniRouting(config, app.passthrough),
    decrypted: rpcTunnel ? (socket, toHttp) => rpcTunnel.accept(socket, toHttp) : undefined,
    httpServer: httpServer!,
    logger: logger.child({ component: 'front' })
  })
  door.current = frontDoor
  let address: AddressInfo
  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined
  try {
    address = await frontDoor.listen()
    if (config.admin) {
      admin = await startAdminServer(config.admin, { frontDoor, pools, health, drain, affinity, certificates: () => certificates.status })
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
