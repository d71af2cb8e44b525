import { availableParallelism } from 'node:os'
import { exchangeProfile } from './config/exchange-profile.js'
import type { GatewayConfig, TerminatedHost } from './config/load.js'
import type { ResolvedVdir } from './config/vdir-tables.js'
import { describeSessionSecret } from './config/preauth-config.js'
import type { ConfigIssue } from './errors/errors.js'
import { EXCHANGE_PROFILE_BEARER_NOTE, EXCLUSION_PRESETS } from './preauth/exclusions.js'
import { EXCHANGE_RULE_PACK } from './rules/exchange-pack.js'
import { FRONT_END_ONLY_HEADERS } from './rules/front-end-headers.js'
import { RulePack } from './rules/rule-engine.js'

// What `casgate check` prints: the publication, then what the edge enforces, so that an admin
// sees before traffic flows what reaches Exchange and what does not.

const minutes = (ms: number): number => Math.round(ms / 60_000)

function preauthLines (config: GatewayConfig): string[] {
  const preauth = config.preauth
  if (preauth === undefined) return ['  preauth: off (no preauth block): Exchange authenticates every request itself; no lockout at the edge']
  const provider = preauth.credentials.kind === 'ldap' ? `LDAP ${preauth.credentials.ldap.urls.join(', ')} as ${preauth.credentials.ldap.bindName}` : `users file ${preauth.credentials.file} (${preauth.credentials.users.size} users)`
  const lockout = preauth.lockout
  const lines = [
    `  preauth: ${provider}; exclusions ${preauth.exclusionPreset}${preauth.exclude.length > 0 ? ` + ${preauth.exclude.join(', ')}` : ''}; session idle ${minutes(preauth.idleTimeoutMs)} min, absolute ${minutes(preauth.absoluteTimeoutMs)} min`,
    `    session secret: ${describeSessionSecret(preauth)}`,
    `    lockout: ${lockout.userThreshold} failures of a user lock it for unfamiliar sources, ${lockout.addressThreshold} from an address lock that address${lockout.familiarForMs > 0 ? `; sources that signed in within ${Math.round(lockout.familiarForMs / 86_400_000)} days keep working (smart lockout)` : '; smart lockout off (familiarForMs 0)'}; Exchange's 401s to Basic on unchecked paths count`
  ]
  const bearerVdirs = EXCLUSION_PRESETS[preauth.exclusionPreset].clientVdirs
  const bearer = preauth.bearer
  if (bearer === undefined) {
    lines.push(`    bearer: JWT-shaped tokens pass to Exchange on ${bearerVdirs.join(', ') || 'no vdir'} (${EXCHANGE_PROFILE_BEARER_NOTE}); set preauth.bearer to validate them here`)
  } else {
    const keys = bearer.jwks.kind === 'file' ? `keys from ${bearer.jwks.file}` : `keys from ${bearer.jwks.url.href} (cached ${minutes(bearer.jwks.cacheMaxAgeMs)} min)`
    lines.push(`    bearer: validated here (issuer ${bearer.issuer.join(' | ')}, audience ${bearer.audience.join(' | ')}, ${bearer.algorithms.join('/')}, ${keys}) on ${bearerVdirs.join(', ')} and vdirs without preauth`)
  }
  return lines
}

function edgeLines (config: GatewayConfig): string[] {
  const pack = new RulePack(EXCHANGE_RULE_PACK, config.rules.disable)
  const lines = [`  rules: pack ${pack.version}, ${pack.rules.length} active: ${pack.rules.map((rule) => rule.id).join(', ')}`]
  for (const rule of pack.disabled) lines.push(`    warning rules.disable: ${rule.id} (${rule.cve.join(', ')}) is switched off: ${rule.title}`)
  if (config.hosts.some((host) => host.mode === 'passthrough')) lines.push('    passthrough hosts cannot be filtered: their TLS is not opened here, so neither rules nor preauthentication apply to them')
  lines.push(`  requests: at most ${config.listen.maxHeaderBytes} bytes of headers; one Host, Authorization and session each; raw '#', dot segments (also encoded) and names ending in a dot refused; ${FRONT_END_ONLY_HEADERS.length} headers only Exchange's front end may set are stripped`)
  lines.push(`  connections: at most ${config.listen.maxConnections}, ${config.listen.maxConnectionsPerAddress} per address; handshake ${Math.round(config.listen.handshakeTimeoutMs / 1000)} s, headers ${Math.round(config.listen.headersTimeoutMs / 1000)} s (RPC channels too); TLS renegotiation refused`)
  if (config.hsts !== undefined) lines.push(`  hsts: max-age=${config.hsts.maxAgeSeconds}${config.hsts.includeSubDomains ? '; includeSubDomains' : ''}`)
  return lines
}

/** vdirLine is one published vdir: its pool, timeout, affinity, preauthentication and hardening. */
function vdirLine (config: GatewayConfig, vdir: ResolvedVdir): string {
  const profile = exchangeProfile.find((p) => p.path === vdir.path)
  const affinity = vdir.affinity === 'cookie' ? `cookie ${vdir.affinityCookie ?? `${config.affinity.cookieName}-${vdir.pool} (casgate's)`}` : vdir.affinity
  const preauth = config.preauth === undefined ? '' : `, preauth ${vdir.preauth}`
  const hardening = vdir.cspScriptSrcAttrNone ? ', CSP script-src-attr \'none\' (CVE-2026-42897)' : ''
  return `vdir ${vdir.path} -> pool ${vdir.pool}, timeout ${Math.round(vdir.timeoutMs / 1000)} s, affinity ${affinity}${preauth}${hardening}${profile ? ` (${profile.note})` : ''}`
}

/** checkReport renders what a configuration publishes, for `casgate check`, warnings under their host. */
export function checkReport (config: GatewayConfig): string {
  const lines: string[] = [`configuration ${config.source} is valid`]
  const workers = config.listen.workers
  if (workers === 'auto' || workers > 1) {
    const count = workers === 'auto' ? `one per core (${availableParallelism()} here)` : String(workers)
    lines.push(`  workers: ${count}, behind one port; a primary probes health, serves the admin listener and shares lockout, the Basic cache, sign-outs and affinity placements; connection limits and upstream budgets below are totals, divided among the workers`)
  }
  if (config.state !== undefined) {
    const redis = config.state.redis
    lines.push(`  shared state: Valkey/Redis ${redis.where}${redis.tls ? ' over TLS' : ''}, keys ${redis.keyPrefix}*; lockout counts, the Basic cache, sign-outs, affinity placements, drains and weights are shared with every instance using it (history kept ${Math.round(redis.historyMs / 3_600_000)} h); when it is unreachable each instance keeps counting alone and re-syncs on its return`)
  }
  const shown = new Set<ConfigIssue>()
  const warningsUnder = (prefix: string): string[] => config.warnings.filter((w) => w.path.startsWith(prefix)).map((w) => {
    shown.add(w)
    return `    warning ${w.path}: ${w.message}.${w.fix ? ` Fix: ${w.fix}` : ''}`
  })
  config.hosts.forEach((host, i) => {
    if (host.mode === 'passthrough') {
      lines.push(`  host ${host.names.join(', ')} (passthrough to pool ${host.pool}, ${host.balance}, idle ${Math.round(host.idleTimeoutMs / 60_000)} min)`)
      return
    }
    const leaf = host.certificate.leaf
    lines.push(`  host ${host.names.join(', ')} (${host.mode}${host.clientCertificate ? ', client certificate required' : ''})`)
    lines.push(`    certificate ${leaf.subject.replace(/\n/g, ', ')}; expires ${new Date(leaf.validTo).toISOString().slice(0, 10)}; chain ${host.certificate.chain.length} intermediate(s)`)
    // The whiteboard view: what each name publishes, where it goes, how it is authenticated.
    lines.push(...warningsUnder(`hosts[${i}]`))
    if (host.vdirs === config.vdirs) lines.push('    publishes the site-wide vdirs (below)')
    else lines.push(...host.vdirs.map((vdir) => `    ${vdirLine(config, vdir)}`))
  })
  for (const pool of config.pools.values()) {
    lines.push(`  pool ${pool.name}: ${pool.servers.map((url) => url.origin).join(', ')} (${pool.balance})`)
    // Each request in flight holds an upstream connection; a long poll holds it for its whole wait.
    const held = pool.longPollConnectionsPerServer * pool.servers.length
    lines.push(`    upstream connections per server: ${pool.connectionsPerServer} interactive, ${pool.longPollConnectionsPerServer} long polls (apart: held Pings never take an OWA click's); over budget, a request waits ${Math.round(pool.queueTimeoutMs / 100) / 10} s, then 503. Up to ${held} held requests need ${held * 2} descriptors (client and upstream) under listen.maxConnections ${config.listen.maxConnections}`)
  }
  const terminated = config.hosts.filter((host): host is TerminatedHost => host.mode !== 'passthrough')
  if (terminated.some((host) => host.vdirs === config.vdirs)) for (const vdir of config.vdirs) lines.push(`  ${vdirLine(config, vdir)}`)
  if (terminated.some((host) => host.vdirs.some((vdir) => vdir.affinity !== 'none'))) {
    const source = { file: 'affinity.secretFile', env: 'affinity.secretEnv', certificate: 'derived from the first host\'s private key', random: 'random at each start' }[config.affinity.secretSource]
    lines.push(`  affinity: up to ${config.affinity.maxEntries} assignments, idle ${Math.round(config.affinity.idleTtlMs / 60_000)} min, balance factor ${config.affinity.balanceFactor}, secret ${source}`)
  }
  if (config.admin !== undefined) {
    const admin = config.admin
    const token = { file: `admin.tokenFile (${admin.tokenPath ?? ''})`, env: 'admin.tokenEnv', 'state-file': `${admin.tokenPath ?? ''}`, generated: `will be generated at first start into ${admin.tokenPath ?? ''}` }[admin.tokenSource]
    lines.push(`  admin: http://${admin.host}:${admin.port}, every request with Authorization: Bearer <token> (token: ${token}); Host must be its address${admin.names.length > 0 ? ` or ${admin.names.join(', ')}` : ''}; changes are same-origin JSON POSTs`)
  }
  lines.push(...preauthLines(config))
  lines.push(...edgeLines(config))
  for (const warning of config.warnings.filter((w) => !shown.has(w))) lines.push(`  warning ${warning.path}: ${warning.message}.${warning.fix ? ` Fix: ${warning.fix}` : ''}`)
  return lines.join('\n')
}
