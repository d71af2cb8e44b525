import { createSecureContext, type SecureContext } from 'node:tls'
import { Pool, type Client } from 'undici'
import type { BudgetClass } from './budget.js'
import type { ServerPool } from './server-pool.js'
import type { Server } from './server.js'
import type { UpstreamDispatcher } from './upstream-dispatcher.js'

// How casgate talks to a pool's servers: plain HTTP (offload) or TLS verified against the pool's
// CA (re-encrypt, and the health probes of passthrough pools). The SSL mode plugins (src/modes/)
// choose one for the pools their hosts publish; a server's two undici pools (interactive and long
// poll) are created here, once per origin, and registered with the upstream dispatcher.

/** Transport is the scheme a pool's servers are spoken to with. */
export type Transport = 'http' | 'tls'

/**
 * clientOptions are the settings of one upstream connection, shared or dedicated. Timeouts per
 * request come from the vdir, so the client's own are off. IIS keeps idle connections for 120 s;
 * reusing them for a minute saves handshakes.
 */
function clientOptions (pool: ServerPool, server: Server, transport: Transport, secureContext: SecureContext | undefined): Client.Options {
  return {
    connectTimeout: pool.config.connectTimeoutMs,
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 10 * 60_000,
    headersTimeout: 0,
    bodyTimeout: 0,
    pipelining: 1,
    ...(secureContext !== undefined ? { connect: tlsOptions(pool, server, secureContext) } : {})
  }
}

/**
 * poolSecureContext is the one OpenSSL context (CA store, client certificate) of a pool's upstream
 * connections, raw RPC tunnels and pinned NTLM connections included. Given `ca` instead,
 * tls.connect builds and parses a new one for every connection: ~21 KB more per open upstream
 * connection, and slower connects (bench/README.md, session 4: memory).
 */
function poolSecureContext (pool: ServerPool): SecureContext {
  const config = pool.config
  return createSecureContext({
    ...(config.ca ? { ca: config.ca } : {}),
    ...(config.clientCertificate ? { cert: config.clientCertificate.certPem, key: config.clientCertificate.keyPem } : {}),
    minVersion: 'TLSv1.2'
  })
}

/** tlsOptions verify a server against the pool's CA and the server's name, and present the pool's client certificate. */
function tlsOptions (pool: ServerPool, server: Server, secureContext: SecureContext): Client.Options['connect'] {
  return {
    secureContext,
    ...(server.tlsServerName ? { servername: server.tlsServerName } : {}),
    rejectUnauthorized: !pool.config.insecureSkipVerify,
    ALPNProtocols: ['http/1.1']
  }
}

/**
 * openTransports registers the undici pools of every server of `pool` not registered yet (a
 * server listed by two pools shares them), as many connections per class as its budget lets
 * requests be in flight (the proxy queues the rest, bounded, before undici would). Returns what
 * it opened, for closing at shutdown.
 */
export function openTransports (upstreams: UpstreamDispatcher, pool: ServerPool, transport: Transport): Pool[] {
  const wanted = transport === 'http' ? 'http:' : 'https:'
  if (pool.config.scheme !== wanted) throw new TypeError(`pool ${pool.name} has ${pool.config.scheme}// servers; a ${transport === 'http' ? 'plain HTTP' : 'TLS'} transport needs ${wanted}//`)
  const opened: Pool[] = []
  const secureContext = transport === 'tls' ? poolSecureContext(pool) : undefined
  for (const server of pool.servers) {
    if (upstreams.has(server.origin)) continue
    const options = clientOptions(pool, server, transport, secureContext)
    const perClass = (kind: BudgetClass): Pool => new Pool(server.origin, { ...options, connections: kind === 'interactive' ? pool.config.connectionsPerServer : pool.config.longPollConnectionsPerServer })
    const pools = { interactive: perClass('interactive'), longPoll: perClass('longPoll') }
    upstreams.add(server.origin, pools, options)
    opened.push(pools.interactive, pools.longPoll)
  }
  return opened
}
