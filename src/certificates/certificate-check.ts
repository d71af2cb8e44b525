import { X509Certificate } from 'node:crypto'
import { rootCertificates } from 'node:tls'
import forge from 'node-forge'
import type { ConfigIssue } from '../errors/errors.js'
import type { LoadedCertificate } from './certificate.js'

// What field cases show breaks clients: a reverse proxy that does not send the intermediate
// (some phones fail), a published name missing from the certificate, an expired certificate.
// Checked before traffic flows, with the fix in the message.

/** EXPIRY_WARNING_DAYS is how early casgate starts warning about a certificate's end. */
export const EXPIRY_WARNING_DAYS = 30

const DAY_MS = 24 * 60 * 60_000
const SHA1_SIGNATURES = new Set(['1.2.840.113549.1.1.5', '1.2.840.10045.4.1', '1.2.840.10040.4.3', '1.3.14.3.2.29'])

let mozillaRoots: X509Certificate[] | undefined
function publicRoots (): X509Certificate[] {
  mozillaRoots ??= rootCertificates.map((pem) => new X509Certificate(pem))
  return mozillaRoots
}

function isSelfSigned (cert: X509Certificate): boolean {
  return cert.subject === cert.issuer && cert.checkIssued(cert)
}

/** signatureOid reads the signature algorithm of a certificate from its DER (RFC 5280 §4.1.1.2). */
export function signatureOid (cert: X509Certificate): string {
  const asn1 = forge.asn1.fromDer(forge.util.createBuffer(cert.raw.toString('binary')))
  const algorithm = (asn1.value as forge.asn1.Asn1[])[1]!
  return forge.asn1.derToOid((algorithm.value as forge.asn1.Asn1[])[0]!.value as string)
}

function oneLine (name: string): string {
  return name.split('\n').filter(Boolean).join(', ')
}

function dnsNames (cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '').split(', ').filter((entry) => entry.startsWith('DNS:')).map((entry) => entry.slice(4).toLowerCase())
}

/** CertificateCheckInput is one certificate as configured: what it must serve and where it came from. */
export interface CertificateCheckInput {
  /** Config path of the certificate block, e.g. hosts[0].certificate. */
  path: string
  certificate: LoadedCertificate
  /** Host names the certificate must cover. */
  names: readonly string[]
  /** Roots the clients trust besides the public ones (an internal CA). */
  extraRoots?: readonly X509Certificate[]
  now?: Date
}

/** CertificateFindings are what a check found: errors stop casgate, warnings are shown. */
export interface CertificateFindings {
  errors: ConfigIssue[]
  warnings: ConfigIssue[]
}

function checkChain (input: CertificateCheckInput, errors: ConfigIssue[]): void {
  const { leaf, chain, extra } = input.certificate
  const last = chain.at(-1) ?? leaf
  if (isSelfSigned(last)) return
  const roots = [...(input.extraRoots ?? []), ...extra.filter(isSelfSigned), ...publicRoots()]
  const anchored = roots.some((root) => root.subject === last.issuer && last.checkIssued(root) && last.verify(root.publicKey))
  if (anchored) return
  errors.push({
    path: `${input.path}.chain`,
    message: `issuer ${oneLine(last.issuer)} not found: the chain stops at ${oneLine(last.subject)}, and clients that lack the intermediate (some phones) will refuse it`,
    fix: 'add the issuing CA\'s intermediate certificate to chain (or export the PFX with "include all certificates in the path"); for an internal root, also name it in certificate.ca'
  })
}

function checkNames (input: CertificateCheckInput, errors: ConfigIssue[]): void {
  const { leaf } = input.certificate
  const sans = dnsNames(leaf)
  input.names.forEach((name) => {
    const lower = name.toLowerCase()
    const covered = lower.startsWith('*.') ? sans.includes(lower) : leaf.checkHost(lower) !== undefined
    if (!covered) {
      errors.push({
        path: `${input.path}`,
        message: `${name} is not covered by the certificate's subjectAltName (${sans.join(', ') || 'no DNS names'}); clients will refuse it`,
        fix: `reissue the certificate with ${name} (or a wildcard covering it) in subjectAltName, or serve ${name} from another host block`
      })
    }
  })
}

function checkDates (input: CertificateCheckInput, errors: ConfigIssue[], warnings: ConfigIssue[]): void {
  const now = (input.now ?? new Date()).getTime()
  for (const cert of [input.certificate.leaf, ...input.certificate.chain]) {
    const which = cert === input.certificate.leaf ? 'the certificate' : `intermediate ${oneLine(cert.subject)}`
    const end = new Date(cert.validTo).getTime()
    const start = new Date(cert.validFrom).getTime()
    if (end < now) {
      errors.push({ path: input.path, message: `${which} expired on ${new Date(end).toISOString().slice(0, 10)}`, fix: 'renew it and import the new PFX (the same certificate on the Exchange servers for Extended Protection)' })
    } else if (start > now) {
      errors.push({ path: input.path, message: `${which} is not valid before ${new Date(start).toISOString()}`, fix: 'check the clock of this machine, or wait until the certificate becomes valid' })
    } else if (end - now < EXPIRY_WARNING_DAYS * DAY_MS) {
      warnings.push({ path: input.path, message: `${which} expires in ${Math.ceil((end - now) / DAY_MS)} days (${new Date(end).toISOString().slice(0, 10)})`, fix: 'renew it now; casgate and the Exchange servers must serve the renewed certificate together' })
    }
  }
}

function checkStrength (input: CertificateCheckInput, errors: ConfigIssue[], warnings: ConfigIssue[]): void {
  const { leaf, chain } = input.certificate
  const details = leaf.publicKey.asymmetricKeyDetails
  const type = leaf.publicKey.asymmetricKeyType
  if (type === 'rsa' && (details?.modulusLength ?? 0) < 2048) {
    errors.push({ path: input.path, message: `the key is RSA-${details?.modulusLength}, which clients refuse`, fix: 'reissue with an RSA-2048 (or larger) or ECDSA P-256 key' })
  }
  for (const cert of [leaf, ...chain]) {
    if (SHA1_SIGNATURES.has(signatureOid(cert))) {
      warnings.push({ path: input.path, message: `${cert === leaf ? 'the certificate' : `intermediate ${oneLine(cert.subject)}`} is signed with SHA-1, which current clients reject`, fix: 'reissue it signed with SHA-256' })
    }
  }
}

/** checkCertificate runs every check on one configured certificate. */
export function checkCertificate (input: CertificateCheckInput): CertificateFindings {
  const errors: ConfigIssue[] = []
  const warnings: ConfigIssue[] = []
  checkChain(input, errors)
  checkNames(input, errors)
  checkDates(input, errors, warnings)
  checkStrength(input, errors, warnings)
  return { errors, warnings }
}
