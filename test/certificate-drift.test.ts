import { X509Certificate } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect } from 'node:tls'
import { describe, expect, it, onTestFinished } from 'vitest'
import { Client } from 'undici'
import { loadConfigFile } from '../src/config/load.js'
import { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { startGateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { issueCertificate } from '../src/certificates/lab-ca.js'
import { labPki, LogCapture, startEmulators, startLabGateway } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { admin } from './helpers/admin.js'

function servedFingerprint (port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'mail.contoso.test', ca }, () => {
      resolve(socket.getPeerX509Certificate()!.fingerprint256)
      socket.destroy()
    })
    socket.on('error', reject)
  })
}

/** offloadSetup writes a configuration file (offload, one emulated server) next to its certificate files. */
async function offloadSetup () {
  const pki = await labPki()
  const servers = await startEmulators(1)
  const dir = tempDir()
  const files = writeFiles(dir, {
    'mail.crt': pki.server.certPem + pki.intermediate.certPem,
    'mail.key': pki.server.keyPem,
    'root.pem': pki.root.certPem,
    'casgate.yaml': `listen: { host: 127.0.0.1, port: 0 }\nhosts:\n  - names: [mail.contoso.test]\n    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }\n    mode: offload\n    extendedProtection: false\npools:\n  cas: { servers: [${servers[0]!.url}] }\n`
  })
  return { pki, dir, files }
}

describe('certificate drift and reload', () => {
  it('reports a backend that renewed its certificate without casgate', async () => {
    const pki = await labPki()
    const tls = { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem }
    const first = await new ExchangeEmulator({ name: 'ex1', tls }).start()
    const port = Number(new URL(first.url).port)
    const gateway = await startLabGateway({ mode: 'reencrypt', servers: [first.url], extra: { admin: { host: '127.0.0.1', port: 0 } } })
    expect(gateway.certificates.status.errors).toEqual([])

    await first.close()
    const renewed = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test', '127.0.0.1'] }, pki.intermediate)
    const second = await new ExchangeEmulator({ name: 'ex1', port, tls: { certPem: renewed.certPem + pki.intermediate.certPem, keyPem: renewed.keyPem } }).start()
    onTestFinished(() => second.close())

    const status = await gateway.certificates.check()
    expect(status.errors).toHaveLength(1)
    expect(status.errors[0]!.message).toContain(new X509Certificate(renewed.certPem).fingerprint256)
    expect(gateway.logs.lines.filter((line) => String(line.msg).startsWith('certificate drift: backend 127.0.0.1:'))).toHaveLength(1)
    const adminStatus = (await admin(gateway, '/status')).json as { certificates: { errors: unknown[] } }
    expect(adminStatus.certificates.errors).toHaveLength(1)
    // Said once: the same drift found again is not logged again.
    await gateway.certificates.check()
    expect(gateway.logs.lines.filter((line) => String(line.msg).startsWith('certificate drift:'))).toHaveLength(1)
  })

  it('reloads certificates for new handshakes while open connections carry on', async () => {
    const { pki, dir, files } = await offloadSetup()
    const gateway = await startGateway(loadConfigFile(files['casgate.yaml']), { logger: createLogger({ level: 'warn', pretty: false }, new LogCapture()) })
    onTestFinished(() => gateway.close())
    const port = gateway.address.port
    const before = await servedFingerprint(port, pki.root.certPem)
    const open = new Client(`https://127.0.0.1:${port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
    onTestFinished(() => open.destroy())
    const get = async () => { const r = await open.request({ path: '/owa/', method: 'GET', headers: { host: 'mail.contoso.test' } }); await r.body.dump(); return r.statusCode }
    expect(await get()).toBe(200)

    const renewed = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'] }, pki.intermediate)
    writeFileSync(join(dir, 'mail.crt'), renewed.certPem + pki.intermediate.certPem)
    writeFileSync(join(dir, 'mail.key'), renewed.keyPem)
    await gateway.certificates.reload()

    expect(await servedFingerprint(port, pki.root.certPem)).toBe(new X509Certificate(renewed.certPem).fingerprint256)
    expect(before).not.toBe(new X509Certificate(renewed.certPem).fingerprint256)
    expect(await get()).toBe(200) // the connection opened before the reload still works
  })

  it('refuses a reload whose configuration has problems, keeping the running certificates', async () => {
    const { pki, dir, files } = await offloadSetup()
    const gateway = await startGateway(loadConfigFile(files['casgate.yaml']), { logger: createLogger({ level: 'warn', pretty: false }, new LogCapture()) })
    onTestFinished(() => gateway.close())
    const before = await servedFingerprint(gateway.address.port, pki.root.certPem)
    writeFileSync(join(dir, 'mail.crt'), 'not a certificate')
    await expect(gateway.certificates.reload()).rejects.toThrow(/hosts\[0\]\.certificate\.cert/)
    expect(await servedFingerprint(gateway.address.port, pki.root.certPem)).toBe(before)
  })
})

describe('casgate start (the binary) reloads certificates on SIGHUP', () => {
  it('serves the new certificate to new handshakes after kill -HUP', async () => {
    const { spawn } = await import('node:child_process')
    const { pki, dir, files } = await offloadSetup()
    const child = spawn('node', ['dist/src/cli.js', 'start', '-c', files['casgate.yaml']], { stdio: ['ignore', 'pipe', 'pipe'] })
    onTestFinished(() => { child.kill('SIGKILL') })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    await expect.poll(() => /"msg":"casgate listening"/.test(output), { timeout: 15_000 }).toBe(true)
    const port = Number(/"port":(\d+)[^\n]*"msg":"casgate listening"/.exec(output)![1])
    expect(await servedFingerprint(port, pki.root.certPem)).toBe(new X509Certificate(pki.server.certPem).fingerprint256)

    const renewed = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'] }, pki.intermediate)
    writeFileSync(join(dir, 'mail.crt'), renewed.certPem + pki.intermediate.certPem)
    writeFileSync(join(dir, 'mail.key'), renewed.keyPem)
    child.kill('SIGHUP')
    await expect.poll(() => servedFingerprint(port, pki.root.certPem), { timeout: 10_000 }).toBe(new X509Certificate(renewed.certPem).fingerprint256)
    expect(child.exitCode).toBe(null)
  }, 30_000)
})
