import type { FastifyPluginAsync } from 'fastify'
import type { Pool } from 'undici'
import type { ResolvedHost } from '../config/load.js'
import type { ServerPool } from '../upstream/server-pool.js'
import type { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'

/**
 * SslModeOptions is what every SSL mode plugin is registered with: the hosts configured with
 * that mode, and the pools they publish (through their vdirs, or a passthrough host's pool).
 */
export interface SslModeOptions<Host extends ResolvedHost = ResolvedHost> {
  hosts: readonly Host[]
  pools: readonly ServerPool[]
  upstreams: UpstreamDispatcher
}

/** SslModePlugin is the shape of modes/offload.ts, modes/reencrypt.ts and modes/passthrough.ts. */
export type SslModePlugin<Host extends ResolvedHost = ResolvedHost> = FastifyPluginAsync<SslModeOptions<Host>>

/** validateModeOptions fails registration early with a message naming what is wrong. */
export function validateModeOptions (name: string, options: SslModeOptions, mode: ResolvedHost['mode']): void {
  if (!options?.upstreams || !Array.isArray(options.pools) || !Array.isArray(options.hosts)) throw new TypeError(`${name}: options.hosts, options.pools and options.upstreams are required`)
  for (const host of options.hosts) {
    if (host.mode !== mode) throw new TypeError(`${name}: host ${host.names.join(', ')} is configured with mode ${host.mode}`)
  }
}

/**
 * closeOnShutdown releases the pools a mode opened when fastify closes. The front door has
 * already let requests in flight finish (or run out of grace), so what is left is dropped.
 */
export function closeOnShutdown (created: Pool[]): () => Promise<void> {
  return async () => { await Promise.all(created.map((pool) => pool.destroy())) }
}
