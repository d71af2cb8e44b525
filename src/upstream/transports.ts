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
function clientOptions (pool: ServerPool, server: Server, transport: Transport): Client.Options {
  return {
    connectTimeout: pool.config.connectTimeoutMs,
    keepAliveTimeout: 60_000,
    keepAliveMaxTimeout: 10 * 60_000,
    headersTimeout: 0,
    bodyTimeout: 0,
    pipelining: 1,
    ...(transport === 'tls' ? { connect: tlsOptions(pool, server) } : {})
  }
}

/** tlsOptions verify a server against the pool's CA and the server's name, and present the pool's client certificate. */
function tlsOptions (pool: ServerPool, server: Server): Client.Options['connect'] {
  const config = pool.config
  return {
    ...(config.ca ? { ca: config.ca } : {}),
    ...(server.tlsServerName ? { servername: server.tlsServerName } : {}),
    ...(config.clientCertificate ? { cert: config.clientCertificate.certPem, key: config.clientCertificate.keyPem } : {}),
    rejectUnauthorized: !config.insecureSkipVerify,
    minVersion: 'TLSv1.2',
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
  for (const server of pool.servers) {
    if (upstreams.has(server.origin)) continue
    const options = clientOptions(pool, server, transport)
    const perClass = (kind: BudgetClass): Pool => new Pool(server.origin, { ...options, connections: kind === 'interactive' ? pool.config.connectionsPerServer : pool.config.longPollConnectionsPerServer })
    const pools = { interactive: perClass('interactive'), longPoll: perClass('longPoll') }
    upstreams.add(server.origin, pools, options)
    opened.push(pools.interactive, pools.longPoll)
  }
  return opened
}
