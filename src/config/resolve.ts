import { BlockList, isIP } from 'node:net'
import type { ConfigIssue } from '../errors/errors.js'
import { closest } from './issues.js'
import type { PoolConfig, RawConfig, SslMode } from './schema.js'
import { resolveHostVdirs, resolveSiteVdirs, type ResolvedVdir } from './vdir-tables.js'

// Checks that need more than one key at a time (pool references, mode against scheme, …) and
// the merge of the config's vdirs over the Exchange profile.

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
  for (const key of ['balance', 'idleTimeoutMs', 'monitorVdir'] as const) {
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

/** strengthOf says how a host authenticates a vdir before Exchange sees the request. */
function strengthOf (host: RawConfig['hosts'][number], vdir: ResolvedVdir): { certificate: boolean, preauth: string } {
  return { certificate: host.clientCertificate !== undefined, preauth: vdir.preauth }
}

/**
 * checkWalkArounds warns when two hosts publish one vdir to one pool with different
 * authentication (a client certificate, or preauthentication, on one name and not the other): a
 * client keeps the weaker name and walks around the stronger one's checks.
 */
function checkWalkArounds (config: RawConfig, hostVdirs: ReadonlyMap<number, readonly ResolvedVdir[]>, warnings: ConfigIssue[]): void {
  const seen = new Map<string, { i: number, certificate: boolean, preauth: string }>()
  for (const [i, vdirs] of hostVdirs) {
    const host = config.hosts[i]!
    for (const vdir of vdirs) {
      const key = `${vdir.path.toLowerCase()} ${vdir.pool}`
      const strength = strengthOf(host, vdir)
      const first = seen.get(key)
      if (first === undefined) {
        seen.set(key, { i, ...strength })
        continue
      }
      const weaker = (a: { certificate: boolean, preauth: string }, b: { certificate: boolean, preauth: string }): string | undefined =>
        a.certificate !== b.certificate ? 'client certificate' : a.preauth !== b.preauth ? `preauthentication (${b.preauth === 'none' ? a.preauth : b.preauth})` : undefined
      const what = weaker(first, strength)
      if (what === undefined) continue
      const [strong, weak] = first.certificate || (first.preauth !== 'none' && strength.preauth === 'none') ? [first.i, i] : [i, first.i]
      warnings.push({
        path: `hosts[${weak}]`,
        message: `publishes ${vdir.path} to pool ${vdir.pool} without the ${what} that hosts[${strong}] (${config.hosts[strong]!.names[0]}) requires for it: a client can use ${config.hosts[weak]!.names[0]} instead and walk around that check`,
        fix: `publish ${vdir.path} on one of them only (hosts[${weak}].publish), or require the same on both`
      })
    }
  }
}

/** Topology is what resolveTopology finds: the site-wide vdir table, each host's, the pools, trusted proxies. */
export interface Topology {
  vdirs: ResolvedVdir[]
  /** Each terminated host's table, by its index in hosts (the site-wide array itself when it has none of its own). */
  hostVdirs: Map<number, ResolvedVdir[]>
  pools: Map<string, ResolvedPoolServers>
  trustProxy: BlockList
}

/** resolveTopology merges the vdirs over the Exchange profile, per host, and checks cross-key rules. */
export function resolveTopology (config: RawConfig, issues: ConfigIssue[], warnings: ConfigIssue[]): Topology {
  const pools = new Map(Object.entries(config.pools).map(([name, pool]) => [name, parseServers(name, pool, issues)]))
  const terminated = config.hosts.flatMap((host, i) => host.mode === 'passthrough' ? [] : [{ host, i }])
  // With passthrough hosts only, nothing is routed by path and vdirs do not apply.
  const found: ConfigIssue[] = []
  const foundWarnings: ConfigIssue[] = []
  const siteIssues: ConfigIssue[] = []
  const vdirs = terminated.length > 0 ? resolveSiteVdirs(config, siteIssues, foundWarnings) : []
  const hostVdirs = new Map(terminated.map(({ host, i }) => [i, resolveHostVdirs(config, host, i, vdirs, found, foundWarnings)]))
  checkHostNames(config, found)
  config.hosts.forEach((host, i) => {
    if (host.mode === 'passthrough') checkPassthroughHost(host, i, pools, found)
    else checkTerminatedHost(host, i, hostVdirs.get(i)!, pools, found)
  })
  checkWalkArounds(config, hostVdirs, foundWarnings)
  const trustProxy = parseTrustProxy(config.trustProxy, found)
  const usesSiteTable = terminated.some(({ i }) => hostVdirs.get(i) === vdirs)
  // What the site-wide table lacks as a whole matters only to hosts that publish it; its keys always.
  found.unshift(...siteIssues.filter((issue) => usesSiteTable || issue.path !== 'vdirs'))
  if (usesSiteTable && vdirs.length === 0 && !found.some((issue) => issue.path.startsWith('vdirs'))) found.push({ path: 'vdirs', message: 'no virtual directory is published', fix: 'enable at least one, e.g. vdirs: { /owa: { enabled: true } }' })
  // A site-wide setting a host's table inherits is reported once, not once per table.
  const once = (list: ConfigIssue[]): ConfigIssue[] => [...new Map(list.map((issue) => [`${issue.path}\0${issue.message}`, issue])).values()]
  issues.push(...once(found))
  warnings.push(...once(foundWarnings))
  return { vdirs, hostVdirs, pools, trustProxy }
}
