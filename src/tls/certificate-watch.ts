import type { Logger } from 'pino'
import { loadConfigFile, type GatewayConfig, type TerminatedHost } from '../config/load.js'
import type { ConfigIssue } from '../errors/errors.js'
import type { CertificateGauge } from '../observe/metrics.js'
import { checkExtendedProtection } from './extended-protection.js'
import { SniContexts } from './sni-contexts.js'

/** CertificateListener is what serves the certificates: the front door swaps them for new handshakes. */
export interface CertificateListener {
  replaceCertificates: (sni: SniContexts) => void
}

/** CertificateStatus is the last comparison with the backends, for the admin listener. */
export interface CertificateStatus {
  checkedAt: string | undefined
  errors: ConfigIssue[]
  warnings: ConfigIssue[]
}

/**
 * CertificateWatch repeats the Extended Protection comparison on a schedule and after every
 * reload, so that a backend renewed without casgate (or casgate renewed without the backends)
 * shows up as a log line and on /status before users call; and reloads certificates from the
 * configuration file (SIGHUP) without dropping connections.
 */
export class CertificateWatch {
  #config: GatewayConfig
  readonly #frontDoor: CertificateListener
  readonly #log: Logger
  #timer: NodeJS.Timeout | undefined
  #reported = new Set<string>()
  status: CertificateStatus = { checkedAt: undefined, errors: [], warnings: [] }

  constructor (config: GatewayConfig, frontDoor: CertificateListener, logger: Logger) {
    this.#config = config
    this.#frontDoor = frontDoor
    this.#log = logger
  }

  start (): void {
    this.#timer = setInterval(() => { this.check().catch((err) => this.#log.error({ err }, 'certificate check failed')) }, this.#config.certificateCheckIntervalMs)
    this.#timer.unref()
  }

  stop (): void {
    clearInterval(this.#timer)
  }

  /** check compares casgate's certificates with the backends' now; each new mismatch is logged once. */
  async check (): Promise<CertificateStatus> {
    const { errors, warnings } = await checkExtendedProtection(this.#config)
    for (const error of errors) {
      if (this.#reported.has(error.message)) continue
      this.#reported.add(error.message)
      this.#log.error({ path: error.path, fix: error.fix }, `certificate drift: ${error.message}`)
    }
    this.#reported = new Set(errors.map((error) => error.message))
    this.status = { checkedAt: new Date().toISOString(), errors, warnings }
    return this.status
  }

  /**
   * reload reads the configuration file again and serves its certificates to new handshakes;
   * open connections keep theirs. Anything but certificates needs a restart. A configuration
   * with problems is refused and the running certificates stay.
   */
  async reload (): Promise<void> {
    const next = loadConfigFile(this.#config.source)
    const terminated = next.hosts.filter((host): host is TerminatedHost => host.mode !== 'passthrough')
    const fallback = next.defaultHost.mode === 'passthrough' ? undefined : next.defaultHost
    this.#frontDoor.replaceCertificates(new SniContexts(terminated, fallback))
    // Keep the running topology; only the certificates are new.
    this.#config = { ...this.#config, hosts: this.#config.hosts.map((host, i) => next.hosts[i] ?? host), defaultHost: next.defaultHost }
    this.#log.info({ hosts: terminated.map((host) => host.names[0]), leaves: terminated.map((host) => host.certificate.leaf.fingerprint256) }, 'certificates reloaded')
    await this.check()
  }
}

/**
 * certificateGauges are the terminated hosts' certificates as metrics show them: their expiry, and
 * whether the last Extended Protection comparison found their servers serving the same one.
 */
export function certificateGauges (config: GatewayConfig, status: CertificateStatus): CertificateGauge[] {
  return config.hosts.flatMap((host, i) => {
    if (host.mode === 'passthrough') return []
    const compared = host.mode === 'reencrypt' && host.extendedProtection && status.checkedAt !== undefined
    const mismatch = status.errors.some((error) => error.path === `hosts[${i}].certificate`)
    return [{ host: host.names[0]!, expiresAt: Math.floor(Date.parse(host.certificate.leaf.validTo) / 1000), extendedProtectionMatch: compared ? !mismatch : undefined }]
  })
}
