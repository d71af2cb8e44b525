import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto'
import { CasgateError } from '../errors/errors.js'

/** LoadedCertificate is a private key with the certificate it belongs to and the chain to serve. */
export interface LoadedCertificate {
  leaf: X509Certificate
  /** Intermediates in order from the leaf's issuer upwards; served after the leaf. */
  chain: X509Certificate[]
  /** Certificates that came along but are not served: self-signed roots and unrelated ones. */
  extra: X509Certificate[]
  key: KeyObject
  /** Leaf and chain as PEM, the `cert` of a TLS secure context. */
  certPem: string
  /** The key as unencrypted PKCS#8 PEM; kept in memory only, handed to node:tls. */
  keyPem: string
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** splitPemCertificates returns every certificate of a PEM text, in file order. */
export function splitPemCertificates (text: string): X509Certificate[] {
  return (text.match(PEM_CERT) ?? []).map((block) => new X509Certificate(block))
}

function spki (key: KeyObject): string {
  return key.export({ type: 'spki', format: 'der' }).toString('base64')
}

function isSelfSigned (cert: X509Certificate): boolean {
  return cert.subject === cert.issuer && cert.checkIssued(cert)
}

/**
 * assembleCertificate picks the leaf by matching the private key (bag or file order says
 * nothing reliable) and orders the rest into the chain by issuer, leaf first.
 */
export function assembleCertificate (key: KeyObject, certificates: readonly X509Certificate[]): LoadedCertificate {
  if (key.type !== 'private') throw new CasgateError('CASGATE_ERR_CERT_LOAD', ['the key is not a private key'])
  const publicKey = spki(createPublicKey(key))
  const leaf = certificates.find((cert) => spki(cert.publicKey) === publicKey)
  if (!leaf) {
    throw new CasgateError('CASGATE_ERR_CERT_LOAD', [
      certificates.length === 0 ? 'no certificate found' : 'no certificate matches the private key'
    ])
  }
  const rest = certificates.filter((cert) => cert !== leaf && cert.fingerprint256 !== leaf.fingerprint256)
  const chain: X509Certificate[] = []
  let current = leaf
  while (!isSelfSigned(current)) {
    const issuer = rest.find((cert) => !chain.includes(cert) && current.checkIssued(cert) && current.verify(cert.publicKey))
    if (!issuer || isSelfSigned(issuer)) break
    chain.push(issuer)
    current = issuer
  }
  const extra = rest.filter((cert) => !chain.includes(cert))
  return {
    leaf,
    chain,
    extra,
    key,
    certPem: [leaf, ...chain].map((cert) => cert.toString()).join(''),
    keyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString()
  }
}

/** privateKeyFromPem reads a PEM key, decrypting it with the passphrase when it is encrypted. */
export function privateKeyFromPem (pem: string | Buffer, passphrase?: string): KeyObject {
  try {
    return createPrivateKey(passphrase === undefined ? { key: pem } : { key: pem, passphrase })
  } catch (err) {
    const reason = /passphrase|decrypt|bad decrypt/i.test(String(err)) ? 'the key is encrypted and the passphrase is missing or wrong' : 'the key is not a readable PEM private key'
    throw new CasgateError('CASGATE_ERR_CERT_LOAD', [reason], { cause: err })
  }
}
