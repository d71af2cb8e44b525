import type { KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { BlockList } from 'node:net'
import { createSecureContext } from 'node:tls'
import { dirname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { CasgateError, ConfigError, type ConfigIssue } from '../errors/errors.js'
import type { LoadedCertificate } from '../certificates/certificate.js'
import { CertificateLoadError, loadCertificate } from '../certificates/load-certificate.js'
import { splitPemCertificates } from '../certificates/certificate.js'
import { checkCertificate } from '../certificates/certificate-check.js'
import { zodIssuesToConfigIssues } from './issues.js'
import { EXCHANGE_RULE_PACK } from '../rules/exchange-pack.js'
import { RulePack } from '../rules/rule-engine.js'
import { resolveTopology } from './resolve.js'
import type { ResolvedVdir } from './vdir-tables.js'
import { resolveSecret, resolveStateDir, type SecretSource } from './secrets.js'
import { resolveAdmin, type AdminSettings } from './admin-config.js'
import { resolvePreauth, type PreauthSettings } from './preauth-config.js'
import { resolveState, type StateSettings } from './state-config.js'
import { configSchema, type AffinityConfig, type CertificateConfig, type HealthConfig, type HstsConfig, type RulesConfig, type PoolConfig, type RawConfig, type SslMode } from './schema.js'

/** TerminatedHost is an offload or reencrypt host block with its certificate loaded. */
export interface TerminatedHost {
  names: string[]
  mode: Exclude<SslMode, 'passthrough'>
  certificate: LoadedCertificate
  extendedProtection: boolean
  /** When set, a client certificate from `ca` (not revoked in `crl`) is required on these names. */
  clientCertificate: ClientCertificateRequirement | undefined
  /** What it publishes: its own table, or the site-wide one (the very same array). */
  vdirs: readonly ResolvedVdir[]
}

/** ClientCertificateRequirement is a host's second factor: CA and revocation lists, as PEM. */
export interface ClientCertificateRequirement {
  ca: string
  crl: string | undefined
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
  secretSource: SecretSource
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
  /** The admin listener, with its token loaded; undefined when not configured. */
  admin: AdminSettings | undefined
  health: HealthConfig
  affinity: AffinitySettings
  /** Undefined when the configuration has no preauth block: nothing is preauthenticated. */
  preauth: PreauthSettings | undefined
  certificateCheckIntervalMs: number
  trustProxy: BlockList
  /** How many trustProxy entries there are; zero lets the hot path skip the check. */
  trustProxyEntries: number
  log: RawConfig['log']
  /** Exploit rule pack settings: which rules are switched off. */
  rules: RulesConfig
  /** Strict-Transport-Security on the terminated hosts' responses, when configured. */
  hsts: HstsConfig | undefined
  /** State shared with the site's other instances (Redis); undefined: this instance keeps its own. */
  state: StateSettings | undefined
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

function loadClientCertificate (config: NonNullable<RawConfig['hosts'][number]['clientCertificate']>, baseDir: string, path: string, issues: ConfigIssue[]): ClientCertificateRequirement | undefined {
  const ca = loadCa(config.ca, baseDir, `${path}.ca`, issues)
  let crl: string | undefined
  if (config.crl !== undefined) {
    const texts: string[] = []
    for (const file of [config.crl].flat()) {
      try {
        const text = readFileSync(resolve(baseDir, file), 'utf8')
        if (!text.includes('-----BEGIN X509 CRL-----')) throw new Error('holds no PEM CRL (-----BEGIN X509 CRL-----)')
        texts.push(text)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        issues.push({ path: `${path}.crl`, message: code ? `cannot read ${file} (${code})` : `${file} ${(err as Error).message}`, fix: 'point it at the PEM CRL your CA publishes (openssl crl -inform DER -in ca.crl -out ca-crl.pem converts a DER one)' })
      }
    }
    crl = texts.join('\n')
  }
  if (ca === undefined || ca === '') return undefined
  try {
    createSecureContext({ ca, ...(crl ? { crl } : {}) })
  } catch (err) {
    issues.push({ path, message: `OpenSSL refuses the CA or CRL: ${(err as Error).message}`, fix: 'check that the files are PEM certificates and CRLs of the same CA' })
    return undefined
  }
  return { ca, crl }
}

/**
 * buildConfig validates a configuration object (from YAML or built in code, as the demo does),
 * resolves it over the Exchange profile and loads its certificates. Every problem is collected
 * and thrown at once as a ConfigError, so the admin fixes the file in one pass. With
 * `writeState: false` (casgate check) nothing is created in the state directory.
 */
export function buildConfig (input: unknown, options: { source: string, baseDir: string, writeState?: boolean }): GatewayConfig {
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
    hosts.push({ names: host.names, mode: host.mode, certificate, extendedProtection: host.extendedProtection, clientCertificate: host.clientCertificate && loadClientCertificate(host.clientCertificate, options.baseDir, `hosts[${i}].clientCertificate`, issues), vdirs: topology.hostVdirs.get(i) ?? [] })
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

  const { secretFile: _file, secretEnv: _env, ...affinitySettings } = raw.affinity
  const affinitySecret = resolveSecret(raw.affinity, 'affinity', hosts, options.baseDir, issues)
  const affinity: AffinitySettings = { ...affinitySettings, secret: affinitySecret.key, secretSource: affinitySecret.source }
  const preauth = raw.preauth === undefined ? undefined : resolvePreauth(raw.preauth, options.baseDir, issues, (files, path) => loadCa(files, options.baseDir, path, issues), { stateDir: raw.stateDir, writeState: options.writeState ?? true })
  const admin = raw.admin === undefined ? undefined : resolveAdmin(raw.admin, { dir: resolveStateDir(raw.stateDir, options.baseDir), write: (options.writeState ?? true) && issues.length === 0 }, options.baseDir, issues)
  if (admin !== undefined && !/^(127\.\d+\.\d+\.\d+|::1|localhost)$/i.test(admin.host)) {
    warnings.push({ path: 'admin.host', message: `the admin listener is plain HTTP on ${admin.host}: its token and the status page's cookie cross that network in clear`, fix: 'keep it on 127.0.0.1 (reach it over SSH or a management VPN), or on a network only admins reach' })
  }
  const state = resolveState(raw.state, options.baseDir, issues)
  if (state !== undefined) {
    // Instances sharing state must hash users, sessions and affinity keys alike (checked again at run time: /status sharedState.fingerprint).
    if (preauth !== undefined && (preauth.secretSource === 'generated' || preauth.secretSource === 'state-file')) {
      warnings.push({ path: 'preauth.secretFile', message: 'the session secret is this instance\'s own (its state directory): instances sharing state (state.redis) that do not have the very same file disagree — a session from one is refused by the others, and lockout counts and sign-outs do not meet', fix: 'give every instance one secret: generate it once (openssl rand -base64 48), copy it to each, and name it in preauth.secretFile (or secretEnv)' })
    }
    if (affinity.secretSource === 'random') {
      warnings.push({ path: 'affinity.secretFile', message: 'the affinity secret is random per start: instances sharing state (state.redis) place the same user on different servers', fix: 'give every instance one secret in affinity.secretFile (or secretEnv)' })
    }
  }
  const rulePack = new RulePack(EXCHANGE_RULE_PACK, raw.rules.disable)
  for (const id of rulePack.unknownIds) {
    issues.push({ path: `rules.disable[${raw.rules.disable.indexOf(id)}]`, message: `${JSON.stringify(id)} is not a rule of pack ${rulePack.version}`, fix: `use one of ${EXCHANGE_RULE_PACK.rules.map((rule) => rule.id).join(', ')}` })
  }
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
    admin,
    health: raw.health,
    affinity,
    preauth,
    certificateCheckIntervalMs: raw.certificateCheckIntervalMs,
    trustProxy: topology.trustProxy,
    trustProxyEntries: raw.trustProxy.length,
    log: raw.log,
    rules: raw.rules,
    hsts: raw.hsts,
    state,
    warnings
  })
}

/**
 * loadConfigFile reads a YAML configuration; relative paths in it start at its directory.
 * `writeState: false` (casgate check) creates nothing in the state directory.
 */
/** readConfigText reads a configuration file's text (a missing or unreadable file: CASGATE_ERR_CONFIG_READ). */
export function readConfigText (file: string): string {
  try {
    return readFileSync(resolve(file), 'utf8')
  } catch (err) {
    throw new CasgateError('CASGATE_ERR_CONFIG_READ', [`${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`], { cause: err })
  }
}

/**
 * loadConfigFile reads, parses and validates a configuration file. `text` is its content when
 * already read (a cluster's workers get the text their primary accepted, not whatever the file
 * holds when they start); paths in it are relative to the file's folder either way.
 */
export function loadConfigFile (file: string, options: { writeState?: boolean, text?: string } = {}): GatewayConfig {
  const path = resolve(file)
  const text = options.text ?? readConfigText(file)
  const document = parseDocument(text, { prettyErrors: true, uniqueKeys: true })
  if (document.errors.length > 0) {
    throw new ConfigError(file, document.errors.map((err) => ({
      path: err.linePos ? `line ${err.linePos[0].line}, column ${err.linePos[0].col}` : '',
      message: `YAML syntax: ${err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`,
      fix: 'correct the YAML at that position (indentation is spaces, not tabs)'
    })))
  }
  return buildConfig(document.toJS() ?? {}, { source: file, baseDir: dirname(path), ...(options.writeState !== undefined ? { writeState: options.writeState } : {}) })
}
