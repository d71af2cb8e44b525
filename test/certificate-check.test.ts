import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import { assembleCertificate, privateKeyFromPem } from '../src/certificates/certificate.js'
import { checkCertificate } from '../src/certificates/certificate-check.js'
import { createLabPki, issueCertificate, newKeyPem, type LabCertificate, type LabPki } from '../src/certificates/lab-ca.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

const run = promisify(execFile)
const DAY = 24 * 60 * 60_000
let pki: LabPki
beforeAll(async () => { pki = await createLabPki(['mail.contoso.test', 'autodiscover.contoso.test']) })

function check (leaf: LabCertificate, chain: LabCertificate[], names: string[], options: { roots?: LabCertificate[] } = {}) {
  const certificate = assembleCertificate(privateKeyFromPem(leaf.keyPem), [leaf, ...chain].map((c) => new X509Certificate(c.certPem)))
  return checkCertificate({ path: 'hosts[0].certificate', certificate, names, extraRoots: (options.roots ?? [pki.root]).map((r) => new X509Certificate(r.certPem)) })
}

describe('certificate checks at start and in casgate check', () => {
  it('passes a complete chain that covers every name', () => {
    expect(check(pki.server, [pki.intermediate], ['mail.contoso.test', 'autodiscover.contoso.test'])).toEqual({ errors: [], warnings: [] })
  })

  it('names the missing intermediate', () => {
    const { errors } = check(pki.server, [], ['mail.contoso.test'])
    expect(errors).toEqual([expect.objectContaining({ path: 'hosts[0].certificate.chain' })])
    expect(errors[0]!.message).toContain('issuer CN=casgate lab issuing CA')
    expect(errors[0]!.fix).toContain('add the issuing CA\'s intermediate certificate to chain')
  })

  it('refuses a chain that reaches no trusted root', () => {
    expect(check(pki.server, [pki.intermediate], ['mail.contoso.test'], { roots: [] }).errors).toHaveLength(1)
  })

  it('flags a published name the certificate does not cover', () => {
    const { errors } = check(pki.server, [pki.intermediate], ['mail.contoso.test', 'owa.fabrikam.test'])
    expect(errors).toHaveLength(1)
    expect(errors[0]!.message).toMatch(/^owa\.fabrikam\.test is not covered by the certificate's subjectAltName \(mail\.contoso\.test, autodiscover\.contoso\.test\)/)
  })

  it('lets a wildcard cover one label, and a wildcard name only by the same wildcard', async () => {
    const wildcard = await issueCertificate({ commonName: '*.contoso.test', names: ['*.contoso.test'] }, pki.intermediate)
    expect(check(wildcard, [pki.intermediate], ['mail.contoso.test', '*.contoso.test']).errors).toEqual([])
    expect(check(wildcard, [pki.intermediate], ['a.b.contoso.test']).errors).toHaveLength(1)
    expect(check(pki.server, [pki.intermediate], ['*.contoso.test']).errors).toHaveLength(1)
  })

  it('refuses an expired or not yet valid certificate and warns 30 days ahead', async () => {
    const now = Date.now()
    const expired = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'], notBefore: new Date(now - 400 * DAY), notAfter: new Date(now - DAY) }, pki.intermediate)
    const future = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'], notBefore: new Date(now + DAY), notAfter: new Date(now + 400 * DAY) }, pki.intermediate)
    const soon = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'], notAfter: new Date(now + 10 * DAY) }, pki.intermediate)
    expect(check(expired, [pki.intermediate], ['mail.contoso.test']).errors[0]!.message).toMatch(/^the certificate expired on \d{4}-\d\d-\d\d/)
    expect(check(future, [pki.intermediate], ['mail.contoso.test']).errors[0]!.message).toMatch(/^the certificate is not valid before/)
    const { errors, warnings } = check(soon, [pki.intermediate], ['mail.contoso.test'])
    expect(errors).toEqual([])
    expect(warnings[0]!.message).toMatch(/^the certificate expires in 1[01] days/)
  })

  it('flags weak keys and SHA-1 signatures', async () => {
    const weak = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'], keyPem: await newKeyPem(1024) }, pki.intermediate)
    expect(check(weak, [pki.intermediate], ['mail.contoso.test']).errors[0]!.message).toBe('the key is RSA-1024, which clients refuse')
    const sha1 = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'], signatureHash: 'sha1' }, pki.intermediate)
    expect(check(sha1, [pki.intermediate], ['mail.contoso.test']).warnings[0]!.message).toBe('the certificate is signed with SHA-1, which current clients reject')
  })
})

describe('casgate check reports certificate findings', () => {
  async function configWith (leaf: LabCertificate, names: string[]) {
    const dir = tempDir()
    return writeFiles(dir, {
      'mail.crt': leaf.certPem + pki.intermediate.certPem,
      'mail.key': leaf.keyPem,
      'root.pem': pki.root.certPem,
      'casgate.yaml': `hosts:\n  - names: [${names.join(', ')}]\n    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }\n    mode: offload\n    extendedProtection: false\npools:\n  cas: { servers: [http://10.0.0.1] }\n`
    })['casgate.yaml']
  }

  it('exits 2 with --json listing the error, and 1 for warnings only', async () => {
    const bad = await configWith(pki.server, ['mail.contoso.test', 'owa.fabrikam.test'])
    const failed = await run('node', ['dist/src/cli.js', 'check', '--json', '-c', bad]).catch((err) => err)
    expect(failed.code).toBe(2)
    expect(JSON.parse(failed.stdout)).toMatchObject({ valid: false, errors: [expect.objectContaining({ path: 'hosts[0].certificate', message: expect.stringContaining('owa.fabrikam.test') })] })

    const soon = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'], notAfter: new Date(Date.now() + 5 * DAY) }, pki.intermediate)
    const warned = await run('node', ['dist/src/cli.js', 'check', '-c', await configWith(soon, ['mail.contoso.test'])]).catch((err) => err)
    expect(warned.code).toBe(1)
    expect(warned.stdout).toMatch(/ {2}host mail\.contoso\.test \(offload\)\n.*\n {4}warning hosts\[0\]\.certificate: the certificate expires in [56] days/)
  })
})
