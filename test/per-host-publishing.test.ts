import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { Client } from 'undici'
import { describe, expect, it, onTestFinished } from 'vitest'
import { hashPassword } from '../src/auth/password-hash.js'
import { issueCertificate, type LabCertificate } from '../src/certificates/lab-ca.js'
import { checkReport } from '../src/check-report.js'
import { buildConfig } from '../src/config/load.js'
import type { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { startGateway, type Gateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { labPki, LogCapture, startEmulators } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// One instance, one port, an Exchange site published per name as admins do it:
//   mail.contoso.test          OWA (forms), EWS (Basic), MAPI — re-encrypt, Extended Protection
//   autodiscover.contoso.test  /autodiscover only, no preauthentication — re-encrypt
//   eas.contoso.test           ActiveSync only, with client certificates — re-encrypt
//   legacy.contoso.test        everything, offload to an older server without Extended Protection
//   pass.contoso.test          passthrough to its own pool

const SITE_NAMES = ['mail.contoso.test', 'autodiscover.contoso.test', 'eas.contoso.test', 'legacy.contoso.test']

interface Site {
  gateway: Gateway
  https: ExchangeEmulator
  plain: ExchangeEmulator
  passthrough: ExchangeEmulator
  user: LabCertificate
  root: string
}

async function site (): Promise<Site> {
  const pki = await labPki()
  const dir = tempDir()
  // Re-encrypt with Extended Protection: casgate serves the very certificate the servers have.
  const shared = await issueCertificate({ commonName: 'mail.contoso.test', names: [...SITE_NAMES, 'pass.contoso.test', '127.0.0.1'] }, pki.intermediate)
  const usersCa = await issueCertificate({ commonName: 'Contoso Users CA', isCa: true })
  const user = await issueCertificate({ commonName: 'jdoe', usage: ['clientAuth'] }, usersCa)
  const files = writeFiles(dir, {
    'site.crt': shared.certPem,
    'site.key': shared.keyPem,
    'chain.pem': pki.intermediate.certPem,
    'root.pem': pki.root.certPem,
    'users-ca.pem': usersCa.certPem,
    'users.txt': `jdoe:${await hashPassword('Correct-Horse-1', 14)}\n`
  })
  const tls = { certPem: shared.certPem + pki.intermediate.certPem, keyPem: shared.keyPem }
  const [https] = await startEmulators(1, tls)
  const [plain] = await startEmulators(1)
  const [passthrough] = await startEmulators(1, tls)
  const certificate = { cert: files['site.crt'], key: files['site.key'], chain: files['chain.pem'], ca: files['root.pem'] }
  const config = buildConfig({
    listen: { host: '127.0.0.1', port: 0, defaultHost: 'mail.contoso.test' },
    hosts: [
      { names: ['mail.contoso.test'], mode: 'reencrypt', certificate, pool: 'cas', publish: ['/owa', '/EWS', '/mapi'] },
      { names: ['autodiscover.contoso.test'], mode: 'reencrypt', certificate, pool: 'cas', publish: ['/autodiscover'] },
      { names: ['eas.contoso.test'], mode: 'reencrypt', certificate, pool: 'cas', publish: ['/Microsoft-Server-ActiveSync'], clientCertificate: { ca: files['users-ca.pem'] }, vdirs: { '/Microsoft-Server-ActiveSync': { preauth: 'none' } } },
      { names: ['legacy.contoso.test'], mode: 'offload', extendedProtection: false, certificate, pool: 'legacy' },
      { names: ['pass.contoso.test'], mode: 'passthrough', pool: 'pass' }
    ],
    pools: {
      cas: { servers: [https!.url], ca: files['root.pem'], serverName: 'mail.contoso.test' },
      legacy: { servers: [plain!.url] },
      pass: { servers: [passthrough!.url] }
    },
    health: { enabled: false },
    preauth: { usersFile: files['users.txt'] }
  }, { source: 'per-host test', baseDir: dir })
  const gateway = await startGateway(config, { logger: createLogger({ level: 'info', pretty: false }, new LogCapture()) })
  onTestFinished(() => gateway.close())
  return { gateway, https: https!, plain: plain!, passthrough: passthrough!, user, root: pki.root.certPem }
}

/** ask sends one request on a connection made to `servername`, with `host` as the Host header. */
async function ask (s: Site, servername: string, path: string, options: { host?: string, certificate?: LabCertificate, authorization?: string } = {}): Promise<{ status: number, backend: string | undefined, code: string | undefined }> {
  const client = new Client(`https://127.0.0.1:${s.gateway.address.port}`, {
    connect: { ca: s.root, servername, ...(options.certificate ? { cert: options.certificate.certPem, key: options.certificate.keyPem } : {}) }
  })
  try {
    const response = await client.request({ path, method: 'GET', headers: { host: options.host ?? servername, ...(options.authorization ? { authorization: options.authorization } : {}) } })
    const text = await response.body.text()
    const backend = response.headers['x-backend'] as string | undefined
    return { status: response.statusCode, backend, code: backend === undefined && text.startsWith('{') ? (JSON.parse(text) as { code?: string }).code : undefined }
  } finally {
    await client.close()
  }
}

/** raw writes a request over TLS with exactly this SNI (undici would take it from Host) and returns the answer. */
async function raw (s: Site, servername: string | undefined, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: s.gateway.address.port, ca: s.root, ...(servername ? { servername } : { checkServerIdentity: () => undefined }) }, () => socket.write(text))
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
  })
}

const basic = `Basic ${Buffer.from('jdoe:Correct-Horse-1').toString('base64')}`

describe('publishing per host name', () => {
  it('serves each name its own vdirs, modes and preauthentication on one port', async () => {
    const s = await site()
    // mail: forms for OWA, Basic for EWS, re-encrypted to the cas pool.
    expect(await ask(s, 'mail.contoso.test', '/owa/')).toMatchObject({ status: 440, backend: undefined })
    expect(await ask(s, 'mail.contoso.test', '/casgate/logon')).toMatchObject({ status: 200 })
    expect(await ask(s, 'mail.contoso.test', '/EWS/Exchange.asmx')).toMatchObject({ status: 401 })
    expect(await ask(s, 'mail.contoso.test', '/EWS/Exchange.asmx', { authorization: basic })).toMatchObject({ status: 200, backend: s.https.name })
    expect(await ask(s, 'mail.contoso.test', '/autodiscover/autodiscover.xml')).toMatchObject({ status: 404, code: 'CASGATE_ERR_NOT_PUBLISHED' })
    // autodiscover: that vdir only, no preauthentication.
    expect(await ask(s, 'autodiscover.contoso.test', '/autodiscover/autodiscover.xml')).toMatchObject({ status: 200, backend: s.https.name })
    for (const path of ['/owa/', '/EWS/Exchange.asmx', '/Microsoft-Server-ActiveSync', '/ecp/', '/casgate/logon']) {
      expect(await ask(s, 'autodiscover.contoso.test', path)).toMatchObject({ status: 404, code: 'CASGATE_ERR_NOT_PUBLISHED' })
    }
    // legacy: offload (plain HTTP) to its own server, the whole site-wide table.
    expect(await ask(s, 'legacy.contoso.test', '/EWS/Exchange.asmx', { authorization: basic })).toMatchObject({ status: 200, backend: s.plain.name })
    expect(await ask(s, 'legacy.contoso.test', '/autodiscover/autodiscover.xml')).toMatchObject({ status: 200, backend: s.plain.name })
    // pass: TLS unopened, the server's own handshake.
    const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port: s.gateway.address.port, servername: 'pass.contoso.test', ca: s.root })
    await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
    socket.end()
    expect(s.passthrough.requests).toBe(0)
    await expect.poll(() => s.gateway.pools.get('pass')!.servers[0]!.connections).toBe(0)
    expect(s.gateway.app.hasPlugin('casgate-offload') && s.gateway.app.hasPlugin('casgate-reencrypt') && s.gateway.app.hasPlugin('casgate-passthrough')).toBe(true)
  })

  it('protects exactly the client-certificate host\'s vdirs: no other name reaches them', async () => {
    const s = await site()
    expect(await ask(s, 'eas.contoso.test', '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone')).toMatchObject({ status: 403, code: 'CASGATE_ERR_CLIENT_CERTIFICATE' })
    expect(await ask(s, 'eas.contoso.test', '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone', { certificate: s.user })).toMatchObject({ status: 200, backend: s.https.name })
    expect(await ask(s, 'eas.contoso.test', '/owa/', { certificate: s.user })).toMatchObject({ status: 404, code: 'CASGATE_ERR_NOT_PUBLISHED' })
    const before = s.https.requests
    // The walk-around: another name of the same instance, same pool, no certificate asked.
    expect(await ask(s, 'mail.contoso.test', '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone', { authorization: basic })).toMatchObject({ status: 404, code: 'CASGATE_ERR_NOT_PUBLISHED' })
    expect(await ask(s, 'autodiscover.contoso.test', '/Microsoft-Server-ActiveSync', { authorization: basic })).toMatchObject({ status: 404 })
    // … or the certificate host's name in Host on another name's connection, or on no SNI at all.
    const request = (host: string): string => `GET /Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone HTTP/1.1\r\nHost: ${host}\r\nAuthorization: ${basic}\r\nConnection: close\r\n\r\n`
    expect(await raw(s, 'mail.contoso.test', request('eas.contoso.test'))).toMatch(/^HTTP\/1\.1 421 .*CASGATE_ERR_MISDIRECTED/s)
    expect(await raw(s, undefined, request('eas.contoso.test'))).toMatch(/^HTTP\/1\.1 421 /)
    // A Host naming any other published name than the connection's is misdirected too.
    expect(await raw(s, 'autodiscover.contoso.test', 'GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 421 /)
    expect(await raw(s, 'mail.contoso.test', 'GET /owa/ HTTP/1.1\r\nHost: pass.contoso.test\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 421 /)
    expect(s.https.requests).toBe(before)
  })

  it('keeps the single-table form: hosts without their own tables publish the site-wide one', async () => {
    const pki = await labPki()
    const dir = tempDir()
    const files = writeFiles(dir, { 'mail.crt': pki.server.certPem + pki.intermediate.certPem, 'mail.key': pki.server.keyPem, 'root.pem': pki.root.certPem })
    const servers = await startEmulators(1)
    const certificate = { cert: files['mail.crt'], key: files['mail.key'], ca: files['root.pem'] }
    const config = buildConfig({
      listen: { host: '127.0.0.1', port: 0 },
      hosts: [
        { names: ['mail.contoso.test'], certificate, mode: 'offload', extendedProtection: false },
        { names: ['autodiscover.contoso.test'], certificate, mode: 'offload', extendedProtection: false }
      ],
      pools: { cas: { servers: servers.map((server) => server.url) } },
      vdirs: { '/ecp': { enabled: true } },
      health: { enabled: false }
    }, { source: 'single table', baseDir: dir })
    expect(config.hosts.every((host) => host.mode !== 'passthrough' && host.vdirs === config.vdirs)).toBe(true)
    const gateway = await startGateway(config, { logger: createLogger({ level: 'warn', pretty: false }, new LogCapture()) })
    onTestFinished(() => gateway.close())
    const s = { gateway, root: pki.root.certPem } as Site
    for (const name of ['mail.contoso.test', 'autodiscover.contoso.test']) {
      for (const path of ['/owa/', '/ecp/', '/autodiscover/autodiscover.xml']) expect(await ask(s, name, path)).toMatchObject({ status: 200, backend: 'ex1' })
    }
    // One affinity policy per vdir, shared by both names: no host label on /affinity.
    expect((gateway.affinity.snapshot() as { vdirs: Array<{ host?: string }> }).vdirs.every((vdir) => vdir.host === undefined)).toBe(true)
  })

  it('prints the publication per host and warns when two names publish one vdir with different authentication', async () => {
    const s = await site()
    const report = checkReport(s.gateway.config)
    expect(report).toContain('  host eas.contoso.test (reencrypt, client certificate required)')
    expect(report).toMatch(/ {2}host autodiscover\.contoso\.test \(reencrypt\)\n.*\n {4}vdir \/autodiscover -> pool cas, timeout 120 s, affinity none, preauth none/)
    expect(report).toMatch(/ {2}host legacy\.contoso\.test \(offload\)\n.*\n {4}vdir \/owa -> pool legacy/)
    expect(report).not.toContain('warning hosts[')
    const pki = await labPki()
    const dir = tempDir()
    const files = writeFiles(dir, { 'mail.crt': pki.server.certPem + pki.intermediate.certPem, 'mail.key': pki.server.keyPem, 'root.pem': pki.root.certPem, 'users-ca.pem': pki.root.certPem })
    const certificate = { cert: files['mail.crt'], key: files['mail.key'], ca: files['root.pem'] }
    const walkable = buildConfig({
      hosts: [
        { names: ['mail.contoso.test'], certificate, mode: 'offload', extendedProtection: false, clientCertificate: { ca: files['users-ca.pem'] } },
        { names: ['autodiscover.contoso.test'], certificate, mode: 'offload', extendedProtection: false, publish: ['/Microsoft-Server-ActiveSync', '/autodiscover'] }
      ],
      pools: { cas: { servers: ['http://127.0.0.1:1'] } }
    }, { source: 'walkable', baseDir: dir, writeState: false })
    const warning = walkable.warnings.find((w) => w.path === 'hosts[1]')
    expect(warning?.message).toBe('publishes /Microsoft-Server-ActiveSync to pool cas without the client certificate that hosts[0] (mail.contoso.test) requires for it: a client can use autodiscover.contoso.test instead and walk around that check')
  })
})
