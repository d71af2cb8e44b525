import { connect } from 'node:tls'
import { describe, expect, it, onTestFinished } from 'vitest'
import { issueCertificate, type LabCertificate } from '../src/certificates/lab-ca.js'
import { buildConfig } from '../src/config/load.js'
import { startGateway, type Gateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { labPki, LogCapture, startEmulators } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// A client certificate is a second factor only if every connection shows one. With TLS 1.3 a
// resumed session reports `authorized` without any peer certificate: a ticket from a handshake
// that showed none (on the certificate host itself, or on another name of the instance) must not
// pass for one that did. Found by the session-4 attack review.

interface Answer { reused: boolean, head: string, backend: string | undefined, session: Buffer | undefined }

async function lab (): Promise<{ gateway: Gateway, root: string, user: LabCertificate }> {
  const pki = await labPki()
  const dir = tempDir()
  const usersCa = await issueCertificate({ commonName: 'Contoso Users CA', isCa: true })
  const user = await issueCertificate({ commonName: 'jdoe', usage: ['clientAuth'] }, usersCa)
  const files = writeFiles(dir, { 'mail.crt': pki.server.certPem + pki.intermediate.certPem, 'mail.key': pki.server.keyPem, 'root.pem': pki.root.certPem, 'users-ca.pem': usersCa.certPem })
  const servers = await startEmulators(1)
  const certificate = { cert: files['mail.crt'], key: files['mail.key'], ca: files['root.pem'] }
  const config = buildConfig({
    listen: { host: '127.0.0.1', port: 0 },
    hosts: [
      { names: ['autodiscover.contoso.test'], certificate, mode: 'offload', extendedProtection: false, clientCertificate: { ca: files['users-ca.pem'] }, publish: ['/Microsoft-Server-ActiveSync'] },
      { names: ['mail.contoso.test'], certificate, mode: 'offload', extendedProtection: false }
    ],
    pools: { cas: { servers: servers.map((s) => s.url) } },
    health: { enabled: false }
  }, { source: 'resumption', baseDir: dir })
  const gateway = await startGateway(config, { logger: createLogger({ level: 'warn', pretty: false }, new LogCapture()) })
  onTestFinished(() => gateway.close())
  return { gateway, root: pki.root.certPem, user }
}

function ask (gateway: Gateway, root: string, servername: string, path: string, options: { session?: Buffer | undefined, certificate?: LabCertificate } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: gateway.address.port, servername, ca: root, maxVersion: 'TLSv1.3', ...(options.session ? { session: options.session } : {}), ...(options.certificate ? { cert: options.certificate.certPem, key: options.certificate.keyPem } : {}) })
    let session: Buffer | undefined
    let reused = false
    const chunks: Buffer[] = []
    socket.on('session', (value: Buffer) => { session = value })
    socket.once('secureConnect', () => {
      reused = socket.isSessionReused()
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`)
    })
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1')
      resolve({ reused, head: text.split('\r\n')[0] ?? '', backend: /x-backend: (.*)/i.exec(text)?.[1], session })
    })
  })
}

const EAS = '/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=jdoe&DeviceId=D1&DeviceType=iPhone'

describe('client certificates and TLS session resumption', () => {
  it('refuses a resumed session that never showed a certificate, whichever name issued its ticket', async () => {
    const { gateway, root } = await lab()
    const first = await ask(gateway, root, 'autodiscover.contoso.test', EAS)
    expect(first.head).toMatch(/^HTTP\/1\.1 403 /)
    const again = await ask(gateway, root, 'autodiscover.contoso.test', EAS, { session: first.session })
    expect(again.head).toMatch(/^HTTP\/1\.1 403 /)
    expect(again.backend).toBeUndefined()
    const other = await ask(gateway, root, 'mail.contoso.test', '/owa/')
    expect(other.session).toBeDefined()
    const walked = await ask(gateway, root, 'autodiscover.contoso.test', EAS, { session: other.session })
    expect(walked.reused).toBe(false)
    expect(walked.head).toMatch(/^HTTP\/1\.1 403 /)
  })

  it('serves a client that shows its certificate on every connection (no resumption on that name)', async () => {
    const { gateway, root, user } = await lab()
    const first = await ask(gateway, root, 'autodiscover.contoso.test', EAS, { certificate: user })
    expect(first).toMatchObject({ head: 'HTTP/1.1 200 OK', backend: 'ex1' })
    const again = await ask(gateway, root, 'autodiscover.contoso.test', EAS, { certificate: user, session: first.session })
    expect(again).toMatchObject({ reused: false, head: 'HTTP/1.1 200 OK', backend: 'ex1' })
  })
})
