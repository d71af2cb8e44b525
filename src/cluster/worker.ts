import cluster from 'node:cluster'
import type { GatewayConfig, ResolvedPool } from '../config/load.js'
import { loadConfigFile } from '../config/load.js'
import { startGateway, type FeedTarget } from '../gateway/gateway.js'
import { createLogger } from '../observe/logger.js'
import { isMessage, type ToPrimary, type ToWorker } from './messages.js'

// A cluster worker serves clients like a single casgate, with three differences: the primary
// probes health and holds the drain state (the worker applies what it is told), the primary serves
// the admin listener (the worker answers its snapshot requests), and site-wide state (lockout, the
// Basic cache, sign-outs, affinity placements) recorded here is sent to the primary for the other
// workers, while theirs is applied here.

/**
 * shareOf gives a worker its part of the limits that must hold for the whole instance:
 * connections at once (in total and per address) and each server's upstream budgets.
 */
export function shareOf (config: GatewayConfig, workers: number): GatewayConfig {
  const part = (total: number): number => Math.max(1, Math.ceil(total / workers))
  const pools = new Map<string, ResolvedPool>([...config.pools].map(([name, pool]) => [name, {
    ...pool,
    connectionsPerServer: part(pool.connectionsPerServer),
    longPollConnectionsPerServer: part(pool.longPollConnectionsPerServer)
  }]))
  return {
    ...config,
    pools,
    listen: { ...config.listen, maxConnections: part(config.listen.maxConnections), maxConnectionsPerAddress: part(config.listen.maxConnectionsPerAddress) }
  }
}

/** applyHealth marks a (server, vdir) pair as the primary's probes found it, in every pool listing the server. */
function applyHealth (pools: FeedTarget['pools'], origin: string, vdir: string, down: boolean): void {
  for (const pool of pools.values()) {
    for (const server of pool.servers) {
      if (server.origin !== origin) continue
      if (down) server.down.add(vdir)
      else server.down.delete(vdir)
    }
  }
}

/** runWorker starts this worker's gateway and serves until the primary (or a signal) stops it. */
export async function runWorker (file: string, workers: number): Promise<void> {
  const send = (message: ToPrimary): void => { if (process.connected) process.send!(message) }
  // The site-wide records in force (lockout counts, sign-outs), drains and the servers found down
  // come before the client port opens: once it listens, the primary hands this worker
  // connections. What comes later is applied as it comes, the moment the gateway can take it: the
  // port may be open seconds before startGateway resolves (a key set fetch), and a sign-out made
  // meanwhile must count here too.
  const early: Array<Extract<ToWorker, { t: 'shared' | 'health' }>> = []
  let fed: FeedTarget | undefined
  const take = (message: Extract<ToWorker, { t: 'shared' | 'health' }>): void => {
    if (fed === undefined) early.push(message)
    else if (message.t === 'shared') fed.applyShared(message.record)
    else applyHealth(fed.pools, message.origin, message.vdir, message.down)
  }
  const replayed = new Promise<string>((resolve) => {
    process.on('message', (message: unknown) => {
      if (!isMessage<ToWorker>(message)) return
      if (message.t === 'shared' || message.t === 'health') take(message)
      if (message.t === 'replayed') resolve(message.config)
    })
  })
  // A primary gone before it answered leaves nothing to serve for.
  const orphaned = (): void => process.exit(1)
  process.once('disconnect', orphaned)
  send({ t: 'starting' })
  const config = shareOf(loadConfigFile(file, { text: await replayed }), workers)
  const logger = createLogger(config.log).child({ worker: cluster.worker?.id, pid: process.pid })
  const gateway = await startGateway(config, {
    logger,
    feed: (target) => {
      fed = target
      for (const message of early.splice(0)) take(message)
    },
    extendedProtection: 'checked',
    worker: { reportFailure: (server, vdir, reason) => send({ t: 'failure', origin: server.origin, vdir, reason }) },
    share: (record) => send({ t: 'shared', record })
  })
  let stopping = false
  const stop = (graceMs: number): void => {
    if (stopping) return
    stopping = true
    gateway.close(graceMs).then(() => process.exit(0), (err: unknown) => {
      logger.error({ err }, 'worker stop failed')
      process.exit(1)
    })
  }
  const reload = (): void => {
    gateway.certificates.reload().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'certificate reload refused; the running certificates stay'))
  }
  process.on('message', (message: unknown) => {
    if (!isMessage<ToWorker>(message)) return
    switch (message.t) {
      case 'drain':
        gateway.drain.drain(message.name, message.vdir, message.deadlineMs)
        return
      case 'enable':
        gateway.drain.enable(message.name, message.vdir)
        return
      case 'weight':
        gateway.drain.setWeight(message.name, message.weight)
        return
      case 'snapshot':
        gateway.metrics.registry.getMetricsAsJSON().then(
          (metrics) => send({ t: 'snapshot', id: message.id, status: gateway.status(), affinity: gateway.affinity.snapshot(), metrics }),
          (err: unknown) => logger.error({ err }, 'metrics snapshot failed')
        )
        return
      case 'user-affinity':
        // Every worker is asked; each forgets its own copy without telling the others again.
        return send({ t: 'user-affinity', id: message.id, result: gateway.userAffinity(message.user, message.clear, false) })
      case 'stop': return stop(message.graceMs)
      case 'retire':
        // Nothing new comes here; what is held finishes on the configuration it started with.
        if (stopping) return
        stopping = true
        logger.info({ maxMs: message.maxMs }, 'retiring: a newer configuration takes new connections')
        gateway.retire(message.maxMs).then(() => process.exit(0), (err: unknown) => {
          logger.error({ err }, 'retiring failed')
          process.exit(1)
        })
    }
  })
  // systemd signals the whole control group: a worker stops as gracefully as the primary asks.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => stop(config.listen.shutdownGraceMs))
  process.on('SIGHUP', reload)
  // The primary going away (killed) leaves nobody to restart or aggregate: stop serving.
  process.off('disconnect', orphaned)
  process.on('disconnect', () => stop(config.listen.shutdownGraceMs))
  send({ t: 'ready', port: gateway.address.port })
}
