import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import type { HealthConfig } from '../config/schema.js'
import type { Server } from './server.js'

// Exchange's Managed Availability publishes /<vdir>/healthcheck.htm while a protocol is healthy
// on a server ("200 OK" and the server name) and takes it away (404) when it is not. So a server
// is up or down per vdir: a server whose OWA is out still serves EWS. Probing / or a TCP port
// sends users to a server whose ActiveSync is down.

/** HealthTarget is one monitored (server, vdir) pair. */
interface HealthTarget {
  backend: Server
  vdir: string
  path: string
  host: string
  up: boolean
  known: boolean
  streak: number
  since: number
  reason: string
  timer: NodeJS.Timeout | undefined
}

/** HealthStatus is one target as the admin listener shows it. */
export interface HealthStatus {
  backend: string
  vdir: string
  state: 'up' | 'down'
  since: string
  reason: string
}

const MAX_BODY = 64 * 1024

/**
 * HealthMonitor probes each (server, vdir) pair in use over the same transport as traffic
 * (HTTP for offload, HTTPS with the pool's CA, SNI and client certificate otherwise), with the
 * external host name, and keeps the verdict on the backend (`backend.down`), where selection
 * reads it. A pair changes state after `fall` failed or `rise` good probes in a row; the first
 * probe decides at once. Each change is logged once.
 */
export class HealthMonitor {
  readonly #targets = new Map<string, HealthTarget>()
  readonly #config: HealthConfig
  readonly #upstreams: Dispatcher
  readonly #log: Logger
  #running = false
  readonly #offline = new Set<Server>()
  /** Hears every change of a (server, vdir) pair, for the workers that route by it. */
  onChange: ((server: Server, vdir: string, up: boolean) => void) | undefined

  constructor (config: HealthConfig, upstreams: Dispatcher, logger: Logger) {
    this.#config = config
    this.#upstreams = upstreams
    this.#log = logger
  }

  /** watch adds a (server, vdir) pair; `host` is the Host header the probe sends. */
  watch (backend: Server, vdir: string, path: string, host: string): void {
    const key = `${backend.origin} ${vdir.toLowerCase()}`
    if (this.#targets.has(key)) return
    this.#targets.set(key, { backend, vdir, path, host, up: true, known: false, streak: 0, since: Date.now(), reason: 'not probed yet', timer: undefined })
  }

  /**
   * adopt takes the state of the pairs the monitor of the previous configuration also watched
   * (a reload): a server known to be out stays out until probes bring it back.
   */
  adopt (previous: HealthMonitor): void {
    for (const [key, target] of this.#targets) {
      const before = previous.#targets.get(key)
      if (before === undefined) continue
      Object.assign(target, { up: before.up, known: before.known, streak: before.streak, since: before.since, reason: before.reason })
      if (before.up) target.backend.down.delete(target.vdir)
      else target.backend.down.add(target.vdir)
    }
  }

  /** start probes every pair once right away, then every intervalMs (jittered so probes do not align). */
  start (): void {
    if (!this.#config.enabled || this.#running) return
    this.#running = true
    for (const target of this.#targets.values()) this.#schedule(target, Math.random() * Math.min(250, this.#config.intervalMs / 10))
  }

  stop (): void {
    this.#running = false
    for (const target of this.#targets.values()) clearTimeout(target.timer)
  }

  /** snapshot lists every pair with its state, for the admin listener. */
  snapshot (): HealthStatus[] {
    return [...this.#targets.values()].map((t) => ({ backend: t.backend.name, vdir: t.vdir, state: t.up ? 'up' : 'down', since: new Date(t.since).toISOString(), reason: t.reason }))
  }

  /**
   * reportFailure counts a failure seen on live traffic (refused, reset, timed out) like a
   * failed probe, so a dead server leaves before its next probe. Only probes bring it back.
   */
  reportFailure (backend: Server, vdir: string, reason: string): void {
    if (!this.#config.enabled) return
    const target = this.#targets.get(`${backend.origin} ${vdir.toLowerCase()}`)
    if (!target || !target.up) return
    // Traffic is not a probe: it never decides alone, it counts towards `fall`.
    target.known = true
    this.#record(target, false, `traffic: ${reason}`)
  }

  #schedule (target: HealthTarget, delayMs: number): void {
    if (!this.#running) return
    target.timer = setTimeout(() => { this.#probe(target).catch(() => undefined) }, delayMs)
    target.timer.unref()
  }

  async #probe (target: HealthTarget): Promise<void> {
    const { timeoutMs, expectBody, intervalMs } = this.#config
    let reason = ''
    try {
      const response = await this.#upstreams.request({
        origin: target.backend.origin,
        ...(target.backend.tlsServerName ? { servername: target.backend.tlsServerName } : {}),
        path: target.path,
        method: 'GET',
        headers: { host: target.host, 'user-agent': 'casgate-health' },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs
      })
      let body = ''
      for await (const chunk of response.body) {
        if (body.length < MAX_BODY) body += chunk.toString()
      }
      if (response.statusCode !== 200) reason = `status ${response.statusCode}`
      else if (!body.includes(expectBody)) reason = `body lacks ${JSON.stringify(expectBody)}`
    } catch (err) {
      reason = (err as { code?: string }).code ?? (err as Error).message
    }
    this.#record(target, reason === '', reason || 'healthy')
    this.#schedule(target, intervalMs * (0.9 + Math.random() * 0.2))
  }

  #record (target: HealthTarget, ok: boolean, reason: string): void {
    target.reason = reason
    if (!target.known) {
      target.known = true
      if (!ok) this.#change(target, false, reason)
      return
    }
    if (ok === target.up) {
      target.streak = 0
      return
    }
    target.streak++
    if (target.streak >= (ok ? this.#config.rise : this.#config.fall)) this.#change(target, ok, reason)
  }

  #change (target: HealthTarget, up: boolean, reason: string): void {
    const from = target.up ? 'up' : 'down'
    target.up = up
    target.streak = 0
    target.since = Date.now()
    if (up) target.backend.down.delete(target.vdir)
    else target.backend.down.add(target.vdir)
    const fields = { backend: target.backend.name, vdir: target.vdir, from, to: up ? 'up' : 'down', reason }
    // A 404 is Managed Availability taking a protocol out on purpose: news, not an error.
    if (up || reason === 'status 404') this.#log.info(fields, 'backend health changed')
    else this.#log.warn(fields, 'backend health changed')
    this.#noteServerWide(target.backend)
    this.onChange?.(target.backend, target.vdir, up)
  }

  /** down lists the (server, vdir) pairs out now, for a worker that starts after they went. */
  down (): Array<{ origin: string, vdir: string }> {
    return [...this.#targets.values()].filter((t) => !t.up).map((t) => ({ origin: t.backend.origin, vdir: t.vdir }))
  }

  /**
   * Exchange's "server-wide offline" (Set-ServerComponentState ServerWideOffline) makes every
   * health page answer 404: say it once, as maintenance, instead of one alarm per vdir.
   */
  #noteServerWide (backend: Server): void {
    const targets = [...this.#targets.values()].filter((t) => t.backend === backend)
    const offline = targets.length > 1 && targets.every((t) => !t.up && t.reason === 'status 404')
    if (offline && !this.#offline.has(backend)) {
      this.#offline.add(backend)
      this.#log.warn({ backend: backend.name, vdirs: targets.length }, 'backend is offline for maintenance (every health page answers 404)')
    } else if (!offline && this.#offline.delete(backend)) {
      this.#log.info({ backend: backend.name }, 'backend is back from maintenance')
    }
  }
}
