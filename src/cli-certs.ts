import type { X509Certificate } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { splitPemCertificates, type LoadedCertificate } from './certificates/certificate.js'
import { signatureOid } from './certificates/certificate-check.js'
import { createLabPki, toPfx } from './certificates/lab-ca.js'
import { readPassphrase } from './certificates/load-certificate.js'
import { loadPfx } from './certificates/pfx.js'

/** CERTS_USAGE is the help of `casgate certs`. */
export const CERTS_USAGE = `Usage: casgate certs <show|pfx2pem|lab> [options]

  show FILE [--passphrase-env VAR | --passphrase-file F]
      print each certificate of a PEM or PFX file: subject, issuer, names, validity, key,
      signature and SHA-256 thumbprint (what Extended Protection compares)
  pfx2pem FILE --out DIR [--passphrase-env VAR | --passphrase-file F]
      write DIR/cert.pem (leaf then intermediates, as served), DIR/key.pem (mode 0600) and
      DIR/roots.pem (self-signed certificates that came along)
  lab --names a.contoso.test,b.contoso.test --out DIR
      generate a throwaway lab CA (root, intermediate) and a server certificate for the names:
      root-ca.pem, chain.pem, server.crt, server.key, server.pfx (passphrase "casgate")`

const SIGNATURES: Record<string, string> = {
  '1.2.840.113549.1.1.11': 'sha256WithRSAEncryption',
  '1.2.840.113549.1.1.12': 'sha384WithRSAEncryption',
  '1.2.840.113549.1.1.13': 'sha512WithRSAEncryption',
  '1.2.840.113549.1.1.5': 'sha1WithRSAEncryption (weak)',
  '1.2.840.10045.4.3.2': 'ecdsa-with-SHA256',
  '1.2.840.10045.4.3.3': 'ecdsa-with-SHA384',
  '1.2.840.10045.4.1': 'ecdsa-with-SHA1 (weak)'
}

function describe (cert: X509Certificate, role: string): string {
  const key = cert.publicKey.asymmetricKeyDetails
  const keyText = cert.publicKey.asymmetricKeyType === 'rsa' ? `RSA-${key?.modulusLength}` : `${cert.publicKey.asymmetricKeyType} ${key?.namedCurve ?? ''}`.trim()
  const oid = signatureOid(cert)
  return [
    `${role}: ${cert.subject.split('\n').join(', ')}`,
    `  issuer     ${cert.issuer.split('\n').join(', ')}`,
    `  names      ${cert.subjectAltName ?? '(no subjectAltName)'}`,
    `  valid      ${new Date(cert.validFrom).toISOString()} .. ${new Date(cert.validTo).toISOString()}`,
    `  key        ${keyText}; signature ${SIGNATURES[oid] ?? oid}`,
    `  sha256     ${cert.fingerprint256}`
  ].join('\n')
}

function loadAny (file: string, values: Record<string, unknown>): { certificates: X509Certificate[], loaded?: LoadedCertificate } {
  const data = readFileSync(file)
  if (data.includes('-----BEGIN CERTIFICATE-----')) return { certificates: splitPemCertificates(data.toString('utf8')) }
  const passphrase = readPassphrase({ passphraseEnv: values['passphrase-env'] as string | undefined, passphraseFile: values['passphrase-file'] as string | undefined }, process.cwd())
  const loaded = loadPfx(data, passphrase)
  return { certificates: [loaded.leaf, ...loaded.chain, ...loaded.extra], loaded }
}

/** certsCommand runs `casgate certs …` and returns the exit status. */
export async function certsCommand (args: string[], values: Record<string, unknown>): Promise<number> {
  const [action, file] = args
  if (action === 'show' && file) {
    const { certificates, loaded } = loadAny(file, values)
    const roles = certificates.map((cert, i) => loaded ? (i === 0 ? 'leaf' : loaded.chain.includes(cert) ? 'intermediate' : 'extra') : `certificate ${i + 1}`)
    process.stdout.write(certificates.map((cert, i) => describe(cert, roles[i]!)).join('\n') + '\n')
    return 0
  }
  if (action === 'pfx2pem' && file && typeof values.out === 'string') {
    const { loaded } = loadAny(file, values)
    if (!loaded) throw new Error(`${file} is PEM already`)
    mkdirSync(values.out, { recursive: true })
    writeFileSync(join(values.out, 'cert.pem'), loaded.certPem)
    writeFileSync(join(values.out, 'key.pem'), loaded.keyPem, { mode: 0o600 })
    writeFileSync(join(values.out, 'roots.pem'), loaded.extra.map((cert) => cert.toString()).join(''))
    process.stdout.write(`wrote ${join(values.out, 'cert.pem')} (leaf + ${loaded.chain.length} intermediate(s)), key.pem, roots.pem\n`)
    return 0
  }
  if (action === 'lab' && typeof values.names === 'string' && typeof values.out === 'string') {
    const names = values.names.split(',').map((name) => name.trim()).filter(Boolean)
    const pki = await createLabPki(names)
    mkdirSync(values.out, { recursive: true })
    writeFileSync(join(values.out, 'root-ca.pem'), pki.root.certPem)
    writeFileSync(join(values.out, 'chain.pem'), pki.intermediate.certPem)
    writeFileSync(join(values.out, 'server.crt'), pki.server.certPem)
    writeFileSync(join(values.out, 'server.key'), pki.server.keyPem, { mode: 0o600 })
    writeFileSync(join(values.out, 'server.pfx'), toPfx(pki.server, [pki.intermediate], 'casgate'), { mode: 0o600 })
    process.stdout.write(`lab CA and a certificate for ${names.join(', ')} written to ${values.out}\n`)
    return 0
  }
  process.stderr.write(CERTS_USAGE + '\n')
  return 1
}
