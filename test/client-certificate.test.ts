import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it, onTestFinished } from 'vitest'
import { buildConfig } from '../src/config/load.js'
import { startGateway, type Gateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { hashPassword } from '../src/auth/password-hash.js'
import { issueCertificate, type LabCertificate } from '../src/certificates/lab-ca.js'
import { labPki, LogCapture, startEmulators } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

const run = promisify(execFile)

/** revoke writes a CRL of `ca` listing `certificate`, with openssl's own CA tool. */
async function crlRevoking (dir: string, ca: LabCertificate, certificate: LabCertificate): Promise<string> {
  const files = writeFiles(dir, { 'ca.crt': ca.certPem, 'ca.key': ca.keyPem, 'revoked.crt': certificate.certPem, 'index.txt': '', crlnumber: '01\n' })
  const cnf = join(dir, 'ca.cnf')
  writeFileSync(cnf, `[ ca ]\ndefault_ca = lab\n[ lab ]\ndatabase = ${files['index.txt']}\ncrlnumber = ${files.crlnumber}\ndefault_md = sha256\ndefault_crl_days = 7\n`)
  await run('openssl', ['ca', '-config', cnf, '-revoke', files['revoked.crt'], '-keyfile', files['ca.key'], '-cert', files['ca.crt']])
  const crl = join(dir, 'crl.pem')
  await run('openssl', ['ca', '-config', cnf, '-gencrl', '-keyfile', files['ca.key'], '-cert', files['ca.crt'], '-out', crl])
  return crl
}

describe('client certificates as a second factor, per host name', () => {
  it('asks for a certificate only on the names that require it, and refuses none, a stranger\'s, a revoked one — then still wants the password', async () => {
    const pki = await labPki()
    const dir = tempDir()
    const clientCa = await issueCertificate({ commonName: 'Contoso Users CA', isCa: true })
    const good = await issueCertificate({ commonName: 'jdoe', usage: ['clientAuth'] }, clientCa)
    const revoked = await issueCertificate({ commonName: 'lost laptop', usage: ['clientAuth'] }, clientCa)
    const strangerCa = await issueCertificate({ commonName: 'Someone Else CA', isCa: true })
    const stranger = await issueCertificate({ commonName: 'mallory', usage: ['clientAuth'] }, strangerCa)
    const crl = await crlRevoking(dir, clientCa, revoked)
    const files = writeFiles(dir, {
      'mail.crt': pki.server.certPem + pki.intermediate.certPem,
      'mail.key': pki.server.keyPem,
      'root.pem': pki.root.certPem,
      'users-ca.pem': clientCa.certPem,
      'users.txt': `jdoe:${await hashPassword('Correct-Horse-1', 14)}\n`,
      'good.crt': good.certPem,
      'good.key': good.keyPem,
      'revoked.crt': revoked.certPem,
      'revoked.key': revoked.keyPem,
      'stranger.crt': stranger.certPem,
      'stranger.key': stranger.keyPem
    })
    const servers = await startEmulators(1)
    const certificate = { cert: files['mail.crt'], key: files['mail.key'], ca: files['root.pem'] }
    const config = buildConfig({
      listen: { host: '127.0.0.1', port: 0 },
      hosts: [
        { names: ['mail.contoso.test'], certificate, mode: 'offload', extendedProtection: false, clientCertificate: { ca: files['users-ca.pem'], crl } },
        { names: ['autodiscover.contoso.test', 'localhost'], certificate, mode: 'offload', extendedProtection: false }
      ],
      pools: { cas: { servers: servers.map((s) => s.url) } },
      health: { enabled: false },
      preauth: { usersFile: files['users.txt'] }
    }, { source: 'test', baseDir: dir })
    const logs = new LogCapture()
    const gateway: Gateway = await startGateway(config, { logger: createLogger({ level: 'info', pretty: false }, logs) })
    onTestFinished(() => gateway.close())
    const port = gateway.address.port

    const curl = async (name: string, path: string, extra: string[] = []): Promise<{ status: number, body: string }> => {
      const { stdout } = await run('curl', ['-sS', '--max-time', '10', '--cacert', files['root.pem'], '--resolve', `${name}:${port}:127.0.0.1`, '-w', '\n%{http_code}', ...extra, `https://${name}:${port}${path}`])
      const at = stdout.lastIndexOf('\n')
      return { status: Number(stdout.slice(at + 1)), body: stdout.slice(0, at) }
    }
    const cert = (which: 'good' | 'revoked' | 'stranger'): string[] => ['--cert', files[`${which}.crt`], '--key', files[`${which}.key`]]
    const basic = ['-u', 'jdoe:Correct-Horse-1']

    // The certificate, then the password: both factors.
    expect((await curl('mail.contoso.test', '/EWS/Exchange.asmx', [...cert('good'), ...basic])).status).toBe(200)
    expect((await curl('mail.contoso.test', '/EWS/Exchange.asmx', cert('good'))).status).toBe(401)
    expect((await curl('mail.contoso.test', '/owa/', [...cert('good'), '-H', 'Accept: text/html'])).status).toBe(302)
    for (const attempt of [[], cert('stranger'), cert('revoked')]) {
      const refused = await curl('mail.contoso.test', '/EWS/Exchange.asmx', [...attempt, ...basic])
      expect(refused.status).toBe(403)
      expect(JSON.parse(refused.body).code).toBe('CASGATE_ERR_CLIENT_CERTIFICATE')
    }
    // Health pages too: a monitor of this name needs a certificate (monitor the servers directly).
    expect((await curl('mail.contoso.test', '/owa/healthcheck.htm')).status).toBe(403)
    const problems = logs.lines.filter((line) => line.msg === 'client certificate refused').map((line) => line.problem)
    expect(problems.slice(0, 3)).toEqual(['no client certificate presented', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_REVOKED'])

    // The other name neither asks nor needs; a Host naming the certificate host on its
    // connection is misdirected.
    expect((await curl('autodiscover.contoso.test', '/EWS/Exchange.asmx', basic)).status).toBe(200)
    expect((await curl('autodiscover.contoso.test', '/EWS/Exchange.asmx', [...basic, '-H', 'Host: mail.contoso.test'])).status).toBe(421)
    // A fully qualified name (trailing dot) or another case is the same host: no way around the 421.
    for (const host of ['mail.contoso.test.', 'MAIL.Contoso.Test.', `mail.contoso.test.:${port}`]) {
      expect((await curl('autodiscover.contoso.test', '/EWS/Exchange.asmx', [...basic, '-H', `Host: ${host}`])).status, host).toBe(421)
    }
    // Nor through Outlook Anywhere's own parser.
    const rpc = await curl('autodiscover.contoso.test', '/rpc/rpcproxy.dll', ['-X', 'RPC_IN_DATA', '-H', 'Host: mail.contoso.test.', '-H', 'Content-Length: 0'])
    expect(rpc.status).toBe(421)
    const hello = async (name: string): Promise<string> => (await run('bash', ['-c', `openssl s_client -connect 127.0.0.1:${port} -servername ${name} </dev/null 2>&1`])).stdout
    expect(await hello('mail.contoso.test')).toMatch(/Acceptable client certificate CA names\n.*CN ?= ?Contoso Users CA/)
    expect(await hello('autodiscover.contoso.test')).toContain('No client certificate CA names sent')
  })
})
