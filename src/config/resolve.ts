import { BlockList, isIP } from 'node:net'
import type { ConfigIssue } from '../errors/errors.js'
import { closest } from './issues.js'
import { exchangeProfile, healthPathFor, LONG_POLL_MINIMUM_MS } from './exchange-profile.js'
import type { AffinityPolicy, PoolConfig, PreauthPolicy, RawConfig, SslMode } from './schema.js'

// Checks that need more than one key at a time (pool references, mode against scheme, …) and
// the merge of the config's vdirs over the Exchange profile.

/** ResolvedVdir is one published virtual directory with every default filled in. */
export interface ResolvedVdir {
  /** Canonical spelling, e.g. /Microsoft-Server-ActiveSync. */
  path: string
  pool: string
  timeoutMs: number
  healthPath: string
  affinity: AffinityPolicy
  /** affinity cookie: the backend cookie to follow; undefined means casgate inserts its own. */
  affinityCookie: string | undefined
  /** none unless the configuration has a preauth block. */
  preauth: PreauthPolicy
  /** Append script-src-attr 'none' to the CSP of HTML responses (CVE-2026-42897 mitigation). */
  cspScriptSrcAttrNone: boolean
  /** Exchange holds its requests open: they take the pool's long-poll budget. */
  longPoll: boolean
}

/** ResolvedPoolServers is a pool's server list, parsed. */
export interface ResolvedPoolServers {
  name: string
  servers: URL[]
  scheme: 'http:' | 'https:'
}

const schemeOfMode: Record<Exclude<SslMode, 'passthrough'>, 'http:' | 'https:'> = { offload: 'http:', reencrypt: 'https:' }

function parseServers (name: string, pool: PoolConfig, issues: ConfigIssue[]): ResolvedPoolServers {
  const servers: URL[] = []
  pool.servers.forEach((text, i) => {
    const path = `pools.${name}.servers[${i}]`
    let url: URL
    try {
      url = new URL(text)
    } catch {
      issues.push({ path, message: `${JSON.stringify(text)} is not a URL`, fix: 'write it as https://ex1.contoso.local or http://ex1.contoso.local:80' })
      return
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      issues.push({ path, message: `scheme ${url.protocol} is not supported`, fix: 'use http:// (offload) or https:// (reencrypt)' })
    } else if (url.username || url.password) {
      issues.push({ path, message: 'credentials in a server URL are not allowed', fix: 'remove the user:password@ part' })
    } else if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
      issues.push({ path, message: 'a server URL names a server, not a path', fix: `write ${url.origin}` })
    } else {
      servers.push(url)
    }
  })
  const schemes = new Set(servers.map((url) => url.protocol))
  if (schemes.size > 1) {
    issues.push({ path: `pools.${name}.servers`, message: 'mixes http:// and https:// servers', fix: 'put plain and TLS backends in separate pools' })
  }
  const scheme = servers[0]?.protocol === 'http:' ? 'http:' : 'https:'
  if (scheme === 'http:') {
    for (const key of ['ca', 'clientCertificate', 'serverName'] as const) {
      if (pool[key] !== undefined) issues.push({ path: `pools.${name}.${key}`, message: 'applies to https:// servers only', fix: 'remove it, or use https:// servers' })
    }
  }
  return { name, servers, scheme }
}

function resolveVdirs (config: RawConfig, issues: ConfigIssue[], warnings: ConfigIssue[]): ResolvedVdir[] {
  // Pools that only passthrough hosts use carry no HTTP: they are not candidates for vdirs.
  const passthroughPools = new Set(config.hosts.filter((host) => host.mode === 'passthrough').map((host) => host.pool))
  const poolNames = Object.keys(config.pools).filter((name) => !passthroughPools.has(name))
  const defaultPool = poolNames.length === 1 ? poolNames[0] : undefined
  const seen = new Map<string, string>()
  const entries = new Map(exchangeProfile.map((profile) => [profile.path.toLowerCase(), { profile, override: {} as RawConfig['vdirs'][string], key: '' }]))

  for (const [key, override] of Object.entries(config.vdirs)) {
    const path = `vdirs.${key}`
    if (!/^\/[^/?#\s]+$/.test(key)) {
      issues.push({ path, message: 'a virtual directory is one path segment starting with /', fix: 'write it like /owa' })
      continue
    }
    const lower = key.toLowerCase()
    const earlier = seen.get(lower)
    if (earlier !== undefined) {
      issues.push({ path, message: `duplicates vdirs.${earlier} (paths are case-insensitive)`, fix: 'keep one of them' })
      continue
    }
    seen.set(lower, key)
    const entry = entries.get(lower)
    if (entry) {
      entry.override = override
      entry.key = key
    } else {
      entries.set(lower, { profile: { path: key, enabled: true, timeoutMs: 5 * 60_000, note: 'custom' }, override, key })
    }
  }

  const vdirs: ResolvedVdir[] = []
  const withoutPool: string[] = []
  for (const { profile, override, key } of entries.values()) {
    const enabled = override.enabled ?? (key !== '' || profile.enabled)
    if (!enabled) continue
    const pool = override.pool ?? defaultPool
    if (pool === undefined) {
      withoutPool.push(key || profile.path)
      continue
    }
    if (!(pool in config.pools)) {
      const suggestion = closest(pool, Object.keys(config.pools))
      issues.push({ path: `vdirs.${key || profile.path}.pool`, message: `no pool named ${JSON.stringify(pool)} (pools: ${poolNames.join(', ') || 'none'})`, fix: suggestion ? `did you mean "${suggestion}"?` : 'define it under pools' })
      continue
    }
    const timeoutMs = override.timeoutMs ?? profile.timeoutMs
    if (profile.longPoll && timeoutMs < LONG_POLL_MINIMUM_MS) {
      warnings.push({
        path: `vdirs.${key || profile.path}.timeoutMs`,
        message: `${timeoutMs} ms is shorter than Exchange holds requests on ${profile.path} (${profile.note}); Microsoft recommends at least 15–30 minutes, and long polls will end in 504`,
        fix: `raise it to at least ${LONG_POLL_MINIMUM_MS} (the profile default is ${profile.timeoutMs})`
      })
    }
    const affinity = override.affinity ?? profile.affinity ?? 'none'
    if (override.affinityCookie !== undefined && affinity !== 'cookie') {
      issues.push({ path: `vdirs.${key || profile.path}.affinityCookie`, message: `applies to affinity: cookie, but this vdir's affinity is ${affinity}`, fix: 'set affinity: cookie, or remove affinityCookie' })
    }
    if (affinity === 'source-ip') {
      warnings.push({
        path: `vdirs.${key || profile.path}.affinity`,
        message: 'source-ip affinity puts every client behind one address (a mobile carrier\'s NAT, a company proxy) on one server',
        fix: profile.path === '/Microsoft-Server-ActiveSync' ? 'use affinity: authorization (the profile default), which keys on the user' : 'use affinity: none or cookie unless the clients really have addresses of their own'
      })
    }
    const preauth = config.preauth === undefined ? 'none' : override.preauth ?? profile.preauth ?? 'none'
    if (profile.path === '/rpc' && override.preauth !== undefined && override.preauth !== 'none') {
      issues.push({ path: `vdirs.${key || profile.path}.preauth`, message: 'Outlook Anywhere\'s RPC channels are tunnelled from their request line and cannot be preauthenticated (nor can Outlook answer a form)', fix: 'set preauth: none; Exchange authenticates /rpc itself' })
    } else if (config.preauth === undefined && override.preauth !== undefined && override.preauth !== 'none') {
      issues.push({ path: `vdirs.${key || profile.path}.preauth`, message: `${override.preauth} preauthentication needs a credential provider`, fix: 'add preauth: { ldap: { urls: [...], bindName: "{user}@contoso.com" } } or preauth: { usersFile: users.txt }' })
    }
    vdirs.push({
      path: profile.path,
      pool,
      timeoutMs,
      healthPath: override.healthPath ?? healthPathFor(profile.path),
      affinity,
      affinityCookie: override.affinityCookie,
      preauth,
      cspScriptSrcAttrNone: override.cspScriptSrcAttrNone ?? false,
      longPoll: override.longPoll ?? profile.longPoll ?? false
    })
  }
  if (withoutPool.length > 0) {
    const which = `${withoutPool.join(', ')} ${withoutPool.length === 1 ? 'has' : 'have'} no pool`
    issues.push(poolNames.length === 0
      ? { path: 'vdirs', message: `${which}: every pool is used by passthrough hosts`, fix: 'define a pool of Client Access servers for the terminated hosts\' vdirs' }
      : {
          path: 'vdirs',
          message: `${which}, and with more than one pool (${poolNames.join(', ')}) none is implied`,
          fix: `name the pool of each published vdir, e.g. vdirs: { ${withoutPool[0]}: { pool: ${poolNames[0]} } }, or set enabled: false`
        })
  }
  return vdirs
}

function checkHostNames (config: RawConfig, issues: ConfigIssue[]): void {
  const owner = new Map<string, string>()
  config.hosts.forEach((host, i) => {
    host.names.forEach((name, j) => {
      const lower = name.toLowerCase()
      const path = `hosts[${i}].names[${j}]`
      if (!/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(lower) && isIP(lower) === 0) {
        issues.push({ path, message: `${JSON.stringify(name)} is not a host name`, fix: 'write a DNS name such as mail.contoso.com or *.contoso.com' })
      }
      const first = owner.get(lower)
      if (first !== undefined) issues.push({ path, message: `${name} is already served by ${first}`, fix: 'list each name under one host only' })
      else owner.set(lower, path)
    })
  })
  const defaultHost = config.listen.defaultHost
  if (defaultHost !== undefined && !owner.has(defaultHost.toLowerCase())) {
    issues.push({ path: 'listen.defaultHost', message: `${JSON.stringify(defaultHost)} is not a name of any host`, fix: `use one of ${[...owner.keys()].filter((n) => !n.startsWith('*')).join(', ')}` })
  }
}

function checkPassthroughHost (host: RawConfig['hosts'][number], i: number, pools: ReadonlyMap<string, ResolvedPoolServers>, issues: ConfigIssue[]): void {
  const at = `hosts[${i}]`
  if (host.certificate !== undefined) {
    issues.push({ path: `${at}.certificate`, message: 'a passthrough host does not terminate TLS: the backends present their own certificate', fix: 'remove certificate, or use mode: reencrypt to terminate here' })
  }
  if (host.clientCertificate !== undefined) {
    issues.push({ path: `${at}.clientCertificate`, message: 'a passthrough host does not terminate TLS: client certificates already reach Exchange, which checks them', fix: 'remove clientCertificate, or use mode: reencrypt to check them here' })
  }
  if (host.pool === undefined) {
    issues.push({ path: `${at}.pool`, message: 'is required for mode passthrough', fix: `name the pool that receives the connections (pools: ${[...pools.keys()].join(', ')})` })
    return
  }
  const pool = pools.get(host.pool)
  if (!pool) {
    const suggestion = closest(host.pool, [...pools.keys()])
    issues.push({ path: `${at}.pool`, message: `no pool named ${JSON.stringify(host.pool)}`, fix: suggestion ? `did you mean "${suggestion}"?` : 'define it under pools' })
  } else if (pool.servers.length > 0 && pool.scheme !== 'https:') {
    issues.push({ path: `${at}.pool`, message: `passthrough pipes TLS to the backends, but pool ${host.pool} lists http:// servers`, fix: 'list the backends as https://server[:port]' })
  }
}

function checkTerminatedHost (host: RawConfig['hosts'][number], i: number, vdirs: readonly ResolvedVdir[], pools: ReadonlyMap<string, ResolvedPoolServers>, issues: ConfigIssue[]): void {
  const at = `hosts[${i}]`
  if (host.certificate === undefined) {
    issues.push({ path: `${at}.certificate`, message: `is required for mode ${host.mode}`, fix: 'add certificate: { pfx: …, passphraseFile: … } or { cert: …, key: … }' })
  }
  if (host.mode === 'offload' && host.extendedProtection) {
    issues.push({
      path: `${at}.mode`,
      message: 'SSL offload cannot work with Extended Protection: the client binds its logon to the TLS channel it sees, which ends at casgate, and Exchange rejects the binding (OWA may work while Outlook and phones fail)',
      fix: 'use mode: reencrypt with the certificate the Exchange servers serve, or, only if Extended Protection is off on the Exchange servers, set extendedProtection: false on this host'
    })
  }
  for (const key of ['pool', 'balance', 'idleTimeoutMs', 'monitorVdir'] as const) {
    if (host[key] !== undefined) issues.push({ path: `${at}.${key}`, message: 'applies to mode passthrough only', fix: `remove it; ${host.mode} hosts route by vdirs` })
  }
  const wanted = schemeOfMode[host.mode as 'offload' | 'reencrypt']
  for (const name of new Set(vdirs.map((vdir) => vdir.pool))) {
    const pool = pools.get(name)
    if (pool && pool.servers.length > 0 && pool.scheme !== wanted) {
      issues.push({
        path: `${at}.mode`,
        message: `mode ${host.mode} talks ${wanted === 'http:' ? 'plain HTTP' : 'HTTPS'} to the backends, but pool ${name} lists ${pool.scheme}// servers`,
        fix: host.mode === 'offload' ? 'use http:// server URLs for offload, or set mode: reencrypt' : 'use https:// server URLs for reencrypt, or set mode: offload'
      })
    }
  }
}

/** parseTrustProxy turns trustProxy into a BlockList, reporting entries that are not addresses. */
export function parseTrustProxy (entries: readonly string[], issues: ConfigIssue[]): BlockList {
  const list = new BlockList()
  entries.forEach((entry, i) => {
    const [address = '', bits] = entry.split('/')
    const family = isIP(address)
    const prefix = bits === undefined ? undefined : Number(bits)
    if (family === 0 || (prefix !== undefined && (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)))) {
      issues.push({ path: `trustProxy[${i}]`, message: `${JSON.stringify(entry)} is not an address or CIDR range`, fix: 'write 10.0.0.5 or 10.0.0.0/24' })
      return
    }
    list.addSubnet(address, prefix ?? (family === 4 ? 32 : 128), family === 4 ? 'ipv4' : 'ipv6')
  })
  return list
}

/** resolveTopology merges the vdirs over the Exchange profile and checks cross-key rules. */
export function resolveTopology (config: RawConfig, issues: ConfigIssue[], warnings: ConfigIssue[]): { vdirs: ResolvedVdir[], pools: Map<string, ResolvedPoolServers>, trustProxy: BlockList } {
  const pools = new Map(Object.entries(config.pools).map(([name, pool]) => [name, parseServers(name, pool, issues)]))
  const terminates = config.hosts.some((host) => host.mode !== 'passthrough')
  // With passthrough hosts only, nothing is routed by path and vdirs do not apply.
  const vdirs = terminates ? resolveVdirs(config, issues, warnings) : []
  checkHostNames(config, issues)
  config.hosts.forEach((host, i) => {
    if (host.mode === 'passthrough') checkPassthroughHost(host, i, pools, issues)
    else checkTerminatedHost(host, i, vdirs, pools, issues)
  })
  const trustProxy = parseTrustProxy(config.trustProxy, issues)
  if (terminates && vdirs.length === 0 && !issues.some((issue) => issue.path.startsWith('vdirs'))) issues.push({ path: 'vdirs', message: 'no virtual directory is published', fix: 'enable at least one, e.g. vdirs: { /owa: { enabled: true } }' })
  return { vdirs, pools, trustProxy }
}
