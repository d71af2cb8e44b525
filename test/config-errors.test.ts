import { execFile } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { buildConfig, loadConfigFile } from '../src/config/load.js'
import { ConfigError } from '../src/errors/errors.js'
import { createLabPki } from '../src/certificates/lab-ca.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

const run = promisify(execFile)
const goldenDir = 'test/golden/config'
const cli = 'dist/src/cli.js'

function messageOf (fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return `casgate: ${err.message}\n`
    throw err
  }
  throw new Error('expected a ConfigError')
}

describe('configuration errors name the key path, what came, and the fix (golden outputs)', () => {
  for (const file of readdirSync(goldenDir).filter((name) => name.endsWith('.yaml'))) {
    it(file, () => {
      const expected = readFileSync(join(goldenDir, file.replace(/\.yaml$/, '.expected')), 'utf8')
      expect(messageOf(() => loadConfigFile(join(goldenDir, file)))).toBe(expected)
    })
  }
})

describe('certificate problems are configuration errors', () => {
  it('names a key that does not belong to the certificate', async () => {
    const a = await createLabPki(['mail.contoso.test'])
    const dir = tempDir()
    writeFiles(dir, { 'mail.crt': a.server.certPem, 'other.key': a.intermediate.keyPem })
    const message = messageOf(() => buildConfig({
      hosts: [{ names: ['mail.contoso.test'], certificate: { cert: 'mail.crt', key: 'other.key' }, mode: 'offload' }],
      pools: { cas: { servers: ['http://127.0.0.1:8080'] } }
    }, { source: 'casgate.yaml', baseDir: dir }))
    expect(message).toContain('hosts[0].certificate.cert: no certificate matches the private key')
  })
})

describe('casgate check (the binary)', () => {
  it('exits 2 on a bad configuration, printing every problem to stderr', async () => {
    const result = await run('node', [cli, 'check', '-c', join(goldenDir, 'misspelt-keys-and-values.yaml')]).catch((err) => err)
    expect(result.code).toBe(2)
    expect(result.stderr).toBe(readFileSync(join(goldenDir, 'misspelt-keys-and-values.expected'), 'utf8'))
  })

  it('exits 0 and summarises a good configuration', async () => {
    const pki = await createLabPki(['mail.contoso.test'])
    const dir = tempDir()
    const files = writeFiles(dir, {
      'mail.crt': pki.server.certPem + pki.intermediate.certPem,
      'mail.key': pki.server.keyPem,
      'root.pem': pki.root.certPem,
      'casgate.yaml': 'hosts:\n  - names: [mail.contoso.test]\n    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }\n    mode: offload\n    extendedProtection: false\npools:\n  cas: { servers: [http://10.0.0.1, http://10.0.0.2] }\nvdirs:\n  /Microsoft-Server-ActiveSync: { timeoutMs: 3600000 }\n'
    })
    const { stdout } = await run('node', [cli, 'check', '-c', files['casgate.yaml']])
    expect(stdout).toContain('host mail.contoso.test (offload)')
    expect(stdout).toContain('chain 1 intermediate(s)')
    expect(stdout).toContain('vdir /Microsoft-Server-ActiveSync -> pool cas, timeout 3600 s, affinity authorization')
    expect(stdout).toContain('vdir /owa -> pool cas, timeout 300 s, affinity cookie CasgateAffinity-cas (casgate\'s)')
    expect(stdout).toContain('preauth: off (no preauth block)')
    expect(stdout).toMatch(/affinity: up to \d+ assignments, idle 120 min, balance factor 1.1, secret derived from the first host's private key/)
    expect(stdout).not.toContain('vdir /ecp')
  })

  it('explains each command with --help', async () => {
    for (const command of ['start', 'check', 'demo']) {
      const { stdout } = await run('node', [cli, command, '--help'])
      expect(stdout).toMatch(new RegExp(`^Usage: casgate ${command}`))
    }
    const { stdout } = await run('node', [cli, '--help'])
    expect(stdout).toContain('Commands:')
  })
})
