import type { Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import offloadMode from '../modes/offload.js'
import reencryptMode from '../modes/reencrypt.js'
import passthroughMode from '../modes/passthrough.js'
import type { GatewayConfig, PassthroughHost, TerminatedHost } from '../config/load.js'
import { Affinity } from '../affinity/affinity.js'
import { createCredentialProvider } from '../preauth/credential-provider.js'
import { PreauthGate } from '../preauth/preauth-gate.js'
import preauthRoutes from '../preauth/preauth-routes.js'
import { DrainControl } from '../upstream/drain.js'
import { HealthMonitor } from '../upstream/health-monitor.js'
import { watchHealthTargets } from '../upstream/health-targets.js'
import type { Server } from '../upstream/server.js'
import { ConnectionPins } from '../upstream/connection-pins.js'
import { addClientCertificateCheck, clientCertificateCheck } from '../front/client-certificate-check.js'
import { FrontDoor } from '../front/front-door.js'
import { createClientHttpServer } from '../front/client-http-server.js'
import { hostOfConnection, sniRouting } from '../front/host-routing.js'
import { statusSnapshot } from '../admin/admin-server.js'
import { ServerPool } from '../upstream/server-pool.js'
import { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'
import { BudgetAdmission } from '../upstream/budget-admission.js'
import casgateProxy from '../proxy/proxy-plugin.js'
import type { RoutedVdir } from '../proxy/routed-vdir.js'
import { clientAddress, trustedProxies } from '../proxy/headers.js'
import { RpcChannels } from '../proxy/rpc-channels.js'
import { Publications } from '../routing/publications.js'
import { RequestGuard } from '../guard/request-guard.js'
import { RulePack } from '../rules/rule-engine.js'
import { EXCHANGE_RULE_PACK } from '../rules/exchange-pack.js'
import { ConfigError } from '../errors/errors.js'
import { CertificateWatch } from '../tls/certificate-watch.js'
import type { GatewayMetrics } from '../observe/metrics.js'
import type { RecentErrors } from '../observe/recent-errors.js'
import type { ClientPort } from '../front/client-port.js'
import { checkExtendedProtection } from '../tls/extended-protection.js'
import { SniContexts } from '../tls/sni-contexts.js'
import { sendFrameworkError } from '../errors/error-reply.js'
import { hstsValue, responseHardening } from '../proxy/response-hardening.js'

/**
 * Generation is what casgate runs for one configuration: the app, the front door, the pools, the
 * health monitor, preauthentication and affinity. A whole-configuration reload builds the next
 * generation beside the running one and hands it the client port; the previous one finishes what
 * it holds (gateway.ts).
 */
export interface Generation {
  readonly config: GatewayConfig
  readonly app: FastifyInstance
  readonly frontDoor: FrontDoor
  readonly pools: ReadonlyMap<string, ServerPool>
  readonly preauth: PreauthGate | undefined
  readonly health: HealthMonitor
  readonly drain: DrainControl
  readonly affinity: Affinity
  readonly certificates: CertificateWatch
  /** Blocks per exploit rule id. */
  readonly ruleBlocks: ReadonlyMap<string, number>
  /** The longest a connection may stay open on its own: a retiring generation waits this long (and a margin). */
  readonly longestHoldMs: number
  /** status is this generation's GET /status. */
  status: () => object
  /** open takes the client port (opens it, or takes it over from the previous generation) and starts probes and timers. */
  open: () => Promise<AddressInfo>
  /** retire stops accepting and lets every open connection end by itself, for up to `maxMs`. */
  retire: (maxMs: number) => Promise<void>
  close: (graceMs?: number) => Promise<void>
}

/** GatewayOptions override what the configuration says, for tests and embedding. */
export interface GatewayOptions {
  logger?: Logger
  /**
   * 'enforce' (default) refuses to start when a re-encrypting host's certificate differs from its
   * backends' while Extended Protection is on; 'warn' starts anyway, logging each mismatch as an error;
   * 'checked' skips the comparison (a cluster's primary made it before starting its workers).
   */
  extendedProtection?: 'enforce' | 'warn' | 'checked'
  /**
   * Set in a cluster worker (cluster/worker.ts): the primary probes health and serves the admin
   * listener, so the worker does neither, and tells the primary what live traffic saw instead.
   */
  worker?: { reportFailure: (server: Server, vdir: string, reason: string) => void }
}

/** GenerationParts are what outlives one generation: the port, the metrics, the error list. */
export interface GenerationParts {
  logger: Logger
  listener: ClientPort
  metrics: GatewayMetrics
  recentErrors: RecentErrors
}

/**
 * buildGeneration builds the app for a validated configuration; open() then takes the client port.
 * A ConfigError says why the configuration cannot run (an Extended Protection mismatch).
 */
export async function buildGeneration (config: GatewayConfig, options: GatewayOptions, parts: GenerationParts): Promise<Generation> {
  const { logger, metrics, recentErrors } = parts
  for (const warning of config.warnings) logger.warn({ path: warning.path, fix: warning.fix }, warning.message)
  const ep = options.extendedProtection === 'checked' ? { errors: [], warnings: [] } : await checkExtendedProtection(config)
  for (const warning of ep.warnings) logger.warn({ path: warning.path, fix: warning.fix }, warning.message)
  if (ep.errors.length > 0) {
    if (options.extendedProtection !== 'warn') throw new ConfigError(config.source, ep.errors)
    for (const error of ep.errors) logger.error({ path: error.path, fix: error.fix }, `STARTING ANYWAY (--ignore-extended-protection): ${error.message}`)
  }

  const trusted = trustedProxies(config.trustProxy, config.trustProxyEntries)
  const pools = new Map([...config.pools.values()].map((pool) => [pool.name, new ServerPool(pool)]))
  const terminated = config.hosts.filter((host): host is TerminatedHost => host.mode !== 'passthrough')
  const affinity = new Affinity(config.affinity)
  const hsts = hstsValue(config.hsts)
  // Each table a host publishes gets its routed vdirs (pool, affinity policy, hardening) once:
  // hosts that publish the site-wide table share them.
  const publications = new Publications<RoutedVdir>(config.hosts, config.defaultHost, (table) => {
    const owner = terminated.find((host) => host.vdirs === table && table !== config.vdirs)
    return table.map((vdir) => ({
      ...vdir,
      serverPool: pools.get(vdir.pool)!,
      selector: affinity.forVdir(vdir, pools.get(vdir.pool)!, owner?.names[0]),
      hardening: responseHardening(hsts, vdir.cspScriptSrcAttrNone)
    }))
  })
  const vdirs = publications.all().flatMap((publication) => [...publication.vdirs.values()])
  const passthroughHosts = config.hosts.filter((host): host is PassthroughHost => host.mode === 'passthrough')
  const poolsOf = (hosts: readonly TerminatedHost[]): ServerPool[] => [...new Set(hosts.flatMap((host) => host.vdirs.map((vdir) => pools.get(vdir.pool)!)))]
  const upstreams = new UpstreamDispatcher()
  const health = new HealthMonitor(config.health, upstreams, logger.child({ component: 'health' }))
  const pins = new ConnectionPins(upstreams, config.listen.idleTimeoutMs)
  const drain = new DrainControl(pools, logger.child({ component: 'drain' }))
  // One door to the servers' upstream budgets for HTTP requests and Outlook Anywhere channels.
  const admission = new BudgetAdmission(logger.child({ component: 'access' }))

  let httpServer: HttpServer | undefined
  const app: FastifyInstance = Fastify({
    loggerInstance: logger.child({ component: 'app' }) as FastifyBaseLogger,
    // One access line per request comes from the proxy plugin instead.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: false,
    // Exchange clients send long URLs (OWA deep links, EAS query strings).
    routerOptions: { maxParamLength: 2048 },
    // Malformed URLs and the like are answered in casgate's error shape, with its codes.
    frameworkErrors: (err, _request, reply) => {
      // Answered before any hook runs: HSTS is added here for these too.
      if (hsts !== undefined) reply.header('strict-transport-security', hsts)
      sendFrameworkError(reply, err)
    },
    // createClientHttpServer answers what Node's parser refuses, and closes in stages.
    clientErrorHandler: () => undefined,
    serverFactory: (handler) => {
      httpServer = createClientHttpServer(config, handler)
      return httpServer
    }
  })
  // Each SSL mode is a plugin, registered for the hosts configured with it: it opens the
  // transports of the pools those hosts publish (plain HTTP, TLS) or relays their connections.
  const terminatedWith = (mode: TerminatedHost['mode']): TerminatedHost[] => terminated.filter((host) => host.mode === mode)
  for (const [mode, plugin] of [['offload', offloadMode], ['reencrypt', reencryptMode]] as const) {
    const hosts = terminatedWith(mode)
    if (hosts.length > 0) await app.register(plugin, { hosts, pools: poolsOf(hosts), upstreams })
  }
  if (passthroughHosts.length > 0) {
    const passthroughPools = [...new Set(passthroughHosts.map((host) => pools.get(host.pool)!))]
    await app.register(passthroughMode, { hosts: passthroughHosts, pools: passthroughPools, upstreams, logger: logger.child({ component: 'passthrough' }) })
  }
  const preauth = config.preauth === undefined ? undefined : new PreauthGate(config.preauth, createCredentialProvider(config.preauth.credentials), logger.child({ component: 'preauth' }))
  if (preauth) {
    const formsVdir = vdirs.find((vdir) => vdir.preauth === 'forms')
    await app.register(preauthRoutes, {
      gate: preauth,
      defaultReturnUrl: `${formsVdir?.path ?? '/owa'}/`,
      clientOf: (request) => clientAddress(request, trusted),
      servesForms: (request) => [...publications.forServerName((request.socket as TLSSocket).servername).vdirs.values()].some((vdir) => vdir.preauth === 'forms')
    })
  }
  const rules = new RulePack(EXCHANGE_RULE_PACK, config.rules.disable)
  for (const rule of rules.disabled) logger.warn({ rule: rule.id, cve: rule.cve }, 'exploit rule switched off by configuration (rules.disable)')
  const guard = new RequestGuard<RoutedVdir>({ rules, sessionCookie: config.preauth?.cookieName, log: logger.child({ component: 'rules' }) })
  const fallbackHost = hostOfConnection(terminated, config.defaultHost)
  if (preauth) preauth.onLockout = (scope) => metrics.lockout(scope)
  let retiring = false
  await app.register(casgateProxy, {
    retiring: () => retiring,
    metrics,
    recentErrors,
    guard,
    publications,
    fallbackHost,
    hsts: config.hsts,
    upstreams,
    trusted,
    idleTimeoutMs: config.listen.idleTimeoutMs,
    accessLog: logger.child({ component: 'access' }),
    pins,
    admission,
    preauth,
    onBackendFailure: options.worker?.reportFailure ?? ((server, vdir, reason) => health.reportFailure(server, vdir, reason))
  })
  // The check runs only once the front door exists (it is built after the app is ready).
  const door: { current?: FrontDoor } = {}
  const certificateCheck = clientCertificateCheck(terminated, () => door.current!, logger.child({ component: 'client-certificate' }))
  addClientCertificateCheck(app, certificateCheck)
  await app.ready()

  watchHealthTargets(health, config, pools)

  // Outlook Anywhere needs the request-line peek only where /rpc is published.
  const rpcChannels = vdirs.some((vdir) => vdir.path === '/rpc')
    ? new RpcChannels({
      guard,
      publications,
      upstreams,
      trusted,
      headersTimeoutMs: config.listen.headersTimeoutMs,
      idleTimeoutMs: config.listen.idleTimeoutMs,
      maxHeaderBytes: config.listen.maxHeaderBytes,
      ownCookies: preauth?.forms.ownCookies ?? [],
      accessLog: logger.child({ component: 'access' }),
      admission,
      hostCheck: (socket, hostName) => certificateCheck?.(socket, hostName),
      lockedOut: (authorization, client, url) => preauth?.lockedAnswer(authorization, client, url),
      upstreamRejected: preauth === undefined ? undefined : (authorization, client, url, elapsedMs) => preauth.upstreamRejected(authorization, client, url, elapsedMs)
    })
    : undefined
  const frontDoor = new FrontDoor({
    host: config.listen.host,
    port: config.listen.port,
    handshakeTimeoutMs: config.listen.handshakeTimeoutMs,
    maxConnections: config.listen.maxConnections,
    maxConnectionsPerAddress: config.listen.maxConnectionsPerAddress,
    // A proxy in front carries many clients on its few addresses; the total limit still applies.
    unlimitedAddress: trusted,
    sni: terminated.length > 0 ? new SniContexts(terminated, config.defaultHost.mode === 'passthrough' ? undefined : config.defaultHost) : undefined,
    // Without passthrough hosts no name routes to a relay: sniRouting only asks it for theirs.
    routing: sniRouting(config, app.hasDecorator('passthrough') ? app.passthrough : { relay: (client) => client.destroy() }),
    decrypted: rpcChannels ? (socket, toHttp) => rpcChannels.accept(socket, toHttp) : undefined,
    httpServer: httpServer!,
    listener: parts.listener,
    logger: logger.child({ component: 'front' })
  })
  door.current = frontDoor
  const status = (): object => statusSnapshot({
    frontDoor,
    pools,
    health,
    drain,
    certificates: () => certificates.status,
    rules: { version: rules.version, blocked: guard.blocked, disabled: rules.disabled.map((rule) => rule.id) },
    rpcChannels: () => rpcChannels?.open ?? 0,
    recentErrors: () => recentErrors.list()
  })
  const certificates = new CertificateWatch(config, frontDoor, logger.child({ component: 'certificates' }))
  certificates.status = { checkedAt: new Date().toISOString(), errors: ep.errors, warnings: ep.warnings }
  const longestHoldMs = Math.max(config.listen.idleTimeoutMs, ...config.hosts.flatMap((host) => host.mode === 'passthrough' ? [host.idleTimeoutMs] : host.vdirs.map((vdir) => vdir.timeoutMs)))

  const generation: Generation = {
    config,
    app,
    frontDoor,
    pools,
    preauth,
    status,
    health,
    drain,
    affinity,
    certificates,
    ruleBlocks: guard.blocked,
    longestHoldMs,
    async open () {
      const address = await frontDoor.listen()
      if (options.worker === undefined) health.start()
      affinity.start()
      await preauth?.start()
      certificates.start()
      logger.info({ address: address.address, port: address.port, hosts: config.hosts.flatMap((h) => h.names), vdirs: [...new Set(vdirs.map((v) => v.path))] }, 'casgate listening')
      return address
    },
    async retire (maxMs) {
      retiring = true
      await frontDoor.retire(maxMs)
      await generation.close(0)
    },
    close (graceMs = 0) {
      // Timers stop on every call (open() may have started some after a first close); the door
      // and the app close once: a stop and a reload that meets it may both close a generation.
      health.stop()
      affinity.stop()
      certificates.stop()
      drain.stop()
      preauth?.close()
      closing ??= (async () => {
        await frontDoor.close(graceMs)
        await app.close()
      })()
      return closing
    }
  }
  let closing: Promise<void> | undefined
  return generation
}
