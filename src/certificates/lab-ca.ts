import { generateKeyPair, randomBytes } from 'node:crypto'
import { isIP } from 'node:net'
import { promisify } from 'node:util'
import forge from 'node-forge'

// A throwaway PKI for the demo, the tests and `casgate certs`: keys from node:crypto (forge's
// pure-JS key generation takes seconds), certificates built with node-forge, which also lets
// us make the broken ones (expired, wrong name, missing intermediate) that tests need.

const generateKeyPairAsync = promisify(generateKeyPair)

/** LabCertificate is a certificate with its key, both PEM. */
export interface LabCertificate {
  certPem: string
  keyPem: string
  /** forge's view, to sign further certificates with. */
  forgeCert: forge.pki.Certificate
  forgeKey: forge.pki.rsa.PrivateKey
}

/** LabCertificateOptions describes one certificate to issue. */
export interface LabCertificateOptions {
  commonName: string
  /** DNS names and IP addresses for the subjectAltName extension. */
  names?: string[]
  isCa?: boolean
  /** Extended key usage: serverAuth (default for leaves), clientAuth, or both. */
  usage?: Array<'serverAuth' | 'clientAuth'>
  notBefore?: Date
  notAfter?: Date
  /** Reuse a key (PEM) instead of generating one; the same key under two certificates is allowed. */
  keyPem?: string
  /** Signature hash (default sha256); sha1 makes the certificates old clients and tests need. */
  signatureHash?: 'sha256' | 'sha1'
}

/** newKeyPem generates an RSA private key (2048 bits unless told) as PKCS#8 PEM. */
export async function newKeyPem (modulusLength = 2048): Promise<string> {
  const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength })
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
}

function altNames (names: readonly string[]): Array<{ type: number, value?: string, ip?: string }> {
  return names.map((name) => isIP(name) === 0 ? { type: 2, value: name } : { type: 7, ip: name })
}

/** issueCertificate signs a certificate with `issuer`, or self-signs when issuer is undefined. */
export async function issueCertificate (options: LabCertificateOptions, issuer?: LabCertificate): Promise<LabCertificate> {
  const keyPem = options.keyPem ?? await newKeyPem()
  const privateKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey
  const publicKey = forge.pki.setRsaPublicKey(privateKey.n, privateKey.e)
  const cert = forge.pki.createCertificate()
  cert.publicKey = publicKey
  // Positive serial: a leading 0x01 keeps the DER integer's top bit clear.
  cert.serialNumber = '01' + randomBytes(15).toString('hex')
  const now = Date.now()
  cert.validity.notBefore = options.notBefore ?? new Date(now - 60 * 60_000)
  cert.validity.notAfter = options.notAfter ?? new Date(now + 365 * 24 * 60 * 60_000)
  const subject = [{ name: 'commonName', value: options.commonName }, { name: 'organizationName', value: 'casgate lab' }]
  cert.setSubject(subject)
  cert.setIssuer(issuer ? issuer.forgeCert.subject.attributes : subject)
  const extensions: object[] = [
    { name: 'basicConstraints', cA: options.isCa === true, critical: true },
    options.isCa
      ? { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true }
      : { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'subjectKeyIdentifier' }
  ]
  if (!options.isCa) {
    const usage = options.usage ?? ['serverAuth']
    extensions.push({ name: 'extKeyUsage', serverAuth: usage.includes('serverAuth'), clientAuth: usage.includes('clientAuth') })
  }
  if (options.names && options.names.length > 0) extensions.push({ name: 'subjectAltName', altNames: altNames(options.names) })
  if (issuer) extensions.push({ name: 'authorityKeyIdentifier', keyIdentifier: issuer.forgeCert.generateSubjectKeyIdentifier().getBytes() })
  cert.setExtensions(extensions)
  cert.sign(issuer ? issuer.forgeKey : privateKey, options.signatureHash === 'sha1' ? forge.md.sha1.create() : forge.md.sha256.create())
  return { certPem: forge.pki.certificateToPem(cert), keyPem, forgeCert: cert, forgeKey: privateKey }
}

/** toPfx bundles a key, its certificate and a chain as PKCS#12; `legacy` uses 3DES like old Windows exports. */
export function toPfx (leaf: LabCertificate, chain: readonly LabCertificate[], passphrase: string, options: { legacy?: boolean } = {}): Buffer {
  const asn1 = forge.pkcs12.toPkcs12Asn1(
    leaf.forgeKey,
    [leaf.forgeCert, ...chain.map((c) => c.forgeCert)],
    passphrase,
    { algorithm: options.legacy ? '3des' : 'aes256', friendlyName: leaf.forgeCert.subject.getField('CN')?.value }
  )
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary')
}

/** LabPki is a root CA, an intermediate CA, and a server certificate issued by the intermediate. */
export interface LabPki {
  root: LabCertificate
  intermediate: LabCertificate
  server: LabCertificate
}

/** createLabPki builds root → intermediate → server for the given names. */
export async function createLabPki (names: string[], options: { commonName?: string } = {}): Promise<LabPki> {
  const root = await issueCertificate({ commonName: 'casgate lab root CA', isCa: true })
  const intermediate = await issueCertificate({ commonName: 'casgate lab issuing CA', isCa: true }, root)
  const server = await issueCertificate({ commonName: options.commonName ?? names[0] ?? 'localhost', names }, intermediate)
  return { root, intermediate, server }
}
