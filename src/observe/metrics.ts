import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { VdirAffinity } from '../affinity/vdir-affinity.js'
import type { ServerPool } from '../upstream/server-pool.js'

// GET /metrics on the admin listener, in Prometheus's text format (prom-client). Counters are
// moved where things happen (a request ends, an upstream fails, a lockout starts); everything
// that is already state somewhere (a server's health and leases, affinity keys, rule blocks,
// certificates) is read at scrape time, so the request path pays for three label lookups only.
// A cluster's primary merges its workers' registries (cluster/primary.ts): counters add up, state
// that every worker holds alike (health, affinity placements) is taken once.

/** CertificateGauge is one terminated host's certificate as metrics show it. */
export interface CertificateGauge {
  host: string
  /** When the served certificate expires, in seconds since the epoch. */
  expiresAt: number
  /** Whether the last Extended Protection comparison found the servers serving the same certificate; undefined when not compared. */
  extendedProtectionMatch: boolean | undefined
}

/** MetricsSources are the state read at scrape time. */
export interface MetricsSources {
  pools: () => Iterable<ServerPool>
  affinity: () => readonly VdirAffinity[]
  ruleBlocks: () => ReadonlyMap<string, number>
  certificates: () => readonly CertificateGauge[]
}

/** RequestLabels label one finished request. */
export interface RequestLabels {
  host: string
  vdir: string
  server: string
  /** 2xx, 3xx, 4xx, 5xx, or "aborted" when the client left before the end. */
  status: string
  /** How preauthentication decided: passed, excluded, a refusal's reason, or none (no preauth here). */
  preauth: string
}

// Long polls are held up to an hour: their own buckets, or they drown the interactive ones.
const INTERACTIVE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
const LONG_POLL_BUCKETS = [1, 5, 30, 60, 300, 600, 1200, 1800, 2700, 3600, 7200]

/** GatewayMetrics is one process's registry. */
export class GatewayMetrics {
  readonly registry = new Registry()
  readonly #requests: Counter
  readonly #interactive: Histogram
  readonly #longPoll: Histogram
  readonly #upstreamErrors: Counter
  readonly #lockouts: Counter

  constructor (sources: MetricsSources) {
    const registers = [this.registry]
    collectDefaultMetrics({ register: this.registry, prefix: 'casgate_' })
    // prom-client names three gauges like counters (…_total), which Prometheus's linter refuses:
    // their per-type breakdowns (…_active_handles, …_active_requests, …_active_resources) stay.
    for (const name of ['active_handles', 'active_requests', 'active_resources']) this.registry.removeSingleMetric(`casgate_nodejs_${name}_total`)
    this.#requests = new Counter({ name: 'casgate_requests_total', help: 'Requests answered, by host block, vdir, server, status class and preauthentication outcome.', labelNames: ['host', 'vdir', 'server', 'status', 'preauth'], registers })
    this.#interactive = new Histogram({ name: 'casgate_request_duration_seconds', help: 'Time from the request head to the end of the response, interactive vdirs.', labelNames: ['vdir'], buckets: INTERACTIVE_BUCKETS, registers })
    this.#longPoll = new Histogram({ name: 'casgate_long_poll_duration_seconds', help: 'Time from the request head to the end of the response, long-poll vdirs (ActiveSync, EWS, MAPI).', labelNames: ['vdir'], buckets: LONG_POLL_BUCKETS, registers })
    this.#upstreamErrors = new Counter({ name: 'casgate_upstream_errors_total', help: 'Upstream failures by kind (error code) and server.', labelNames: ['kind', 'server'], registers })
    this.#lockouts = new Counter({ name: 'casgate_lockouts_total', help: 'Lockouts started, by scope (user, device, address).', labelNames: ['scope'], registers })
    const serverGauge = (name: string, help: string, read: (server: ServerPool['servers'][number]) => number, aggregator: 'sum' | 'max' = 'sum'): void => {
      const gauge: Gauge = new Gauge({
        name,
        help,
        labelNames: ['pool', 'server'],
        registers,
        aggregator,
        collect () {
          gauge.reset()
          for (const pool of sources.pools()) for (const server of pool.servers) gauge.set({ pool: pool.name, server: server.name }, read(server))
        }
      })
    }
    serverGauge('casgate_outstanding_requests', 'Requests and Outlook Anywhere channels in flight per server.', (server) => server.outstanding)
    serverGauge('casgate_pinned_connections', 'Client connections pinned to a server by NTLM/Negotiate.', (server) => server.pinned)
    serverGauge('casgate_rpc_channels', 'Outlook Anywhere channels open per server.', (server) => [...server.leases].filter((lease) => lease.kind === 'channel').length)
    serverGauge('casgate_held_long_polls', 'Places taken in each server\'s long-poll budget (held Pings, streaming, NotificationWait, RPC channels).', (server) => server.budgets.longPoll.inUse)
    serverGauge('casgate_passthrough_connections', 'Passthrough connections open per server.', (server) => server.connections)
    const health: Gauge = new Gauge({
      name: 'casgate_server_up',
      help: 'Whether a server may take a vdir\'s requests: 1 healthy and not drained, 0 otherwise.',
      labelNames: ['pool', 'server', 'vdir'],
      registers,
      aggregator: 'min',
      collect () {
        health.reset()
        for (const pool of sources.pools()) {
          for (const server of pool.servers) {
            // The vdirs routed to the pool, and any a health probe took out (a passthrough host's monitor vdir).
            const vdirs = new Set([...server.down, ...sources.affinity().filter((affinity) => affinity.pool === pool).map((affinity) => affinity.vdir)])
            for (const vdir of vdirs) health.set({ pool: pool.name, server: server.name, vdir }, server.isAvailable(vdir) ? 1 : 0)
          }
        }
      }
    })
    const keys: Gauge = new Gauge({
      name: 'casgate_affinity_keys',
      help: 'Affinity keys assigned per vdir and server (shared by every worker).',
      labelNames: ['host', 'vdir', 'server'],
      registers,
      aggregator: 'max',
      collect () {
        keys.reset()
        for (const affinity of sources.affinity()) {
          for (const server of affinity.pool.servers) keys.set({ host: affinity.host ?? '', vdir: affinity.vdir, server: server.name }, affinity.held[server.index] ?? 0)
        }
      }
    })
    const share: Gauge = new Gauge({
      name: 'casgate_affinity_busiest_share',
      help: 'Share (0-1) of a vdir\'s requests that its busiest server took: near 1/servers is even, near 1 is everyone on one server.',
      labelNames: ['host', 'vdir'],
      registers,
      aggregator: 'max',
      collect () {
        share.reset()
        for (const affinity of sources.affinity()) {
          const total = affinity.requests.reduce((sum, n) => sum + n, 0)
          if (total > 0) share.set({ host: affinity.host ?? '', vdir: affinity.vdir }, Math.max(...affinity.requests) / total)
        }
      }
    })
    const blocks: Counter = new Counter({
      name: 'casgate_rule_blocks_total',
      help: 'Requests refused by the exploit rule pack, by rule id.',
      labelNames: ['rule'],
      registers,
      collect () {
        blocks.reset()
        for (const [rule, count] of sources.ruleBlocks()) blocks.inc({ rule }, count)
      }
    })
    // A timestamp (Prometheus's base unit, as the blackbox exporter's probe_ssl_earliest_cert_expiry):
    // alert on (casgate_certificate_expiry_timestamp_seconds - time()) / 86400 < 30.
    const expiry: Gauge = new Gauge({
      name: 'casgate_certificate_expiry_timestamp_seconds',
      help: 'When a host\'s certificate expires, in seconds since the epoch.',
      labelNames: ['host'],
      registers,
      aggregator: 'min',
      collect () {
        expiry.reset()
        for (const certificate of sources.certificates()) expiry.set({ host: certificate.host }, certificate.expiresAt)
      }
    })
    const match: Gauge = new Gauge({
      name: 'casgate_extended_protection_match',
      help: 'Whether the servers of a re-encrypt host serve casgate\'s certificate (1), or not (0): with Extended Protection a mismatch fails logons.',
      labelNames: ['host'],
      registers,
      aggregator: 'min',
      collect () {
        match.reset()
        for (const certificate of sources.certificates()) if (certificate.extendedProtectionMatch !== undefined) match.set({ host: certificate.host }, certificate.extendedProtectionMatch ? 1 : 0)
      }
    })
  }

  /** request counts one finished request and its duration. */
  request (labels: RequestLabels, seconds: number, longPoll: boolean): void {
    this.#requests.inc(labels as unknown as Record<string, string>)
    ;(longPoll ? this.#longPoll : this.#interactive).observe({ vdir: labels.vdir }, seconds)
  }

  /** upstreamError counts a failed upstream attempt (retried or not). */
  upstreamError (kind: string, server: string): void {
    this.#upstreamErrors.inc({ kind, server })
  }

  /** lockout counts a lockout started. */
  lockout (scope: string): void {
    this.#lockouts.inc({ scope })
  }
}
