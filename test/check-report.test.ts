import { generateKeyPairSync } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { checkReport } from '../src/check-report.js'
import { hashPassword } from '../src/auth/password-hash.js'
import { labConfig } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// `casgate check` shows what the edge enforces before traffic flows: the rule pack and the
// rules switched off, Bearer validation, the lockout, where the session secret comes from, limits.

describe('casgate check shows the edge', () => {
  it('lists the rule pack, a rule switched off, lockout, Bearer, the session secret and the limits; writes no state', async () => {
    const dir = tempDir()
    const files = writeFiles(dir, {
      'users.txt': `jdoe:${await hashPassword('Correct-Horse-1', 14)}\n`,
      'jwks.json': JSON.stringify({ keys: [{ ...generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'RS256' }] })
    })
    const config = await labConfig({
      mode: 'offload',
      servers: ['http://127.0.0.1:1'],
      vdirs: { '/owa': { cspScriptSrcAttrNone: true } },
      extra: {
        rules: { disable: ['powershell-path-outside-powershell-vdir'] },
        hsts: { maxAgeSeconds: 600 },
        stateDir: dir,
        preauth: { usersFile: files['users.txt'], bearer: { issuer: 'https://sts.windows.net/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/', audience: 'https://mail.contoso.test', jwks: { file: files['jwks.json'] } } }
      }
    }, { writeState: false })
    const report = checkReport(config)
    expect(report).toMatch(/rules: pack exchange-\d{4}\.\d+, \d+ active: proxylogon-anonresource-backend, /)
    expect(report).toContain('warning rules.disable: powershell-path-outside-powershell-vdir')
    expect(report).toContain('lockout: 5 failures of a user lock it for unfamiliar sources, 20 from an address lock that address; sources that signed in within 30 days keep working (smart lockout)')
    expect(report).toContain(`session secret: will be generated at first start into ${dir}/session-secret`)
    expect(report).toContain('bearer: validated here (issuer https://sts.windows.net/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/, audience https://mail.contoso.test, RS256')
    expect(report).toContain("vdir /owa -> pool cas, timeout 300 s, affinity cookie CasgateAffinity-cas (casgate's), preauth forms, CSP script-src-attr 'none' (CVE-2026-42897)")
    expect(report).toContain('requests: at most 65536 bytes of headers')
    expect(report).toContain('connections: at most 50000, 5000 per address')
    expect(report).toContain('hsts: max-age=600')
    expect(report).toContain('upstream connections per server: 256 interactive, 20000 long polls (apart: held Pings never take an OWA click\'s); over budget, a request waits 5 s, then 503')
    expect(existsSync(join(dir, 'session-secret'))).toBe(false)
  })

  it('says how many workers serve and that the limits are totals; says nothing of workers for one process', async () => {
    const one = checkReport(await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'] }, { writeState: false }))
    expect(one).not.toContain('workers:')
    const four = checkReport(await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], listen: { workers: 4 } }, { writeState: false }))
    expect(four).toContain('  workers: 4, behind one port; a primary probes health')
    expect(four).toContain('connection limits and upstream budgets below are totals, divided among the workers')
  })

  it('says where the admin token comes from, and generates none when only checking', async () => {
    const dir = tempDir()
    const report = checkReport(await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, admin: { host: '127.0.0.1', port: 9090, names: ['lb-admin.contoso.local'] } } }, { writeState: false }))
    expect(report).toContain(`  admin: http://127.0.0.1:9090, every request with Authorization: Bearer <token> (token: will be generated at first start into ${dir}/admin-token); Host must be its address or lb-admin.contoso.local; changes are same-origin JSON POSTs`)
    expect(existsSync(join(dir, 'admin-token'))).toBe(false)
  })

  it('warns when the admin listener leaves loopback (plain HTTP: the token would cross the network)', async () => {
    const dir = tempDir()
    const config = await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, admin: { host: '0.0.0.0', port: 9090 } } }, { writeState: false })
    expect(config.warnings.find((w) => w.path === 'admin.host')?.message).toBe('the admin listener is plain HTTP on 0.0.0.0: its token and the status page\'s cookie cross that network in clear')
    const loopback = await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, admin: { host: '127.0.0.1', port: 9090 } } }, { writeState: false })
    expect(loopback.warnings.some((w) => w.path === 'admin.host')).toBe(false)
  })

  it('says where shared state lives, and warns when instances sharing it would disagree (secrets of their own)', async () => {
    const dir = tempDir()
    const files = writeFiles(dir, { 'users.txt': `jdoe:${await hashPassword('Correct-Horse-1', 14)}\n`, 'site-session-secret': 'k'.repeat(48), 'affinity-secret': 'a'.repeat(48) })
    const state = { redis: { url: 'redis://redis.contoso.local:6379/2', keyPrefix: 'mail:' } }
    const own = await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, state, preauth: { usersFile: files['users.txt'] } } }, { writeState: false })
    expect(own.warnings.map((w) => w.path)).toEqual(expect.arrayContaining(['preauth.secretFile']))
    const report = checkReport(own)
    expect(report).toContain('  shared state: Valkey/Redis redis://redis.contoso.local:6379/2, keys mail:*; lockout counts, the Basic cache, sign-outs, affinity placements, drains and weights are shared with every instance using it (history kept 8 h)')
    expect(report).toContain('warning preauth.secretFile: the session secret is this instance\'s own (its state directory)')
    const shared = await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, state, affinity: { secretFile: files['affinity-secret'] }, preauth: { usersFile: files['users.txt'], secretFile: files['site-session-secret'] } } }, { writeState: false })
    expect(shared.warnings.filter((w) => w.path === 'preauth.secretFile' || w.path === 'affinity.secretFile')).toEqual([])
    // Without shared state, a secret of the instance's own is no problem.
    const alone = await labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, preauth: { usersFile: files['users.txt'] } } }, { writeState: false })
    expect(alone.warnings.some((w) => w.path === 'preauth.secretFile')).toBe(false)
  })
})
