import type { FastifyPluginAsync } from 'fastify'
import type { Client, Pool } from 'undici'
import type { ServerPool } from '../upstream/server-pool.js'
import type { BudgetClass } from '../upstream/budget.js'
import type { UpstreamDispatcher } from '../upstream/upstream-dispatcher.js'

/** SslModeOptions is what every SSL mode plugin is registered with. */
export interface SslModeOptions {
  /** Pools this mode carries traffic for. */
  pools: readonly ServerPool[]
  upstreams: UpstreamDispatcher
}

/** SslModePlugin is the shape of modes/offload.ts and modes/reencrypt.ts. */
export type SslModePlugin = FastifyPluginAsync<SslModeOptions>

/**
 * upstreamPoolOptions are the undici pool settings both modes share, for one budget class: as
 * many connections as the budget lets requests be in flight (the proxy queues the rest, bounded,
 * before undici would). Timeouts per request come from the vdir, so the pool's own are off.
 * IIS keeps idle connections for 120 s; reusing them for a minute saves handshakes.
 */
export function upstreamPoolOptions (pool: ServerPool, kind: BudgetClass): Pool.Options {
  return {
    connections: kind === 'interactive' ? pool.config.connectionsPerServer : pool.config.longPollConnectionsPerServer,
    ...upstreamClientOptions(pool)
  }
}

/** upstreamClientOptions are the settings of one upstream connection, shared or dedicated. */
export function upstreamClientOptions (pool: ServerPool): Client.Options {
  return {
    connectTimeout: pool.config.connectTimeoutMs,
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 10 * 60_000,
    headersTimeout: 0,
    bodyTimeout: 0,
    pipelining: 1
  }
}

/** validateModeOptions fails registration early with a message naming what is wrong. */
export function validateModeOptions (name: string, options: SslModeOptions, scheme: 'http:' | 'https:'): void {
  if (!options?.upstreams || !Array.isArray(options.pools)) throw new TypeError(`${name}: options.pools and options.upstreams are required`)
  for (const pool of options.pools) {
    if (pool.config.scheme !== scheme) throw new TypeError(`${name}: pool ${pool.name} has ${pool.config.scheme}// servers, this mode needs ${scheme}//`)
  }
}

/**
 * closeOnShutdown releases the pools a mode opened when fastify closes. The front door has
 * already let requests in flight finish (or run out of grace), so what is left is dropped.
 */
export function closeOnShutdown (created: Pool[]): () => Promise<void> {
  return async () => { await Promise.all(created.map((pool) => pool.destroy())) }
}
