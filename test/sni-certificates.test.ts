import { spawn } from 'node:child_process'
import { connect, type PeerCertificate } from 'node:tls'
import { describe, expect, it } from 'vitest'
import { buildConfig } from '../src/config/load.js'
import { startGateway, type Gateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { createLabPki, issueCertificate } from '../src/certificates/lab-ca.js'
import { labPki, LogCapture, startEmulators, startLabGateway } from './helpers/lab.js'
import { handshake } from './helpers/tls-session.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { onTestFinished } from 'vitest'

/** openssl runs the openssl binary with stdin closed (s_client waits on it otherwise). */
function openssl (args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.on('error', reject)
    child.on('close', () => resolve(output))
    child.stdin.end()
  })
}

async function twoHostGateway () {
  const pki = await createLabPki(['mail.contoso.test'])
  const fabrikam = await issueCertificate({ commonName: '*.fabrikam.test', names: ['*.fabrikam.test'] }, pki.intermediate)
  const dir = tempDir()
  writeFiles(dir, {
    'contoso.crt': pki.server.certPem,
    'contoso.key': pki.server.keyPem,
    'chain.pem': pki.intermediate.certPem,
    'fabrikam.crt': fabrikam.certPem + pki.intermediate.certPem,
    'fabrikam.key': fabrikam.keyPem,
    'root.pem': pki.root.certPem
  })
  const servers = await startEmulators(1)
  const config = buildConfig({
    listen: { host: '127.0.0.1', port: 0 },
    hosts: [
      { names: ['mail.contoso.test'], certificate: { cert: 'contoso.crt', key: 'contoso.key', chain: 'chain.pem', ca: 'root.pem' }, mode: 'offload', extendedProtection: false },
      { names: ['*.fabrikam.test'], certificate: { cert: 'fabrikam.crt', key: 'fabrikam.key', ca: 'root.pem' }, mode: 'offload', extendedProtection: false }
    ],
    pools: { cas: { servers: servers.map((s) => s.url) } }
  }, { source: 'test', baseDir: dir })
  const gateway = await startGateway(config, { logger: createLogger({ level: 'warn', pretty: false }, new LogCapture()) })
  onTestFinished(() => gateway.close())
  return { gateway, pki, dir }
}

function peerOf (gateway: Gateway, servername: string | undefined, ca: string): Promise<{ subject: PeerCertificate['subject'], chainLength: number, protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: gateway.address.port, ca, ...(servername ? { servername } : {}), checkServerIdentity: () => undefined }, () => {
      const peer = socket.getPeerCertificate(true)
      let chainLength = 1
      for (let cert = peer; cert.issuerCertificate && cert.issuerCertificate !== cert; cert = cert.issuerCertificate) chainLength++
      resolve({ subject: peer.subject, chainLength, protocol: socket.getProtocol() })
      socket.end()
    })
    socket.on('error', reject)
  })
}

describe('SNI picks the certificate; the full chain is served', () => {
  it('serves each host its own certificate on one port, wildcards included', async () => {
    const { gateway, pki } = await twoHostGateway()
    expect((await peerOf(gateway, 'mail.contoso.test', pki.root.certPem)).subject.CN).toBe('mail.contoso.test')
    expect((await peerOf(gateway, 'MAIL.Contoso.test', pki.root.certPem)).subject.CN).toBe('mail.contoso.test')
    expect((await peerOf(gateway, 'owa.fabrikam.test', pki.root.certPem)).subject.CN).toBe('*.fabrikam.test')
    // Without SNI (old clients, IP literals) the first host's certificate is served.
    expect((await peerOf(gateway, undefined, pki.root.certPem)).subject.CN).toBe('mail.contoso.test')
  })

  it('serves leaf and intermediate, so a client that only trusts the root verifies (openssl s_client)', async () => {
    const { gateway, dir } = await twoHostGateway()
    const stdout = await openssl(['s_client', '-connect', `127.0.0.1:${gateway.address.port}`, '-servername', 'mail.contoso.test',
      '-CAfile', `${dir}/root.pem`, '-verify_return_error', '-showcerts'])
    expect(stdout).toContain('Verify return code: 0 (ok)')
    expect(stdout.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2)
  })

  it('refuses TLS 1.1', async () => {
    const { gateway } = await twoHostGateway()
    const output = await openssl(['s_client', '-connect', `127.0.0.1:${gateway.address.port}`, '-servername', 'mail.contoso.test',
      '-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'])
    expect(output).toContain('no peer certificate available')
    expect(output).toMatch(/alert protocol version/i)
    expect(gateway.frontDoor.handshakeFailures).toBeGreaterThan(0)
  })
})

describe('TLS session resumption', () => {
  it('resumes TLS 1.3 and TLS 1.2 sessions on a name that SNI selects (one ticket key for every context)', async () => {
    const pki = await labPki()
    const servers = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { health: { enabled: false } } })
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const first = await handshake(gateway.address.port, pki.root.certPem, { maxVersion })
      expect(first.session).toBeDefined()
      expect((await handshake(gateway.address.port, pki.root.certPem, { maxVersion, session: first.session })).reused).toBe(true)
    }
  })
})
