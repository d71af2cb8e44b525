import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import type { AdminConfig } from '../config/schema.js'
import type { FrontDoorCounters } from '../front/front-door.js'
import type { BackendPool } from '../pool/backend-pool.js'
import type { HealthStatus } from '../pool/health-monitor.js'

/** StatusSource is what the admin listener reports on. */
export interface StatusSource {
  frontDoor: { connections: number, counters: FrontDoorCounters }
  pools: ReadonlyMap<string, BackendPool>
  health: { snapshot: () => HealthStatus[] }
}

/** statusSnapshot is the JSON of GET /status: listener counters and every backend's load. */
export function statusSnapshot (source: StatusSource): object {
  return {
    frontDoor: { openConnections: source.frontDoor.connections, ...source.frontDoor.counters },
    pools: Object.fromEntries([...source.pools].map(([name, pool]) => [name, {
      balance: pool.config.balance,
      servers: pool.backends.map((backend) => ({
        name: backend.name,
        origin: backend.origin,
        outstandingRequests: backend.outstanding,
        passthroughConnections: backend.connections,
        pinnedConnections: backend.pinned,
        downVdirs: [...backend.down]
      }))
    }])),
    health: source.health.snapshot()
  }
}

/**
 * startAdminServer opens the admin listener: plain HTTP, JSON, read-only for now. It has no
 * authentication, which is why it binds to loopback unless told otherwise.
 */
export async function startAdminServer (config: AdminConfig, source: StatusSource): Promise<{ app: FastifyInstance, address: AddressInfo }> {
  const app = Fastify({ logger: false })
  app.get('/status', async () => statusSnapshot(source))
  await app.listen({ host: config.host, port: config.port })
  return { app, address: app.server.address() as AddressInfo }
}
