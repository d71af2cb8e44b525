import { describe, expect, it } from 'vitest'
import { buildConfig } from '../src/config/load.js'
import { ConfigError, type ConfigIssue } from '../src/errors/errors.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// The state block (shared state on Redis): what it resolves to, and each bad form refused with
// its key path and the fix. More in test/golden/config/state-redis*.yaml.

const site = {
  hosts: [{ names: ['mail.contoso.test'], mode: 'passthrough', pool: 'cas' }],
  pools: { cas: { servers: ['https://ex1.contoso.local'] } }
}

function build (redis: unknown, baseDir = tempDir()): ReturnType<typeof buildConfig> {
  return buildConfig({ ...site, state: { redis } }, { source: 'casgate.yaml', baseDir, writeState: false })
}

function issuesOf (redis: unknown, baseDir?: string): ConfigIssue[] {
  try {
    build(redis, baseDir)
  } catch (err) {
    if (err instanceof ConfigError) return err.issues
    throw err
  }
  throw new Error('expected a ConfigError')
}

describe('state.redis resolves', () => {
  it('is absent without the block: one instance, state in memory', () => {
    expect(buildConfig(site, { source: 'casgate.yaml', baseDir: tempDir(), writeState: false }).state).toBeUndefined()
    expect(buildConfig({ ...site, state: {} }, { source: 'casgate.yaml', baseDir: tempDir(), writeState: false }).state).toBeUndefined()
  })

  it('a URL with a user, TLS (rediss://), a database, and the password from a file', () => {
    const dir = tempDir()
    writeFiles(dir, { 'redis-password': 'hunter2-but-longer\n' })
    const { state } = build({ url: 'rediss://casgate@redis.contoso.local:6380/2', passwordFile: 'redis-password' }, dir)
    expect(state?.redis).toEqual({
      target: { kind: 'server', host: 'redis.contoso.local', port: 6380, db: 2 },
      where: 'rediss://redis.contoso.local:6380/2',
      username: 'casgate',
      password: 'hunter2-but-longer',
      tls: { ca: undefined, serverName: undefined, cert: undefined, key: undefined },
      keyPrefix: 'casgate:',
      historyMs: 8 * 60 * 60_000,
      timeoutMs: 1_000
    })
  })

  it('Sentinels with the master\'s name, the password from the environment', () => {
    process.env.CASGATE_TEST_REDIS_PASSWORD = 'from-the-environment'
    try {
      const { state } = build({ sentinels: [{ host: 's1.contoso.local' }, { host: 's2.contoso.local', port: 26380 }], name: 'mymaster', passwordEnv: 'CASGATE_TEST_REDIS_PASSWORD', tls: true, keyPrefix: 'site1:' })
      expect(state?.redis).toMatchObject({
        target: { kind: 'sentinels', sentinels: [{ host: 's1.contoso.local', port: 26379 }, { host: 's2.contoso.local', port: 26380 }], name: 'mymaster' },
        where: 'sentinels s1.contoso.local:26379, s2.contoso.local:26380 (master mymaster)',
        password: 'from-the-environment',
        keyPrefix: 'site1:'
      })
      expect(state?.redis.tls).toBeDefined()
    } finally {
      delete process.env.CASGATE_TEST_REDIS_PASSWORD
    }
  })
})

describe('state.redis refuses, naming the key and the fix', () => {
  const cases: Array<[string, unknown, ConfigIssue]> = [
    ['url and sentinels', { url: 'redis://r1', sentinels: [{ host: 's1' }], name: 'm' }, { path: 'state.redis.sentinels', message: 'url and sentinels are both set', fix: 'keep one: url for one server, sentinels and name for a master that Sentinels fail over' }],
    ['no server', { keyPrefix: 'x:' }, { path: 'state.redis', message: 'names no server', fix: 'add url: redis://redis.contoso.local:6379, or sentinels: [{ host, port }] and name' }],
    ['sentinels without a name', { sentinels: [{ host: 's1' }] }, { path: 'state.redis.name', message: 'is required with sentinels', fix: 'add the master\'s name as the Sentinels know it (sentinel monitor <name> …), e.g. name: mymaster' }],
    ['another scheme', { url: 'http://redis.contoso.local' }, { path: 'state.redis.url', message: 'scheme http: is not supported', fix: 'use redis:// (plain) or rediss:// (TLS)' }],
    ['a path', { url: 'redis://redis.contoso.local/owa' }, { path: 'state.redis.url', message: 'a Redis URL names a server and, optionally, a database number', fix: 'write redis://host[:port][/db], e.g. redis://redis.contoso.local:6379/0' }],
    ['rediss:// with tls off', { url: 'rediss://redis.contoso.local', tls: false }, { path: 'state.redis.tls', message: 'is off, but the url says rediss:// (TLS)', fix: 'remove tls: false, or write redis://' }],
    ['a client certificate without its key', { url: 'rediss://redis.contoso.local', tls: { certFile: 'client.crt' } }, { path: 'state.redis.tls.keyFile', message: 'a client certificate needs both certFile and keyFile', fix: 'set both, or neither' }],
    ['two password sources', { url: 'redis://r1', passwordFile: 'p', passwordEnv: 'P' }, { path: 'state.redis.passwordEnv', message: 'passwordFile and passwordEnv are both set', fix: 'keep one of them' }],
    ['a user twice', { url: 'redis://casgate@r1', username: 'other' }, { path: 'state.redis.username', message: 'the url names a user too', fix: 'keep one of them' }]
  ]
  for (const [name, redis, issue] of cases) {
    it(name, () => {
      expect(issuesOf(redis)).toEqual([issue])
    })
  }

  it('a password in the URL, without repeating it', () => {
    const issues = issuesOf({ url: 'redis://:s3cret-in-url@redis.contoso.local:6379' })
    expect(issues).toEqual([{ path: 'state.redis.url', message: 'holds a password, which would then sit in the configuration file', fix: 'remove it from the URL and put it in a file readable by casgate only, named by passwordFile (or in passwordEnv)' }])
    expect(JSON.stringify(issues)).not.toContain('s3cret')
  })

  it('an empty password file', () => {
    const dir = tempDir()
    writeFiles(dir, { empty: '\n' })
    expect(issuesOf({ url: 'redis://r1', passwordFile: 'empty' }, dir)).toEqual([{ path: 'state.redis.passwordFile', message: 'the password is empty', fix: 'write the password (requirepass, or the ACL user\'s), or remove the key' }])
  })
})
