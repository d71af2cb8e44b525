import fp from 'fastify-plugin'
import type { TerminatedHost } from '../config/load.js'
import { openTransports } from '../upstream/transports.js'
import { closeOnShutdown, validateModeOptions, type SslModePlugin } from './ssl-mode.js'

// SSL offload: TLS ends at casgate and the servers of the hosts' pools are spoken to in plain
// HTTP. Fastest, and incompatible with Exchange Extended Protection (the server cannot see the
// client's TLS channel); the certificate check refuses that combination.

const offloadMode: SslModePlugin<TerminatedHost> = async function offloadMode (fastify, options) {
  validateModeOptions('casgate-offload', options, 'offload')
  const opened = options.pools.flatMap((pool) => openTransports(options.upstreams, pool, 'http'))
  fastify.addHook('onClose', closeOnShutdown(opened))
}

export default fp(offloadMode, { fastify: '5.x', name: 'casgate-offload' })
