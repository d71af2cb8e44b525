import { connect, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { PassthroughHost } from '../config/load.js'
import { splice } from '../front/splice.js'
import { Lease } from '../upstream/lease.js'
import type { ServerPool } from '../upstream/server-pool.js'
import { openTransports } from '../upstream/transports.js'
import { closeOnShutdown, validateModeOptions, type SslModeOptions } from './ssl-mode.js'
import type { Server } from '../upstream/server.js'

// Passthrough ("SSL_BRIDGE", "basic firewall"): TLS is not terminated. The front door has read
// the ClientHello to learn the host name; its bytes and everything after go unopened to a
// backend, so a client certificate (ActiveSync CBA) reaches Exchange itself.

/** PassthroughOptions add to the mode's options the log of relayed connections. */
export interface PassthroughOptions extends SslModeOptions<PassthroughHost> {
  logger: Logger
}

/** PassthroughRelay takes connections the front door routes to passthrough hosts. */
export interface PassthroughRelay {
  relay: (client: Socket, hello: Buffer, host: PassthroughHost) => void
}

declare module 'fastify' {
  interface FastifyInstance {
    passthrough: PassthroughRelay
  }
}

async function passthroughMode (fastify: FastifyInstance, options: PassthroughOptions): Promise<void> {
  validateModeOptions('casgate-passthrough', options, 'passthrough')
  if (!options.logger) throw new TypeError('casgate-passthrough: options.logger is required')
  const log = options.logger
  const open = new Set<Socket>()
  const pools = new Map(options.pools.map((pool) => [pool.name, pool]))
  // Connections are relayed unopened; the health probes of these servers travel over TLS.
  const opened = options.pools.flatMap((pool) => openTransports(options.upstreams, pool, 'tls'))

  function attempt (client: Socket, hello: Buffer, host: PassthroughHost, pool: ServerPool, candidates: Server[], index: number): void {
    if (client.destroyed) return
    const backend = candidates[index]
    if (backend === undefined) {
      log.warn({ host: host.names[0], client: client.remoteAddress, tried: candidates.map((b) => b.name) }, 'no passthrough backend reachable')
      client.destroy()
      return
    }
    const upstream = connect({
      host: backend.url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(backend.url.port || 443),
      allowHalfOpen: true,
      noDelay: true
    })
    open.add(upstream)
    const giveUp = (err?: Error): void => {
      upstream.destroy()
      open.delete(upstream)
      client.off('close', abandon)
      log.warn({ backend: backend.name, host: host.names[0], err }, 'passthrough backend unreachable, trying the next')
      attempt(client, hello, host, pool, candidates, index + 1)
    }
    const abandon = (): void => { upstream.destroy() }
    upstream.setTimeout(pool.config.connectTimeoutMs, () => giveUp(new Error('connect timeout')))
    upstream.once('error', giveUp)
    client.once('close', abandon)
    upstream.once('connect', () => {
      upstream.off('error', giveUp)
      client.off('close', abandon)
      upstream.setTimeout(0)
      // Held like any other work on the server: counted, and cut by a drain's deadline.
      const lease = new Lease(backend, 'connection', host.monitorVdir, () => {
        client.destroy()
        upstream.destroy()
      })
      upstream.write(hello)
      splice(client, upstream, host.idleTimeoutMs, () => {
        lease.release()
        open.delete(upstream)
      })
      client.resume()
    })
  }

  fastify.decorate('passthrough', {
    relay (client, hello, host) {
      const pool = pools.get(host.pool)
      if (!pool) {
        client.destroy()
        return
      }
      attempt(client, hello, host, pool, pool.connectionOrder(client.remoteAddress ?? '', host.balance, host.monitorVdir), 0)
    }
  } satisfies PassthroughRelay)

  const closeTransports = closeOnShutdown(opened)
  fastify.addHook('onClose', async () => {
    for (const socket of open) socket.destroy()
    await closeTransports()
  })
}

export default fp(passthroughMode, { fastify: '5.x', name: 'casgate-passthrough' })
