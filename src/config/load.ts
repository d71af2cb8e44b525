import { createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { BlockList } from 'node:net'
import { dirname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { CasgateError, ConfigError, type ConfigIssue } from '../errors.js'
import type { LoadedCertificate } from '../tls/certificate.js'
import { CertificateLoadError, loadCertificate } from '../tls/load-certificate.js'
import { splitPemCertificates } from '../tls/certificate.js'
import { checkCertificate } from '../tls/certificate-check.js'
import { zodIssuesToConfigIssues } from './issues.js'
import { resolveTopology, type ResolvedVdir } from './resolve.js'
import { configSchema, type AffinityConfig, type AdminConfig, type CertificateConfig, type HealthConfig, type PoolConfig, type RawConfig, type SslMode } from './schema.js'

/** TerminatedHost is an offload or reencrypt host block with its certificate loaded. */
export interface TerminatedHost {
  names: string[]
  mode: Exclude<SslMode, 'passthrough'>
  certificate: LoadedCertificate
  extendedProtection: boolean
}

/** PassthroughHost is a host whose TLS connections are piped, unopened, to a pool. */
export interface PassthroughHost {
  names: string[]
  mode: 'passthrough'
  pool: string
  balance: 'source-ip' | 'least-connections'
  idleTimeoutMs: number
  /** Vdir whose health page gates the servers (ActiveSync by default). */
  monitorVdir: string
}

/** ResolvedHost is one host block, resolved. */
export type ResolvedHost = TerminatedHost | PassthroughHost

/** PASSTHROUGH_IDLE_TIMEOUT_MS outlasts ActiveSync's longest Ping (59 min) with margin. */
export const PASSTHROUGH_IDLE_TIMEOUT_MS = 70 * 60_000

/** ResolvedPool is a pool with parsed server URLs and its TLS material loaded. */
export interface ResolvedPool extends Omit<PoolConfig, 'servers' | 'ca' | 'clientCertificate'> {
  name: string
  servers: URL[]
  scheme: 'http:' | 'https:'
  /** PEM CA certificates trusted for the backends; undefined means the system roots. */
  ca?: string
  clientCertificate?: LoadedCertificate
}

/** AffinitySettings is the affinity block with its secret loaded. */
export interface AffinitySettings extends Omit<AffinityConfig, 'secretFile' | 'secretEnv'> {
  /** HMAC key for identity hashes and cookie signatures; a KeyObject never prints its bytes. */
  secret: KeyObject
  /** Where the secret came from, for `casgate check`. */
  secretSource: 'file' | 'env' | 'certificate' | 'random'
}

/** MIN_AFFINITY_SECRET_LENGTH keeps HMAC keys out of guessing range (32 characters). */
export const MIN_AFFINITY_SECRET_LENGTH = 32

function readSecret (config: AffinityConfig, baseDir: string, issues: ConfigIssue[]): { text: string, source: 'file' | 'env' } | undefined {
  if (config.secretFile !== undefined && config.secretEnv !== undefined) {
    issues.push({ path: 'affinity.secretEnv', message: 'secretFile and secretEnv are both set', fix: 'keep one of them' })
    return undefined
  }
  let text: string | undefined
  let path = ''
  if (config.secretFile !== undefined) {
    path = 'affinity.secretFile'
    try {
      text = readFileSync(resolve(baseDir, config.secretFile), 'utf8').split(/\r?\n/)[0]!
    } catch (err) {
      issues.push({ path, message: `cannot read ${config.secretFile} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: 'check the path; relative paths start at the configuration file\'s directory' })
      return undefined
    }
  } else if (config.secretEnv !== undefined) {
    path = 'affinity.secretEnv'
    text = process.env[config.secretEnv]
    if (text === undefined) {
      issues.push({ path, message: `environment variable ${config.secretEnv} is not set`, fix: `export ${config.secretEnv} before starting casgate` })
      return undefined
    }
  } else {
    return undefined
  }
  if (text.length < MIN_AFFINITY_SECRET_LENGTH) {
    issues.push({ path, message: `the secret has ${text.length} characters, fewer than ${MIN_AFFINITY_SECRET_LENGTH}`, fix: 'generate one with: openssl rand -base64 48' })
    return undefined
  }
  return { text, source: config.secretFile !== undefined ? 'file' : 'env' }
}

/**
 * resolveAffinity loads the affinity secret. Without one configured it is derived (HKDF) from
 * the first terminated host's private key: instances sharing a certificate then hash users
 * alike and accept each other's cookies, and nothing secret has to be copied around.
 */
function resolveAffinity (config: AffinityConfig, hosts: readonly ResolvedHost[], baseDir: string, issues: ConfigIssue[]): AffinitySettings {
  const { secretFile: _file, secretEnv: _env, ...settings } = config
  const configured = readSecret(config, baseDir, issues)
  if (configured) return { ...settings, secret: createSecretKey(Buffer.from(configured.text, 'utf8')), secretSource: configured.source }
  const host = hosts.find((candidate): candidate is TerminatedHost => candidate.mode !== 'passthrough')
  if (host) {
    const keyDer = host.certificate.key.export({ type: 'pkcs8', format: 'der' })
    return { ...settings, secret: createSecretKey(Buffer.from(hkdfSync('sha256', keyDer, 'casgate', 'affinity secret v1', 32))), secretSource: 'certificate' }
  }
  return { ...settings, secret: createSecretKey(randomBytes(32)), secretSource: 'random' }
}

/** GatewayConfig is the whole configuration, validated, resolved and frozen. */
export interface GatewayConfig {
  source: string
  listen: RawConfig['listen']
  hosts: ResolvedHost[]
  /** The host that takes connections without SNI (or with an unknown name). */
  defaultHost: ResolvedHost
  pools: ReadonlyMap<string, ResolvedPool>
  vdirs: readonly ResolvedVdir[]
  admin: AdminConfig | undefined
  health: HealthConfig
  affinity: AffinitySettings
  certificateCheckIntervalMs: number
  trustProxy: BlockList
  /** How many trustProxy entries there are; zero lets the hot path skip the check. */
  trustProxyEntries: number
  log: RawConfig['log']
  /** Things that work but deserve the admin's attention, logged at start and shown by check. */
  warnings: ConfigIssue[]
}

function tryLoadCertificate (config: CertificateConfig, baseDir: string, path: string, issues: ConfigIssue[]): LoadedCertificate | undefined {
  try {
    return loadCertificate(config, baseDir)
  } catch (err) {
    const key = err instanceof CertificateLoadError ? err.key : ''
    const reason = err instanceof Error ? err.message.replace(/^cannot load certificate: /, '') : String(err)
    const fix = err instanceof CertificateLoadError ? err.fix : 'check the file, its format and the passphrase'
    issues.push({ path: key ? `${path}.${key}` : path, message: reason, fix })
    return undefined
  }
}

function loadCa (files: string | string[], baseDir: string, path: string, issues: ConfigIssue[]): string | undefined {
  const pems: string[] = []
  for (const file of [files].flat()) {
    try {
      const certificates = splitPemCertificates(readFileSync(resolve(baseDir, file), 'utf8'))
      if (certificates.length === 0) issues.push({ path, message: `${file} holds no PEM certificate`, fix: 'point it at the PEM file of the CA that issued the backend certificates' })
      pems.push(...certificates.map((cert) => cert.toString()))
    } catch (err) {
      issues.push({ path, message: `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: 'check the path; relative paths start at the configuration file\'s directory' })
    }
  }
  return pems.join('')
}

/**
 * buildConfig validates a configuration object (from YAML or built in code, as the demo does),
 * resolves it over the Exchange profile and loads its certificates. Every problem is collected
 * and thrown at once as a ConfigError, so the admin fixes the file in one pass.
 */
export function buildConfig (input: unknown, options: { source: string, baseDir: string }): GatewayConfig {
  const parsed = configSchema.safeParse(input)
  if (!parsed.success) throw new ConfigError(options.source, zodIssuesToConfigIssues(parsed.error, configSchema, input))
  const raw = parsed.data
  const issues: ConfigIssue[] = []
  const warnings: ConfigIssue[] = []
  const topology = resolveTopology(raw, issues, warnings)

  const hosts: ResolvedHost[] = []
  raw.hosts.forEach((host, i) => {
    if (host.mode === 'passthrough') {
      hosts.push({
        names: host.names,
        mode: 'passthrough',
        pool: host.pool ?? '',
        balance: host.balance ?? 'source-ip',
        idleTimeoutMs: host.idleTimeoutMs ?? PASSTHROUGH_IDLE_TIMEOUT_MS,
        monitorVdir: host.monitorVdir ?? '/Microsoft-Server-ActiveSync'
      })
      return
    }
    if (host.certificate === undefined) return // reported by resolveTopology
    const path = `hosts[${i}].certificate`
    const certificate = tryLoadCertificate(host.certificate, options.baseDir, path, issues)
    if (!certificate) return
    const extraRoots = host.certificate.ca === undefined ? [] : splitPemCertificates(loadCa(host.certificate.ca, options.baseDir, `${path}.ca`, issues) ?? '')
    const findings = checkCertificate({ path, certificate, names: host.names, extraRoots })
    issues.push(...findings.errors)
    warnings.push(...findings.warnings)
    hosts.push({ names: host.names, mode: host.mode, certificate, extendedProtection: host.extendedProtection })
  })

  const pools = new Map<string, ResolvedPool>()
  for (const [name, pool] of Object.entries(raw.pools)) {
    const servers = topology.pools.get(name)!
    const resolved: ResolvedPool = { ...pool, name, servers: servers.servers, scheme: servers.scheme, ca: undefined, clientCertificate: undefined }
    if (pool.ca !== undefined) resolved.ca = loadCa(pool.ca, options.baseDir, `pools.${name}.ca`, issues)
    if (pool.clientCertificate !== undefined) {
      resolved.clientCertificate = tryLoadCertificate(pool.clientCertificate, options.baseDir, `pools.${name}.clientCertificate`, issues)
    }
    if (pool.insecureSkipVerify) {
      warnings.push({ path: `pools.${name}.insecureSkipVerify`, message: 'backend certificates are NOT verified: anyone on the path to the backends can read and change traffic', fix: 'set pools.' + name + '.ca to the internal CA and remove insecureSkipVerify' })
    }
    pools.set(name, resolved)
  }

  const affinity = resolveAffinity(raw.affinity, hosts, options.baseDir, issues)
  if (issues.length > 0) throw new ConfigError(options.source, issues)
  const wanted = raw.listen.defaultHost?.toLowerCase()
  const defaultHost = (wanted !== undefined ? hosts.find((host) => host.names.some((name) => name.toLowerCase() === wanted)) : undefined) ??
    hosts.find((host) => host.mode !== 'passthrough') ?? hosts[0]!
  return Object.freeze({
    source: options.source,
    listen: raw.listen,
    hosts,
    defaultHost,
    pools,
    vdirs: Object.freeze(topology.vdirs),
    admin: raw.admin,
    health: raw.health,
    affinity,
    certificateCheckIntervalMs: raw.certificateCheckIntervalMs,
    trustProxy: topology.trustProxy,
    trustProxyEntries: raw.trustProxy.length,
    log: raw.log,
    warnings
  })
}

/** loadConfigFile reads a YAML configuration; relative paths in it start at its directory. */
export function loadConfigFile (file: string): GatewayConfig {
  const path = resolve(file)
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new CasgateError('CASGATE_ERR_CONFIG_READ', [`${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`], { cause: err })
  }
  const document = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (document.errors.length > 0) {
    throw new ConfigError(file, document.errors.map((err) => ({
      path: err.linePos ? `line ${err.linePos[0].line}, column ${err.linePos[0].col}` : '',
      message: `YAML syntax: ${err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`,
      fix: 'correct the YAML at that position (indentation is spaces, not tabs)'
    })))
  }
  return buildConfig(document.toJS() ?? {}, { source: file, baseDir: dirname(path) })
}
