import cluster, { type Worker } from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { loadConfigFile, readConfigText, type GatewayConfig } from '../config/load.js'
import { CasgateError, ConfigError } from '../errors/errors.js'
import { createLogger } from '../observe/logger.js'
import { checkExtendedProtection } from '../tls/extended-protection.js'
import { carryOver, controlPlane, type ControlPlane } from './control-plane.js'
import { Registry } from 'prom-client'
import { sharedStateGauges } from '../observe/shared-state-metrics.js'
import { startPrimaryAdmin } from './primary-admin.js'
import { WorkerQuestions } from './worker-questions.js'
import { isMessage, type ToPrimary, type ToWorker } from './messages.js'
import { RecordHistory } from '../state/record-history.js'
import type { SharedRecord } from '../state/shared-record.js'
import { keptUntil } from '../gateway/shared-state.js'
import { openSiteLink } from '../state/site-link.js'

// The primary of a cluster serves no client. It forks the workers and replaces one that dies,
// probes health once for all of them, holds the drain state, relays what a worker records
// site-wide to the others, serves the admin listener with the workers' figures merged, and passes
// SIGTERM/SIGINT (graceful stop) on to every worker; SIGHUP reloads the whole configuration.

/** SNAPSHOT_TIMEOUT_MS bounds how long /status (and any question to the workers) waits for a worker's answer. */
const SNAPSHOT_TIMEOUT_MS = 2_000
/** A worker that dies this soon after starting is failing to start, not crashing in service. */
const QUICK_EXIT_MS = 5_000
const MAX_RESTART_DELAY_MS = 30_000

/** PrimaryOptions are what `casgate start` passes on. */
export interface PrimaryOptions {
  /** The configuration file, re-read on reload. */
  file: string
  /** Its text as `config` was loaded from: what the workers serve until a reload accepts another. */
  text: string
  workers: number
  graceMs: number
  extendedProtection: 'enforce' | 'warn'
  logger?: Logger
}

/** Primary is a running cluster primary, for the CLI and tests. */
export interface Primary {
  readonly port: number
  readonly adminAddress: AddressInfo | undefined
  stop: () => Promise<void>
}

/** runPrimary checks what must be checked once, starts the workers and resolves when all listen. */
export async function runPrimary (config: GatewayConfig, options: PrimaryOptions): Promise<Primary> {
  const logger = options.logger ?? createLogger(config.log).child({ role: 'primary' })
  for (const warning of config.warnings) logger.warn({ path: warning.path, fix: warning.fix }, warning.message)
  const ep = await checkExtendedProtection(config)
  for (const warning of ep.warnings) logger.warn({ path: warning.path, fix: warning.fix }, warning.message)
  if (ep.errors.length > 0) {
    if (options.extendedProtection !== 'warn') throw new ConfigError(config.source, ep.errors)
    for (const error of ep.errors) logger.error({ path: error.path, fix: error.fix }, `STARTING ANYWAY (--ignore-extended-protection): ${error.message}`)
  }

  let plane = controlPlane(config, logger)
  let workerCount = options.workers
  /** The workers of the running configuration, and those a reload is starting or retiring. */
  const ready = new Set<Worker>()
  const starting = new Set<Worker>()
  const retiring = new Set<Worker>()
  const listeningNew = new Set<Worker>()
  /** Workers that got the history and have not said ready yet: they hear every record too. */
  const relaying = new Set<Worker>()
  let reloading: { resolve: () => void, reject: (err: Error) => void } | undefined
  const started = new Map<Worker, number>()
  const questions = new WorkerQuestions(SNAPSHOT_TIMEOUT_MS)
  /** The configuration text the workers serve, and the one a reload's new workers are trying. */
  let accepted = options.text
  let trying: string | undefined
  /** Workers of a reload that failed, killed on purpose. */
  const abandoned = new Set<Worker>()
  let stopping = false
  let restartDelayMs = 1_000

  const send = (worker: Worker, message: ToWorker): void => { if (worker.isConnected()) worker.send(message) }
  // Health, drains and weights reach the workers of a previous configuration too: what they still
  // hold (keep-alive connections, held requests) must leave a drained server as well.
  // Workers still starting hear health changes as they come, and get drains and weights whole
  // when they join (welcome).
  const broadcast = (message: ToWorker, except?: Worker): void => { for (const worker of [...ready, ...relaying, ...listeningNew, ...retiring]) if (worker !== except) send(worker, message) }
  // What one worker records site-wide reaches every other, of the old configuration or the new
  // (once it listens: before, the history replays it), and is kept for workers that start later.
  const history = new RecordHistory()
  const share = (record: SharedRecord, except?: Worker): void => {
    history.add(record, keptUntil(plane.config, record))
    for (const worker of [...ready, ...relaying, ...listeningNew, ...retiring]) if (worker !== except) send(worker, { t: 'shared', record })
  }
  // Other instances of the site, through Valkey/Redis (state.redis): the primary speaks for its workers.
  const link = await openSiteLink(config, logger, (record) => {
    if (record.kind === 'drain') plane.drain.applyState(record.backend, record.vdirs, record.deadlineAt)
    if (record.kind === 'weight') plane.drain.setWeight(record.backend, record.weight)
    share(record)
  })
  // The primary's own figures, beside its workers': the link to the other instances is here.
  const own = link === undefined ? undefined : new Registry()
  if (link !== undefined && own !== undefined) sharedStateGauges(own, () => link.status())
  /** publishDrain tells the other instances a server's maintenance state after an admin changed it. */
  const publishDrain = (name: string): void => {
    const state = plane.drain.stateOf(name)
    if (state !== undefined) link?.publish({ kind: 'drain', backend: name, ...state })
  }
  const watchHealth = (next: ControlPlane): void => { next.health.onChange = (server, vdir, up) => broadcast({ t: 'health', origin: server.origin, vdir, down: !up }) }
  watchHealth(plane)

  const admin = config.admin === undefined
    ? undefined
    : await startPrimaryAdmin(config.admin, {
      plane: () => plane,
      link,
      own,
      workers: { configured: options.workers, ready },
      ask: (message) => questions.ask(ready, (worker, id) => send(worker, message(id))),
      broadcast,
      publishDrain,
      share,
      reload: () => reload()
    })
  if (admin) logger.info({ address: admin.address.address, port: admin.address.port }, 'admin listener on')

  /**
   * replay gives a worker that starts late (a replacement, or one of a reload) the site-wide
   * records still in force: without them it would start with no lockout counts and no sign-outs.
   */
  const replay = (worker: Worker): void => {
    for (const record of history.records()) send(worker, { t: 'shared', record })
  }

  /**
   * maintenance sends every server's whole maintenance state and weight, enabled ones and weight 1
   * included: a worker that heard of a drain before it listened must also hear of its end.
   */
  const maintenance = (worker: Worker): void => {
    const servers = new Map([...plane.pools.values()].flatMap((pool) => pool.servers.map((server) => [server.name, server] as const)))
    for (const [backend, server] of servers) {
      const state = plane.drain.stateOf(backend)
      if (state !== undefined) send(worker, { t: 'shared', record: { kind: 'drain', backend, ...state } })
      send(worker, { t: 'shared', record: { kind: 'weight', backend, weight: server.weight } })
    }
  }

  /** welcome brings a worker that listens up to date with the plane: health, drains and weights. */
  const welcome = (worker: Worker): void => {
    for (const { origin, vdir } of plane.health.down()) send(worker, { t: 'health', origin, vdir, down: true })
    maintenance(worker)
  }

  // One set of session-ticket keys for every worker: a client resumes whichever worker takes it.
  const ticketKeys = randomBytes(48).toString('hex')
  let port = 0
  let startup: { resolve: () => void, reject: (err: Error) => void } | undefined
  const listening = new Promise<void>((resolve, reject) => { startup = { resolve, reject } })

  const onMessage = (worker: Worker, message: unknown): void => {
    if (!isMessage<ToPrimary>(message)) return
    switch (message.t) {
      case 'starting':
        // Before the worker opens the client port: it must not serve a locked-out user or a
        // signed-out session in the meantime, nor send work to a drained server.
        replay(worker)
        maintenance(worker)
        for (const { origin, vdir } of plane.health.down()) send(worker, { t: 'health', origin, vdir, down: true })
        relaying.add(worker)
        // A reload's worker serves the text being tried; any other (a replacement) the accepted one.
        send(worker, { t: 'replayed', config: starting.has(worker) && trying !== undefined ? trying : accepted })
        return
      case 'ready':
        port = message.port
        relaying.delete(worker)
        if (starting.has(worker)) {
          // A reload's worker: they join when all of them listen (reload() swaps them in).
          listeningNew.add(worker)
          if (listeningNew.size === starting.size) reloading?.resolve()
          return
        }
        ready.add(worker)
        welcome(worker)
        if (ready.size === workerCount) startup?.resolve()
        return
      case 'failure': {
        for (const pool of plane.pools.values()) for (const server of pool.servers) if (server.origin === message.origin) plane.health.reportFailure(server, message.vdir, message.reason)
        return
      }
      case 'shared':
        share(message.record, worker)
        link?.publish(message.record)
        return
      case 'user-affinity': return questions.answer(worker, message.id, message.result)
      case 'snapshot': return questions.answer(worker, message.id, { status: message.status, affinity: message.affinity, metrics: message.metrics })
    }
  }

  const fork = (): Worker => {
    const worker = cluster.fork({ CASGATE_WORKERS: String(workerCount), CASGATE_TLS_TICKET_KEYS: ticketKeys })
    started.set(worker, Date.now())
    worker.on('message', (message: unknown) => onMessage(worker, message))
    return worker
  }

  cluster.on('exit', (worker, code, signal) => {
    const lived = Date.now() - (started.get(worker) ?? 0)
    const wasReady = ready.delete(worker)
    relaying.delete(worker)
    started.delete(worker)
    if (abandoned.delete(worker)) return
    questions.gone(worker)
    if (retiring.delete(worker)) {
      logger.info({ worker: worker.id, pid: worker.process.pid }, 'worker of the previous configuration finished')
      return
    }
    if (starting.delete(worker)) {
      reloading?.reject(new Error(`worker ${worker.id} of the new configuration exited (${signal ?? `status ${code}`}) before it listened`))
      return
    }
    if (stopping) return
    if (startup !== undefined && !wasReady) {
      // A worker that cannot start (port taken, bad certificate) will not start on a retry either.
      // Its status says whose the fix is (2: the configuration, a port taken): systemd's
      // RestartPreventExitStatus=2 then stops retrying, as with one process.
      startup.reject(Object.assign(new Error(`worker ${worker.id} exited (${signal ?? `status ${code}`}) before it listened; see its log above`), { exitStatus: code === 2 ? 2 : 1 }))
      return
    }
    restartDelayMs = lived < QUICK_EXIT_MS ? Math.min(MAX_RESTART_DELAY_MS, restartDelayMs * 2) : 1_000
    logger.error({ worker: worker.id, pid: worker.process.pid, code, signal, restartInMs: restartDelayMs }, 'worker exited; starting another')
    setTimeout(() => { if (!stopping) fork() }, restartDelayMs).unref()
  })

  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    const exited = Promise.all([...started.keys()].map((worker) => new Promise<void>((resolve) => {
      if (worker.isDead()) return resolve()
      worker.once('exit', () => resolve())
      send(worker, { t: 'stop', graceMs: options.graceMs })
    })))
    // A worker that does not stop within the grace (and a margin) is killed.
    const deadline = setTimeout(() => { for (const worker of started.keys()) worker.process.kill('SIGKILL') }, options.graceMs + 5_000)
    await exited
    clearTimeout(deadline)
    await admin?.app.close()
    await plane.close()
    await link?.close()
  }

  /**
   * reload re-reads the configuration file: a file with problems is refused (logged, the running
   * configuration kept); a good one gets workers of its own, which take new connections once they
   * all listen, while the previous workers stop accepting and finish what they hold — held long
   * polls, RPC channels and pinned NTLM connections on the servers they started with.
   */
  let reloadRunning = false
  const reload = async (): Promise<{ reloaded: boolean, problems?: unknown[] }> => {
    // Set before the first await: a burst of SIGHUPs runs one reload, not several side by side.
    if (reloadRunning || stopping) return { reloaded: false, problems: [{ message: 'a reload or a stop is already running' }] }
    reloadRunning = true
    try {
      return await reloadOnce()
    } finally {
      reloadRunning = false
      trying = undefined
    }
  }
  const reloadOnce = async (): Promise<{ reloaded: boolean, problems?: unknown[] }> => {
    let next: GatewayConfig
    let text: string
    try {
      text = readConfigText(options.file)
      next = loadConfigFile(options.file, { text })
      const ep = await checkExtendedProtection(next)
      if (ep.errors.length > 0 && options.extendedProtection !== 'warn') throw new ConfigError(next.source, ep.errors)
    } catch (err) {
      if (!(err instanceof CasgateError)) throw err
      const problems = err instanceof ConfigError ? err.issues : [{ message: err.message }]
      logger.error({ problems }, 'configuration reload refused; the running configuration stays')
      return { reloaded: false, problems }
    }
    trying = text
    const nextPlane = controlPlane(next, logger)
    const count = next.listen.workers === 'auto' ? availableParallelism() : Math.max(1, next.listen.workers)
    const previousCount = workerCount
    workerCount = count
    try {
      await new Promise<void>((resolve, reject) => {
        reloading = { resolve, reject }
        const timer = setTimeout(() => reject(new Error('the new workers did not listen within 60 s')), 60_000)
        timer.unref()
        for (let i = 0; i < count; i++) starting.add(fork())
      })
    } catch (err) {
      workerCount = previousCount
      // Killed on purpose: their exit must not look like a crash to replace.
      for (const worker of starting) abandoned.add(worker)
      const killed = [...starting]
      starting.clear()
      listeningNew.clear()
      for (const worker of killed) worker.process.kill('SIGKILL')
      await nextPlane.close()
      logger.error({ err: (err as Error).message }, 'configuration reload failed; the running configuration stays')
      return { reloaded: false, problems: [{ message: (err as Error).message }] }
    } finally {
      reloading = undefined
    }
    // The swap: new connections go to the new workers; the old ones finish what they hold.
    const longest = Math.max(plane.config.listen.idleTimeoutMs, ...plane.config.hosts.flatMap((host) => host.mode === 'passthrough' ? [host.idleTimeoutMs] : host.vdirs.map((vdir) => vdir.timeoutMs)))
    for (const worker of ready) {
      retiring.add(worker)
      send(worker, { t: 'retire', maxMs: longest + 5_000 })
    }
    ready.clear()
    for (const worker of starting) ready.add(worker)
    starting.clear()
    listeningNew.clear()
    accepted = text
    const previous = plane
    // Taken over now, not when the next plane was built: a drain or an enable while the new
    // workers started went to the running plane (and to the new workers, as records).
    carryOver(previous, nextPlane)
    plane = nextPlane
    watchHealth(plane)
    plane.health.start()
    await previous.close()
    for (const worker of ready) welcome(worker)
    const listener = (c: GatewayConfig): string => JSON.stringify(c.admin === undefined ? null : [c.admin.host, c.admin.port, c.admin.names, c.admin.token])
    if (listener(next) !== listener(config)) {
      logger.warn('the admin listener keeps its address and token until a restart')
    }
    logger.info({ workers: ready.size, retiring: retiring.size, hosts: next.hosts.flatMap((h) => h.names), pools: [...next.pools.keys()] }, 'configuration reloaded')
    return { reloaded: true }
  }

  // What the other instances recorded is known before the workers start (they replay it), or
  // Redis is given up on for now, after a bounded wait.
  await link?.start()
  for (let i = 0; i < options.workers; i++) fork()
  try {
    await listening
  } catch (err) {
    await stop()
    throw err
  } finally {
    startup = undefined
  }
  plane.health.start()
  logger.info({ port, workers: options.workers, hosts: config.hosts.flatMap((h) => h.names) }, 'casgate listening')
  process.on('SIGHUP', () => {
    logger.info({ workers: ready.size }, 'SIGHUP: reloading the configuration')
    reload().catch((err: unknown) => logger.error({ err }, 'configuration reload failed'))
  })
  return { port, adminAddress: admin?.address, stop }
}
