import { isIP } from 'node:net'
import { createSecureContext } from 'node:tls'
import fp from 'fastify-plugin'
import { Pool } from 'undici'
import type { BackendPool } from '../src/pool/backend-pool.js'
import { closeOnShutdown, upstreamClientOptions, upstreamPoolOptions, validateModeOptions, type SslModePlugin } from './ssl-mode.js'

// Re-encrypt ("SSL bridging"): TLS ends at casgate and a new TLS connection goes to the
// backend, verified against the pool's CA. With Extended Protection the front certificate must
// be the very one the backends serve (RFC 5929 tls-server-end-point).

function connectOptions (pool: BackendPool, url: URL): Pool.Options['connect'] {
  const config = pool.config
  const serverName = config.serverName ?? (isIP(url.hostname) === 0 ? url.hostname : undefined)
  // One secure context (OpenSSL SSL_CTX with its CA store and client certificate) for every
  // connection to this server, raw tunnels included: given `ca` instead, tls.connect builds a new
  // one per connection, ~21 KB more per open upstream connection (bench/README.md, session 4).
  const secureContext = createSecureContext({
    ...(config.ca ? { ca: config.ca } : {}),
    ...(config.clientCertificate ? { cert: config.clientCertificate.certPem, key: config.clientCertificate.keyPem } : {}),
    minVersion: 'TLSv1.2'
  })
  return {
    secureContext,
    ...(serverName ? { servername: serverName } : {}),
    rejectUnauthorized: !config.insecureSkipVerify,
    ALPNProtocols: ['http/1.1']
  }
}

const reencryptMode: SslModePlugin = async function reencryptMode (fastify, options) {
  validateModeOptions('casgate-reencrypt', options, 'https:')
  const created: Pool[] = []
  for (const pool of options.pools) {
    if (pool.config.insecureSkipVerify) {
      fastify.log.warn({ pool: pool.name }, 'INSECURE: backend certificates are not verified (insecureSkipVerify)')
    }
    for (const backend of pool.backends) {
      if (options.upstreams.has(backend.origin)) continue
      const connect = connectOptions(pool, backend.url)
      const pools = { interactive: new Pool(backend.origin, { ...upstreamPoolOptions(pool, 'interactive'), connect }), longPoll: new Pool(backend.origin, { ...upstreamPoolOptions(pool, 'longPoll'), connect }) }
      options.upstreams.add(backend.origin, pools, { ...upstreamClientOptions(pool), connect })
      created.push(pools.interactive, pools.longPoll)
    }
  }
  fastify.addHook('onClose', closeOnShutdown(created))
}

export default fp(reencryptMode, { fastify: '5.x', name: 'casgate-reencrypt' })
