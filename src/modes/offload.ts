import fp from 'fastify-plugin'
import { Pool } from 'undici'
import { closeOnShutdown, upstreamClientOptions, upstreamPoolOptions, validateModeOptions, type SslModePlugin } from './ssl-mode.js'

// SSL offload: TLS ends at casgate and the backends are spoken to in plain HTTP. Fastest, and
// incompatible with Exchange Extended Protection (the backend cannot see the client's TLS
// channel); the certificate check refuses that combination.

const offloadMode: SslModePlugin = async function offloadMode (fastify, options) {
  validateModeOptions('casgate-offload', options, 'http:')
  const created: Pool[] = []
  for (const pool of options.pools) {
    for (const backend of pool.servers) {
      if (options.upstreams.has(backend.origin)) continue
      const pools = { interactive: new Pool(backend.origin, upstreamPoolOptions(pool, 'interactive')), longPoll: new Pool(backend.origin, upstreamPoolOptions(pool, 'longPoll')) }
      options.upstreams.add(backend.origin, pools, upstreamClientOptions(pool))
      created.push(pools.interactive, pools.longPoll)
    }
  }
  fastify.addHook('onClose', closeOnShutdown(created))
}

export default fp(offloadMode, { fastify: '5.x', name: 'casgate-offload' })
