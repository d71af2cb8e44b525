import { healthPathFor } from '../config/exchange-profile.js'
import type { GatewayConfig, PassthroughHost, ResolvedHost, TerminatedHost } from '../config/load.js'
import type { HealthMonitor } from './health-monitor.js'
import type { ServerPool } from './server-pool.js'

/**
 * watchHealthTargets gives the monitor every (server, vdir) pair in use: each vdir a host
 * publishes on each server of its pool, probed with that host's name (once per pair, whichever
 * hosts publish it), and each passthrough host's monitor vdir on its pool's servers.
 */
export function watchHealthTargets (health: HealthMonitor, config: GatewayConfig, pools: ReadonlyMap<string, ServerPool>): void {
  const terminated = config.hosts.filter((host): host is TerminatedHost => host.mode !== 'passthrough')
  const nameOf = (host: ResolvedHost): string => host.names.find((name) => !name.startsWith('*')) ?? 'localhost'
  const probeHost = terminated[0] === undefined ? 'localhost' : nameOf(terminated[0])
  for (const host of terminated) {
    for (const vdir of host.vdirs) for (const server of pools.get(vdir.pool)!.servers) health.watch(server, vdir.path, vdir.healthPath, nameOf(host))
  }
  for (const host of config.hosts.filter((h): h is PassthroughHost => h.mode === 'passthrough')) {
    const name = host.names.some((n) => !n.startsWith('*')) ? nameOf(host) : probeHost
    for (const server of pools.get(host.pool)!.servers) health.watch(server, host.monitorVdir, healthPathFor(host.monitorVdir), name)
  }
}
