import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import { CertificateLoadError, readFileOrEnv } from '../certificates/load-certificate.js'
import type { ConfigIssue } from '../errors/errors.js'
import type { RedisConfig } from './schema.js'

// The state block: where instances of one site share what must agree (issue 16). Only Redis
// (Valkey) carries it today. The password comes from a file or the environment, never from the
// YAML or the URL: configuration files end up in backups, tickets and chat.

/** RedisTarget is one server, or the Sentinels that name the current master. */
export type RedisTarget =
  | { kind: 'server', host: string, port: number, db: number }
  | { kind: 'sentinels', sentinels: Array<{ host: string, port: number }>, name: string }

/** RedisTls is the TLS material to reach the server, loaded (PEM text). */
export interface RedisTls {
  ca: string | undefined
  serverName: string | undefined
  cert: string | undefined
  key: string | undefined
}

/** RedisSettings is state.redis resolved: the target parsed, the password and TLS files read. */
export interface RedisSettings {
  target: RedisTarget
  /** Where, for the log and /status: the URL without credentials, or the Sentinels and master name. */
  where: string
  username: string | undefined
  /** From passwordFile/passwordEnv; never logged. */
  password: string | undefined
  tls: RedisTls | undefined
  keyPrefix: string
  historyMs: number
  timeoutMs: number
}

/** StateSettings is the state block, resolved. */
export interface StateSettings {
  redis: RedisSettings
}

const DEFAULT_REDIS_PORT = 6379

function parseUrl (text: string, at: string, issues: ConfigIssue[]): { target: Extract<RedisTarget, { kind: 'server' }>, username: string | undefined, tls: boolean } | undefined {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    issues.push({ path: `${at}.url`, message: `${JSON.stringify(text)} is not a URL`, fix: 'write it as redis://redis.contoso.local:6379 (or rediss:// for TLS)' })
    return undefined
  }
  if (url.password !== '') {
    // Not echoed: the message must not repeat the secret it refuses. The rest is still checked.
    issues.push({ path: `${at}.url`, message: 'holds a password, which would then sit in the configuration file', fix: 'remove it from the URL and put it in a file readable by casgate only, named by passwordFile (or in passwordEnv)' })
  }
  const before = issues.length
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    issues.push({ path: `${at}.url`, message: `scheme ${url.protocol} is not supported`, fix: 'use redis:// (plain) or rediss:// (TLS)' })
  }
  if (!/^\/?(\d+)?$/.test(url.pathname) || url.search !== '' || url.hash !== '') {
    issues.push({ path: `${at}.url`, message: 'a Redis URL names a server and, optionally, a database number', fix: 'write redis://host[:port][/db], e.g. redis://redis.contoso.local:6379/0' })
  }
  if (url.hostname === '') issues.push({ path: `${at}.url`, message: 'names no host', fix: 'write redis://redis.contoso.local:6379' })
  if (issues.length > before) return undefined
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  return {
    target: { kind: 'server', host, port: url.port === '' ? DEFAULT_REDIS_PORT : Number(url.port), db },
    username: url.username === '' ? undefined : decodeURIComponent(url.username),
    tls: url.protocol === 'rediss:'
  }
}

function readPem (file: string, at: string, baseDir: string, issues: ConfigIssue[]): string | undefined {
  try {
    return readFileSync(resolve(baseDir, file), 'utf8')
  } catch (err) {
    issues.push({ path: at, message: `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: 'check the path; relative paths start at the configuration file\'s directory' })
    return undefined
  }
}

function resolveTls (config: RedisConfig['tls'], at: string, baseDir: string, issues: ConfigIssue[]): RedisTls | undefined {
  if (config === undefined || config === false) return undefined
  if (config === true) return { ca: undefined, serverName: undefined, cert: undefined, key: undefined }
  if ((config.certFile === undefined) !== (config.keyFile === undefined)) {
    issues.push({ path: `${at}.${config.certFile === undefined ? 'certFile' : 'keyFile'}`, message: 'a client certificate needs both certFile and keyFile', fix: 'set both, or neither' })
    return undefined
  }
  const tls: RedisTls = {
    ca: config.caFile === undefined ? undefined : readPem(config.caFile, `${at}.caFile`, baseDir, issues),
    serverName: config.serverName,
    cert: config.certFile === undefined ? undefined : readPem(config.certFile, `${at}.certFile`, baseDir, issues),
    key: config.keyFile === undefined ? undefined : readPem(config.keyFile, `${at}.keyFile`, baseDir, issues)
  }
  try {
    createSecureContext({ ...(tls.ca !== undefined ? { ca: tls.ca } : {}), ...(tls.cert !== undefined && tls.key !== undefined ? { cert: tls.cert, key: tls.key } : {}) })
  } catch (err) {
    issues.push({ path: at, message: `OpenSSL refuses the TLS files: ${(err as Error).message}`, fix: 'caFile and certFile are PEM certificates, keyFile the unencrypted PEM key of certFile' })
    return undefined
  }
  return tls
}

/** resolveRedis checks state.redis and loads its password and TLS files. */
function resolveRedis (config: RedisConfig, baseDir: string, issues: ConfigIssue[]): RedisSettings | undefined {
  const at = 'state.redis'
  const before = issues.length
  let target: RedisTarget | undefined
  let username = config.username
  let where = ''
  let tlsFromUrl: boolean | undefined
  if (config.url !== undefined && config.sentinels !== undefined) {
    issues.push({ path: `${at}.sentinels`, message: 'url and sentinels are both set', fix: 'keep one: url for one server, sentinels and name for a master that Sentinels fail over' })
  } else if (config.url !== undefined) {
    if (config.name !== undefined) issues.push({ path: `${at}.name`, message: 'applies to sentinels only', fix: 'remove it' })
    const parsed = parseUrl(config.url, at, issues)
    if (parsed !== undefined) {
      target = parsed.target
      tlsFromUrl = parsed.tls
      if (parsed.username !== undefined && username !== undefined) issues.push({ path: `${at}.username`, message: 'the url names a user too', fix: 'keep one of them' })
      username ??= parsed.username
      where = `${parsed.tls ? 'rediss' : 'redis'}://${parsed.target.host.includes(':') ? `[${parsed.target.host}]` : parsed.target.host}:${parsed.target.port}/${parsed.target.db}`
    }
  } else if (config.sentinels !== undefined) {
    if (config.name === undefined) {
      issues.push({ path: `${at}.name`, message: 'is required with sentinels', fix: 'add the master\'s name as the Sentinels know it (sentinel monitor <name> …), e.g. name: mymaster' })
    } else {
      target = { kind: 'sentinels', sentinels: config.sentinels, name: config.name }
      where = `sentinels ${config.sentinels.map((s) => `${s.host}:${s.port}`).join(', ')} (master ${config.name})`
    }
  } else {
    issues.push({ path: at, message: 'names no server', fix: 'add url: redis://redis.contoso.local:6379, or sentinels: [{ host, port }] and name' })
  }
  if (tlsFromUrl !== undefined && config.tls !== undefined && (config.tls !== false) !== tlsFromUrl) {
    issues.push({ path: `${at}.tls`, message: tlsFromUrl ? 'is off, but the url says rediss:// (TLS)' : 'is set, but the url says redis:// (plain)', fix: tlsFromUrl ? 'remove tls: false, or write redis://' : 'write the url as rediss://…' })
  }
  const tls = resolveTls(tlsFromUrl === true && config.tls === undefined ? true : config.tls, `${at}.tls`, baseDir, issues)
  let password: string | undefined
  if (config.passwordFile !== undefined && config.passwordEnv !== undefined) {
    issues.push({ path: `${at}.passwordEnv`, message: 'passwordFile and passwordEnv are both set', fix: 'keep one of them' })
  } else {
    try {
      password = readFileOrEnv({ file: config.passwordFile, env: config.passwordEnv }, { file: 'passwordFile', env: 'passwordEnv' }, baseDir)
    } catch (err) {
      if (!(err instanceof CertificateLoadError)) throw err
      issues.push({ path: `${at}.${err.key}`, message: err.message.replace(/^cannot load certificate: /, ''), fix: err.fix })
    }
    if (password === '') issues.push({ path: `${at}.${config.passwordFile !== undefined ? 'passwordFile' : 'passwordEnv'}`, message: 'the password is empty', fix: 'write the password (requirepass, or the ACL user\'s), or remove the key' })
  }
  if (issues.length > before || target === undefined) return undefined
  return { target, where, username, password, tls, keyPrefix: config.keyPrefix, historyMs: config.historyMs, timeoutMs: config.timeoutMs }
}

/** resolveState resolves the state block; undefined when no shared state is configured. */
export function resolveState (config: { redis?: RedisConfig | undefined } | undefined, baseDir: string, issues: ConfigIssue[]): StateSettings | undefined {
  if (config?.redis === undefined) return undefined
  const redis = resolveRedis(config.redis, baseDir, issues)
  return redis && { redis }
}
