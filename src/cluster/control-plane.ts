import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/load.js'
import { DrainControl } from '../upstream/drain.js'
import { HealthMonitor } from '../upstream/health-monitor.js'
import { watchHealthTargets } from '../upstream/health-targets.js'
import { ServerPool } from '../upstream/server-pool.js'
import { openTransports } from '../upstream/transports.js'
import { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'

/**
 * ControlPlane is what a cluster's primary runs for one configuration: the pools, the transports
 * its health probes travel (as the traffic does: plain HTTP, or TLS with the pool's CA and name),
 * the health monitor and the drain state. A reload builds the next one beside it.
 */
export interface ControlPlane {
  readonly config: GatewayConfig
  readonly pools: ReadonlyMap<string, ServerPool>
  readonly health: HealthMonitor
  readonly drain: DrainControl
  close: () => Promise<void>
}

/** controlPlane builds (without starting its probes) the primary's side of a configuration. */
export function controlPlane (config: GatewayConfig, logger: Logger): ControlPlane {
  const pools = new Map([...config.pools.values()].map((pool) => [pool.name, new ServerPool(pool)]))
  const upstreams = new UpstreamDispatcher()
  for (const pool of pools.values()) openTransports(upstreams, pool, pool.config.scheme === 'http:' ? 'http' : 'tls')
  const health = new HealthMonitor(config.health, upstreams, logger.child({ component: 'health' }))
  watchHealthTargets(health, config, pools)
  // The workers hold the leases and cut at a deadline; the primary only remembers the state.
  const drain = new DrainControl(pools, logger.child({ component: 'drain' }), { cuts: false })
  return {
    config,
    pools,
    health,
    drain,
    async close () {
      health.stop()
      drain.stop()
      await upstreams.destroy()
    }
  }
}

/** carryOver gives the next plane the health, drains and weights of the running one, for the servers it still has. */
export function carryOver (from: ControlPlane, to: ControlPlane): void {
  to.health.adopt(from.health)
  to.drain.adopt(from.drain)
}
