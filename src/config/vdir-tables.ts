import type { ConfigIssue } from '../errors/errors.js'
import { exchangeProfile, healthPathFor, LONG_POLL_MINIMUM_MS, type VdirProfile } from './exchange-profile.js'
import { closest } from './issues.js'
import type { AffinityPolicy, PreauthPolicy, RawConfig } from './schema.js'

// The vdir tables: which paths each terminated host publishes, with every default filled in.
// Layers, each over the one before: the Exchange profile, the site-wide `vdirs` block, then a
// host's own `vdirs`, `pool` and `publish`. A host without any of those publishes the site-wide
// table itself (the same objects: one affinity policy per vdir, shared by those hosts).

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

type Override = RawConfig['vdirs'][string]
type HostConfig = RawConfig['hosts'][number]

/** Entry is one vdir of a table being built: its profile, the merged override and where each field came from. */
interface Entry {
  profile: VdirProfile
  override: Override
  /** Configuration path of each overridden field's block (site or host), for messages. */
  from: Partial<Record<keyof Override, string>>
  /** Whether a vdirs block names it (then it is published unless enabled: false). */
  named: boolean
}

/** overridesOf checks a vdirs block's keys and returns its overrides by lowercase path. */
function overridesOf (block: Record<string, Override>, at: string, issues: ConfigIssue[]): Map<string, { key: string, override: Override }> {
  const found = new Map<string, { key: string, override: Override }>()
  for (const [key, override] of Object.entries(block)) {
    const path = `${at}.${key}`
    if (!/^\/[^/?#\s]+$/.test(key)) {
      issues.push({ path, message: 'a virtual directory is one path segment starting with /', fix: 'write it like /owa' })
      continue
    }
    const earlier = found.get(key.toLowerCase())
    if (earlier !== undefined) {
      issues.push({ path, message: `duplicates ${at}.${earlier.key} (paths are case-insensitive)`, fix: 'keep one of them' })
      continue
    }
    found.set(key.toLowerCase(), { key, override })
  }
  return found
}

/** layer lays a vdirs block over the entries, remembering where each field came from. */
function layer (entries: Map<string, Entry>, block: Record<string, Override> | undefined, at: string, issues: ConfigIssue[]): void {
  if (block === undefined) return
  for (const [lower, { key, override }] of overridesOf(block, at, issues)) {
    let entry = entries.get(lower)
    if (entry === undefined) entries.set(lower, entry = { profile: { path: key, enabled: true, timeoutMs: 5 * 60_000, note: 'custom' }, override: {}, from: {}, named: false })
    entry.named = true
    entry.override = { ...entry.override, ...override }
    for (const field of Object.keys(override) as Array<keyof Override>) entry.from[field] = `${at}.${key}`
  }
}

/** poolsForVdirs are the pools that carry HTTP (passthrough-only pools do not), and the one implied when there is one. */
function vdirPools (config: RawConfig): { names: string[], implied: string | undefined } {
  const passthroughPools = new Set(config.hosts.filter((host) => host.mode === 'passthrough').map((host) => host.pool))
  const names = Object.keys(config.pools).filter((name) => !passthroughPools.has(name))
  return { names, implied: names.length === 1 ? names[0] : undefined }
}

interface TableContext {
  /** Where the table is configured, for messages about it as a whole. */
  at: string
  defaultPool: string | undefined
  /** Only these (lowercase) paths are published, when set. */
  publish: Set<string> | undefined
}

function buildTable (config: RawConfig, entries: Map<string, Entry>, context: TableContext, issues: ConfigIssue[], warnings: ConfigIssue[]): ResolvedVdir[] {
  const { names: poolNames } = vdirPools(config)
  const vdirs: ResolvedVdir[] = []
  const withoutPool: string[] = []
  for (const [lower, { profile, override, from, named }] of entries) {
    const enabled = context.publish !== undefined ? context.publish.has(lower) : override.enabled ?? (named || profile.enabled)
    if (!enabled) continue
    const at = (field: keyof Override): string => `${from[field] ?? `${context.at}.${profile.path}`}.${field}`
    const pool = override.pool ?? context.defaultPool
    if (pool === undefined) {
      withoutPool.push(profile.path)
      continue
    }
    if (!(pool in config.pools)) {
      if (override.pool !== undefined) {
        const suggestion = closest(pool, Object.keys(config.pools))
        issues.push({ path: at('pool'), message: `no pool named ${JSON.stringify(pool)} (pools: ${poolNames.join(', ') || 'none'})`, fix: suggestion ? `did you mean "${suggestion}"?` : 'define it under pools' })
      }
      continue
    }
    const timeoutMs = override.timeoutMs ?? profile.timeoutMs
    if (profile.longPoll && timeoutMs < LONG_POLL_MINIMUM_MS) {
      warnings.push({
        path: at('timeoutMs'),
        message: `${timeoutMs} ms is shorter than Exchange holds requests on ${profile.path} (${profile.note}); Microsoft recommends at least 15–30 minutes, and long polls will end in 504`,
        fix: `raise it to at least ${LONG_POLL_MINIMUM_MS} (the profile default is ${profile.timeoutMs})`
      })
    }
    const affinity = override.affinity ?? profile.affinity ?? 'none'
    if (override.affinityCookie !== undefined && affinity !== 'cookie') {
      issues.push({ path: at('affinityCookie'), message: `applies to affinity: cookie, but this vdir's affinity is ${affinity}`, fix: 'set affinity: cookie, or remove affinityCookie' })
    }
    if (affinity === 'source-ip') {
      warnings.push({
        path: at('affinity'),
        message: 'source-ip affinity puts every client behind one address (a mobile carrier\'s NAT, a company proxy) on one server',
        fix: profile.path === '/Microsoft-Server-ActiveSync' ? 'use affinity: authorization (the profile default), which keys on the user' : 'use affinity: none or cookie unless the clients really have addresses of their own'
      })
    }
    const preauth = config.preauth === undefined ? 'none' : override.preauth ?? profile.preauth ?? 'none'
    if (profile.path === '/rpc' && override.preauth !== undefined && override.preauth !== 'none') {
      issues.push({ path: at('preauth'), message: 'Outlook Anywhere\'s RPC channels are tunnelled from their request line and cannot be preauthenticated (nor can Outlook answer a form)', fix: 'set preauth: none; Exchange authenticates /rpc itself' })
    } else if (config.preauth === undefined && override.preauth !== undefined && override.preauth !== 'none') {
      issues.push({ path: at('preauth'), message: `${override.preauth} preauthentication needs a credential provider`, fix: 'add preauth: { ldap: { urls: [...], bindName: "{user}@contoso.com" } } or preauth: { usersFile: users.txt }' })
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
      ? { path: context.at, message: `${which}: every pool is used by passthrough hosts`, fix: 'define a pool of Client Access servers for the terminated hosts\' vdirs' }
      : {
          path: context.at,
          message: `${which}, and with more than one pool (${poolNames.join(', ')}) none is implied`,
          fix: `name the pool of each published vdir, e.g. ${context.at}: { ${withoutPool[0]}: { pool: ${poolNames[0]} } }, or set enabled: false`
        })
  }
  return vdirs
}

function profileEntries (): Map<string, Entry> {
  return new Map(exchangeProfile.map((profile) => [profile.path.toLowerCase(), { profile, override: {}, from: {}, named: false }]))
}

/** resolveSiteVdirs is the site-wide table: the Exchange profile with the `vdirs` block over it. */
export function resolveSiteVdirs (config: RawConfig, issues: ConfigIssue[], warnings: ConfigIssue[]): ResolvedVdir[] {
  const entries = profileEntries()
  layer(entries, config.vdirs, 'vdirs', issues)
  return buildTable(config, entries, { at: 'vdirs', defaultPool: vdirPools(config).implied, publish: undefined }, issues, warnings)
}

/**
 * hasOwnTable says whether a terminated host publishes a table of its own (vdirs, publish or a
 * pool of its own); otherwise it publishes the site-wide one.
 */
export function hasOwnTable (host: HostConfig): boolean {
  return host.vdirs !== undefined || host.publish !== undefined || host.pool !== undefined
}

/** resolveHostVdirs is a terminated host's table: `site` itself, or the site's layers with the host's over them. */
export function resolveHostVdirs (config: RawConfig, host: HostConfig, i: number, site: ResolvedVdir[], issues: ConfigIssue[], warnings: ConfigIssue[]): ResolvedVdir[] {
  if (!hasOwnTable(host)) return site
  const at = `hosts[${i}]`
  const entries = profileEntries()
  // The site's keys were checked with the site table: only the host's are reported here.
  layer(entries, config.vdirs, 'vdirs', [])
  layer(entries, host.vdirs, `${at}.vdirs`, issues)
  let publish: Set<string> | undefined
  if (host.publish !== undefined) {
    publish = new Set()
    host.publish.forEach((path, j) => {
      const lower = path.toLowerCase()
      if (entries.has(lower)) publish!.add(lower)
      else {
        const suggestion = closest(path, [...entries.values()].map((entry) => entry.profile.path))
        issues.push({ path: `${at}.publish[${j}]`, message: `${JSON.stringify(path)} is neither an Exchange virtual directory nor one of this host's or the site's vdirs`, fix: suggestion ? `did you mean "${suggestion}"?` : 'define it under this host\'s vdirs' })
      }
    })
  }
  if (host.pool !== undefined && !(host.pool in config.pools)) {
    const suggestion = closest(host.pool, Object.keys(config.pools))
    issues.push({ path: `${at}.pool`, message: `no pool named ${JSON.stringify(host.pool)}`, fix: suggestion ? `did you mean "${suggestion}"?` : 'define it under pools' })
    return []
  }
  const vdirs = buildTable(config, entries, { at: `${at}.vdirs`, defaultPool: host.pool ?? vdirPools(config).implied, publish }, issues, warnings)
  if (vdirs.length === 0 && !issues.some((issue) => issue.path.startsWith(at))) issues.push({ path: at, message: 'publishes no virtual directory', fix: 'list what it publishes, e.g. publish: [/autodiscover]' })
  return vdirs
}
