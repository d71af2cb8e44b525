import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { loadConfigFile, type GatewayConfig } from '../config/load.js'
import type { Affinity } from '../affinity/affinity.js'
import type { PreauthGate } from '../preauth/preauth-gate.js'
import type { DrainControl } from '../upstream/drain.js'
import type { HealthMonitor } from '../upstream/health-monitor.js'
import type { ServerPool } from '../upstream/server-pool.js'
import type { FrontDoor } from '../front/front-door.js'
import { ClientPort } from '../front/client-port.js'
import { startAdminServer } from '../admin/admin-server.js'
import { createLogger } from '../observe/logger.js'
import { GatewayMetrics } from '../observe/metrics.js'
import { RecentErrors } from '../observe/recent-errors.js'
import { sharedStateGauges } from '../observe/shared-state-metrics.js'
import { ConfigError } from '../errors/errors.js'
import { certificateGauges, type CertificateWatch } from '../tls/certificate-watch.js'
import { RecordHistory } from '../state/record-history.js'
import type { SharedRecord } from '../state/shared-record.js'
import { buildGeneration, type Generation, type GatewayOptions as GenerationOptions } from './generation.js'
import { applyShared, keptUntil, shareState } from './shared-state.js'
import { openSiteLink } from '../state/site-link.js'
import type { RedisLink } from '../state/redis-link.js'

/** Gateway is a running casgate: its client port, the configuration it serves, the admin listener. */
export interface Gateway {
  /** The configuration served now (a reload replaces it). */
  readonly config: GatewayConfig
  readonly app: FastifyInstance
  readonly frontDoor: FrontDoor
  readonly pools: ReadonlyMap<string, ServerPool>
  readonly address: AddressInfo
  /** Where the admin listener is, when configured. */
  readonly adminAddress: AddressInfo | undefined
  readonly logger: Logger
  /** Counters and gauges of GET /metrics (they carry on across reloads). */
  readonly metrics: GatewayMetrics
  /** Preauthentication, when configured (its lockout, Basic cache and sessions). */
  readonly preauth: PreauthGate | undefined
  /** status is this process's GET /status. */
  status: () => object
  readonly health: HealthMonitor
  readonly drain: DrainControl
  /** Affinity policies per vdir, their assignments and tuning data. */
  readonly affinity: Affinity
  /** Drift checks and certificate reload. */
  readonly certificates: CertificateWatch
  /** url builds https://<host>:<port><path> for the bound port. */
  url: (path?: string, host?: string) => string
  /**
   * reload re-reads the configuration file (GatewayOptions.configFile) and, when it is good,
   * serves new connections with it while open ones finish on the configuration they started with.
   */
  reload: () => Promise<ReloadResult>
  /** applyShared takes a record another process of the site made. */
  applyShared: (record: SharedRecord) => void
  /** userAffinity lists (and with clear, forgets) a user's affinity keys; share: false keeps a clear from other processes (they are asked themselves). */
  userAffinity: (user: string, clear: boolean, share?: boolean) => object
  /**
   * retire stops accepting and lets every open connection end by itself, for up to `maxMs` (a
   * cluster reload: workers with the new configuration take the new connections).
   */
  retire: (maxMs: number) => Promise<void>
  close: (graceMs?: number) => Promise<void>
}

/** ReloadResult is the answer of a reload: whether it happened, and what was wrong if not. */
export interface ReloadResult {
  reloaded: boolean
  problems?: unknown[]
}

/** GatewayOptions override what the configuration says, for tests and embedding. */
export interface GatewayOptions extends GenerationOptions {
  /** The file a reload re-reads; without it, only certificates reload. */
  configFile?: string
  /** Hears each site-wide record made here, for the other processes of the site. */
  share?: (record: SharedRecord) => void
  /**
   * Called once, before the client port opens, with what takes a record another process of the
   * site made (a cluster worker's, from its primary) and the pools the primary's health findings
   * apply to: the caller applies what it holds, then everything that comes later, including while
   * the port opens (which may take seconds).
   */
  feed?: (target: FeedTarget) => void
}

/** FeedTarget is where a cluster worker applies what its primary tells it before it listens. */
export interface FeedTarget {
  applyShared: (record: SharedRecord) => void
  pools: ReadonlyMap<string, ServerPool>
}

/** A retiring configuration waits this much past its longest timeout before cutting what is left. */
const RETIRE_MARGIN_MS = 5_000

/** startGateway builds the app for a validated configuration and opens the client port. */
export async function startGateway (config: GatewayConfig, options: GatewayOptions = {}): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.log)
  const listener = new ClientPort(logger.child({ component: 'front' }))
  const history = new RecordHistory()
  const recentErrors = new RecentErrors()
  let current: Generation
  const metrics = new GatewayMetrics({
    pools: () => current.pools.values(),
    affinity: () => current.affinity.vdirs,
    ruleBlocks: () => current.ruleBlocks,
    certificates: () => certificateGauges(current.config, current.certificates.status)
  })
  const parts = { logger, listener, metrics, recentErrors }
  /** Generations of earlier configurations, finishing what they hold. */
  const retiring = new Set<Generation>()
  /** The generation a reload is opening: it takes connections from its first moment in open(). */
  let opening: Generation | undefined
  const live = (): Generation[] => [current, ...(opening === undefined ? [] : [opening]), ...retiring]
  let quiet = false
  /**
   * remember keeps a record for the next configuration. Placements are not kept: the store hands
   * its own over on reload (AssignmentStore.shared), which spares a second copy of every key.
   */
  const remember = (record: SharedRecord, config: GatewayConfig): void => {
    // Only a gateway that can reload has a next configuration to give them to.
    if (options.configFile !== undefined && record.kind !== 'assignment') history.add(record, keptUntil(config, record))
  }
  /** applyEverywhere takes a record another process made, in every live generation (and the history). */
  const applyEverywhere = (record: SharedRecord): void => {
    remember(record, current.config)
    for (const generation of live()) applyShared(generation, record)
  }
  // Other instances of the site, through Valkey/Redis (state.redis); a cluster's workers go through their primary.
  const link: RedisLink<SharedRecord> | undefined = options.worker === undefined ? await openSiteLink(config, logger, applyEverywhere) : undefined

  /** hook makes what `generation` records count everywhere: the other live generations, the history, the site. */
  const hook = (generation: Generation): void => shareState(generation, (record) => {
    remember(record, generation.config)
    for (const other of live()) if (other !== generation) applyShared(other, record)
    if (!quiet) {
      options.share?.(record)
      link?.publish(record)
    }
  })

  current = await buildGeneration(config, options, parts)
  hook(current)
  options.feed?.({ applyShared: applyEverywhere, pools: current.pools })
  // What the other instances recorded is known before the first client is served (or Redis
  // is given up on for now, after a bounded wait: traffic never waits for it).
  if (link !== undefined) sharedStateGauges(metrics.registry, () => link.status())
  await link?.start()
  /** publishDrain tells the other instances a server's maintenance state after an admin changed it. */
  const publishDrain = (name: string): void => {
    const state = current.drain.stateOf(name)
    if (link === undefined || state === undefined) return
    link.publish({ kind: 'drain', backend: name, ...state })
  }
  let address: AddressInfo
  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined
  try {
    address = await current.open()
    // A cluster worker's admin is the primary's (cluster/primary.ts), which merges the workers'.
    if (config.admin && options.worker === undefined) {
      admin = await startAdminServer(config.admin, {
        status: () => gateway.status(),
        affinity: () => current.affinity.snapshot(),
        drain: {
          // A drain reaches the connections a previous configuration still holds, too.
          drain: (name, vdir, deadlineMs) => {
            const found = live().map((generation) => generation.drain.drain(name, vdir, deadlineMs)).some(Boolean)
            if (found) publishDrain(name)
            return found
          },
          enable: (name, vdir) => {
            const found = live().map((generation) => generation.drain.enable(name, vdir)).some(Boolean)
            if (found) publishDrain(name)
            return found
          },
          setWeight: (name, weight) => {
            const found = live().map((generation) => generation.drain.setWeight(name, weight)).some(Boolean)
            if (found) link?.publish({ kind: 'weight', backend: name, weight })
            return found
          },
          snapshot: () => current.drain.snapshot()
        },
        metrics: async () => ({ contentType: metrics.registry.contentType, text: await metrics.registry.metrics() }),
        reload: options.configFile === undefined ? undefined : () => reload(),
        clearLockout: (user) => current.preauth?.lockout.clear(user),
        userAffinity: (user, clear) => gateway.userAffinity(user, clear)
      })
      logger.info({ address: admin.address.address, port: admin.address.port }, 'admin listener on')
    }
  } catch (err) {
    await current.close()
    await listener.close()
    await link?.close()
    throw err
  }

  let reloading = false
  let closing = false
  /** refuse logs why a reload did not happen; the running configuration stays. */
  const refuse = (problems: unknown[]): ReloadResult => {
    logger.error({ problems }, 'configuration reload refused; the running configuration stays')
    return { reloaded: false, problems }
  }
  const reload = async (): Promise<ReloadResult> => {
    if (options.configFile === undefined) return { reloaded: false, problems: [{ message: 'no configuration file to re-read' }] }
    if (reloading || closing) return { reloaded: false, problems: [{ message: 'a reload or a stop is already running' }] }
    reloading = true
    try {
      let next: Generation
      try {
        next = await buildGeneration(loadConfigFile(options.configFile), options, parts)
      } catch (err) {
        return refuse(err instanceof ConfigError ? err.issues : [{ message: (err as Error).message }])
      }
      // A stop that came while the file was read wins: nothing of the next configuration starts.
      if (closing) {
        await next.close()
        return { reloaded: false, problems: [{ message: 'stopping' }] }
      }
      // What the running configuration knows: servers out, drains and weights, then every
      // site-wide record still in force (lockout counts, the Basic cache, sign-outs, placements).
      next.health.adopt(current.health)
      next.drain.adopt(current.drain)
      // Live from here on: open() takes the port before it resolves (a key set fetch may take
      // seconds), so what either side records meanwhile (a sign-out, a failed logon) must reach
      // the other, the history and the site.
      hook(next)
      opening = next
      for (const record of history.records()) applyShared(next, record)
      for (const assignment of current.affinity.store.shared()) next.affinity.store.applyShared(assignment)
      try {
        await next.open()
      } catch (err) {
        opening = undefined
        shareState(next, undefined)
        await next.close()
        return refuse([{ message: (err as Error).message }])
      }
      if (closing) {
        // The stop closed what was live when it came; open() may have started timers since.
        opening = undefined
        shareState(next, undefined)
        await next.close()
        return { reloaded: false, problems: [{ message: 'stopping' }] }
      }
      const previous = current
      current = next
      opening = undefined
      retiring.add(previous)
      logger.info({ maxMs: previous.longestHoldMs + RETIRE_MARGIN_MS, connections: previous.frontDoor.connections }, 'the previous configuration finishes what it holds')
      previous.retire(previous.longestHoldMs + RETIRE_MARGIN_MS).then(() => {
        logger.info('the previous configuration finished')
      }, (err: unknown) => logger.error({ err }, 'the previous configuration failed to finish')).finally(() => retiring.delete(previous))
      const adminOf = (c: GatewayConfig): string => JSON.stringify(c.admin === undefined ? null : [c.admin.host, c.admin.port, c.admin.names, c.admin.token])
      if (adminOf(next.config) !== adminOf(config)) logger.warn('the admin listener keeps its address and token until a restart')
      if (next.config.listen.host !== config.listen.host || next.config.listen.port !== config.listen.port) logger.warn('the client port stays where it is until a restart')
      if (JSON.stringify(next.config.state) !== JSON.stringify(config.state)) logger.warn('the shared state (state.redis) stays as it was until a restart')
      logger.info({ hosts: next.config.hosts.flatMap((h) => h.names), pools: [...next.config.pools.keys()] }, 'configuration reloaded')
      return { reloaded: true }
    } finally {
      reloading = false
    }
  }

  const defaultHost = (): string => current.config.defaultHost.names.find((name) => !name.startsWith('*')) ?? 'localhost'
  const gateway: Gateway = {
    get config () { return current.config },
    get app () { return current.app },
    get frontDoor () { return current.frontDoor },
    get pools () { return current.pools },
    get preauth () { return current.preauth },
    get health () { return current.health },
    get drain () { return current.drain },
    get affinity () { return current.affinity },
    get certificates () { return current.certificates },
    address,
    logger,
    metrics,
    adminAddress: admin?.address,
    url: (path = '/', host = defaultHost()) => `https://${host}:${address.port}${path}`,
    status: () => link === undefined ? current.status() : { ...current.status(), sharedState: link.status() },
    reload,
    applyShared: applyEverywhere,
    userAffinity (user, clear, share = true) {
      quiet = !share
      try {
        return current.affinity.user(user, clear)
      } finally {
        quiet = false
      }
    },
    async retire (maxMs) {
      closing = true
      await Promise.all(live().map((generation) => generation.retire(maxMs)))
      await admin?.app.close()
      await listener.close()
      await link?.close()
    },
    async close (graceMs = 0) {
      closing = true
      await admin?.app.close()
      await Promise.all(live().map((generation) => generation.close(graceMs)))
      await listener.close()
      await link?.close()
    }
  }
  return gateway
}
