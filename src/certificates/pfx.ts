import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import forge from 'node-forge'
import { CasgateError } from '../errors/errors.js'
import { assembleCertificate, type LoadedCertificate } from './certificate.js'

// node-forge, not node:tls's `pfx` option: OpenSSL 3 rejects the RC2/3DES bundles that
// Windows and older Exchange exports still produce, and we need the bags one by one anyway.

function derOf (asn1: forge.asn1.Asn1): Buffer {
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary')
}

/** loadPfx opens a PKCS#12 bundle and returns its key, leaf and ordered chain. */
export function loadPfx (data: Buffer, passphrase = ''): LoadedCertificate {
  let p12: forge.pkcs12.Pkcs12Pfx
  try {
    const asn1 = forge.asn1.fromDer(forge.util.createBuffer(data.toString('binary')))
    p12 = forge.pkcs12.pkcs12FromAsn1(asn1, false, passphrase)
  } catch (err) {
    const text = String((err as Error)?.message ?? err)
    const reason = /mac|password|invalid|decrypt/i.test(text)
      ? 'cannot open the PFX: wrong passphrase, or the file is damaged'
      : `cannot parse the PFX (${text})`
    throw new CasgateError('CASGATE_ERR_CERT_LOAD', [reason], { cause: err })
  }

  const keys: KeyObject[] = []
  for (const bagType of [forge.pki.oids.pkcs8ShroudedKeyBag!, forge.pki.oids.keyBag!]) {
    for (const bag of p12.getBags({ bagType })[bagType] ?? []) {
      if (bag.key) {
        keys.push(createPrivateKey(forge.pki.privateKeyToPem(bag.key)))
      } else if (bag.asn1) {
        // forge decodes RSA keys only; EC keys come back as their PKCS#8 structure.
        keys.push(createPrivateKey({ key: derOf(bag.asn1), format: 'der', type: 'pkcs8' }))
      }
    }
  }
  const certificates: X509Certificate[] = []
  for (const bag of p12.getBags({ bagType: forge.pki.oids.certBag! })[forge.pki.oids.certBag!] ?? []) {
    if (bag.cert) certificates.push(new X509Certificate(derOf(forge.pki.certificateToAsn1(bag.cert))))
    else if (bag.asn1) certificates.push(new X509Certificate(derOf(bag.asn1)))
  }
  if (keys.length === 0) throw new CasgateError('CASGATE_ERR_CERT_LOAD', ['the PFX holds no private key'])
  if (keys.length > 1) throw new CasgateError('CASGATE_ERR_CERT_LOAD', [`the PFX holds ${keys.length} private keys; export one certificate with its key`])
  return assembleCertificate(keys[0]!, certificates)
}
