import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { tempDir, writeFiles } from './helpers/tmp.js'

const run = promisify(execFile)
const cli = 'dist/src/cli.js'

describe('casgate certs', () => {
  it('makes a lab CA, converts its PFX to PEM, shows the chain, and the result passes casgate check', async () => {
    const dir = tempDir()
    await run('node', [cli, 'certs', 'lab', '--names', 'mail.contoso.test,autodiscover.contoso.test', '--out', dir])
    const pass = writeFiles(dir, { 'pfx.pass': 'casgate\n' })['pfx.pass']
    const pem = join(dir, 'pem')
    await run('node', [cli, 'certs', 'pfx2pem', join(dir, 'server.pfx'), '--passphrase-file', pass, '--out', pem])
    expect(statSync(join(pem, 'key.pem')).mode & 0o777).toBe(0o600)
    expect(readFileSync(join(pem, 'cert.pem'), 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2)

    const { stdout } = await run('node', [cli, 'certs', 'show', join(dir, 'server.pfx'), '--passphrase-file', pass])
    expect(stdout).toMatch(/^leaf: CN=mail\.contoso\.test/)
    expect(stdout).toContain(`sha256     ${new X509Certificate(readFileSync(join(dir, 'server.crt'))).fingerprint256}`)
    expect(stdout).toContain('intermediate: CN=casgate lab issuing CA')

    const config = writeFiles(dir, {
      'casgate.yaml': 'hosts:\n  - names: [mail.contoso.test, autodiscover.contoso.test]\n    certificate: { cert: pem/cert.pem, key: pem/key.pem, ca: root-ca.pem }\n    mode: offload\n    extendedProtection: false\npools:\n  cas: { servers: [http://10.0.0.1] }\n'
    })['casgate.yaml']
    const checked = await run('node', [cli, 'check', '-c', config])
    expect(checked.stdout).toContain('chain 1 intermediate(s)')
  })
})
