import type { Worker } from 'node:cluster'
import { AggregatorRegistry, Registry, type MetricObjectWithValues, type MetricValue, type PrometheusContentType } from 'prom-client'
import type { AdminSettings } from '../config/admin-config.js'
import { startAdminServer } from '../admin/admin-server.js'
import { clearRecord } from '../preauth/lockout.js'
import type { RedisLink } from '../state/redis-link.js'
import type { SharedRecord } from '../state/shared-record.js'
import type { ControlPlane } from './control-plane.js'
import { mergeAffinity, mergeStatus } from './merge-snapshots.js'
import type { ToWorker } from './messages.js'

// A cluster's admin listener: the same routes as one process's, answered from the primary's own
// state (health, drains, the Redis link) and the workers' figures merged.

interface Snapshot { status: object, affinity: object, metrics: object[] }

/** PrimaryAdminSource is what the primary lends its admin listener. */
export interface PrimaryAdminSource {
  /** The running control plane (a reload replaces it). */
  plane: () => ControlPlane
  link: RedisLink<SharedRecord> | undefined
  /** The primary's own metrics (the Redis link's), merged with the workers'. */
  own: Registry | undefined
  workers: { configured: number, ready: ReadonlySet<Worker> }
  /** ask sends every ready worker the question `message(id)` and gathers the answers that come in time. */
  ask: <T>(message: (id: number) => ToWorker) => Promise<T[]>
  broadcast: (message: ToWorker) => void
  /** publishDrain tells the other instances a server's maintenance state. */
  publishDrain: (name: string) => void
  /** share relays a record to every worker (and keeps it for late ones). */
  share: (record: SharedRecord) => void
  reload: () => Promise<{ reloaded: boolean, problems?: unknown[] }>
}

/** startPrimaryAdmin opens the admin listener of a cluster. */
export function startPrimaryAdmin (settings: AdminSettings, source: PrimaryAdminSource): ReturnType<typeof startAdminServer> {
  const { link, own } = source
  const snapshot = (): Promise<Snapshot[]> => source.ask<Snapshot>((id) => ({ t: 'snapshot', id }))

  const status = async (): Promise<object> => {
    const plane = source.plane()
    const parts = await snapshot()
    const merged = mergeStatus(parts.map((part) => part.status))
    const memory = process.memoryUsage()
    // What the primary knows first hand: health, drains, which vdirs are out per server.
    for (const [name, pool] of plane.pools) {
      const servers = ((merged.pools as Record<string, { servers?: Array<{ downVdirs: string[] }> }> | undefined)?.[name]?.servers) ?? []
      pool.servers.forEach((server, i) => { if (servers[i]) servers[i].downVdirs = [...server.down] })
    }
    return {
      ...merged,
      ...(link === undefined ? {} : { sharedState: link.status() }),
      workers: { configured: source.workers.configured, serving: source.workers.ready.size, answered: parts.length },
      primary: { pid: process.pid, rssBytes: memory.rss, heapUsedBytes: memory.heapUsed },
      health: plane.health.snapshot(),
      drained: plane.drain.snapshot()
    }
  }

  return startAdminServer(settings, {
    status,
    affinity: async () => mergeAffinity((await snapshot()).map((part) => part.affinity)),
    drain: {
      drain: (name, vdir, deadlineMs) => source.plane().drain.drain(name, vdir, deadlineMs) && (source.broadcast({ t: 'drain', name, vdir, deadlineMs }), source.publishDrain(name), true),
      enable: (name, vdir) => source.plane().drain.enable(name, vdir) && (source.broadcast({ t: 'enable', name, vdir }), source.publishDrain(name), true),
      setWeight: (name, weight) => source.plane().drain.setWeight(name, weight) && (source.broadcast({ t: 'weight', name, weight }), link?.publish({ kind: 'weight', backend: name, weight }), true),
      snapshot: () => source.plane().drain.snapshot()
    },
    metrics: async () => {
      // prom-client's aggregation: counters add up; gauges as each declares (server_up min, affinity keys max).
      const aggregated = AggregatorRegistry.aggregate<PrometheusContentType>((await snapshot()).map((part) => part.metrics as MetricObjectWithValues<MetricValue<string>>[]))
      const registry = own === undefined ? aggregated : Registry.merge([aggregated, own])
      return { contentType: registry.contentType, text: await registry.metrics() }
    },
    reload: source.reload,
    clearLockout: (user) => {
      const preauth = source.plane().config.preauth
      if (preauth === undefined) return
      const record: SharedRecord = { kind: 'lockout', record: clearRecord(preauth.secret, user, Date.now()) }
      source.share(record)
      link?.publish(record)
    },
    userAffinity: async (user, clear) => {
      const answers = await source.ask<object>((id) => ({ t: 'user-affinity', id, user, clear }))
      // Placements are shared: every worker knows the same; the first answer says it.
      return answers[0] ?? { user, cleared: false, vdirs: [] }
    }
  })
}
