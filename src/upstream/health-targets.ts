import { healthPathFor } from '../config/exchange-profile.js'
import type { GatewayConfig, PassthroughHost } from '../config/load.js'
import type { HealthMonitor } from './health-monitor.js'
import type { ServerPool } from './server-pool.js'

/**
 * watchHealthTargets gives the monitor every (server, vdir) pair in use: each published vdir on
 * each server of its pool, probed with the first terminated host's name, and each passthrough
 * host's monitor vdir on its pool's servers, probed with the host's own name.
 */
export function watchHealthTargets (health: HealthMonitor, config: GatewayConfig, pools: ReadonlyMap<string, ServerPool>): void {
  const terminated = config.hosts.filter((host) => host.mode !== 'passthrough')
  const probeHost = terminated[0]?.names.find((name) => !name.startsWith('*')) ?? 'localhost'
  for (const vdir of config.vdirs) for (const server of pools.get(vdir.pool)!.servers) health.watch(server, vdir.path, vdir.healthPath, probeHost)
  for (const host of config.hosts.filter((h): h is PassthroughHost => h.mode === 'passthrough')) {
    const name = host.names.find((n) => !n.startsWith('*')) ?? probeHost
    for (const server of pools.get(host.pool)!.servers) health.watch(server, host.monitorVdir, healthPathFor(host.monitorVdir), name)
  }
}
