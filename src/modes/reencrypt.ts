import fp from 'fastify-plugin'
import type { TerminatedHost } from '../config/load.js'
import { openTransports } from '../upstream/transports.js'
import { closeOnShutdown, validateModeOptions, type SslModePlugin } from './ssl-mode.js'

// Re-encrypt ("SSL bridging"): TLS ends at casgate and a new TLS connection goes to the server,
// verified against the pool's CA. With Extended Protection the front certificate must be the
// very one the servers serve (RFC 5929 tls-server-end-point; tls/extended-protection.ts).

const reencryptMode: SslModePlugin<TerminatedHost> = async function reencryptMode (fastify, options) {
  validateModeOptions('casgate-reencrypt', options, 'reencrypt')
  for (const pool of options.pools) {
    if (pool.config.insecureSkipVerify) fastify.log.warn({ pool: pool.name }, 'INSECURE: backend certificates are not verified (insecureSkipVerify)')
  }
  const opened = options.pools.flatMap((pool) => openTransports(options.upstreams, pool, 'tls'))
  fastify.addHook('onClose', closeOnShutdown(opened))
}

export default fp(reencryptMode, { fastify: '5.x', name: 'casgate-reencrypt' })
