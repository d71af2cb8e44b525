import { constants, randomBytes } from 'node:crypto'
import { createSecureContext, type SecureContext } from 'node:tls'
import { HostNameTable } from '../util/host-names.js'
import type { LoadedCertificate } from '../certificates/certificate.js'

/** TLS_MIN_VERSION is the floor for client connections: TLS 1.0/1.1 are off in Exchange too. */
export const TLS_MIN_VERSION = 'TLSv1.2'

/**
 * CLIENT_TLS_POLICY is what every client-facing context and TLS server is built with. Beyond the
 * version floor, it refuses TLS 1.2 renegotiation: each client-initiated renegotiation costs the
 * server a full handshake for a few bytes of the client's (a CPU exhaustion lever, CVE-2011-1473),
 * and casgate never needs one (client certificates are asked for in the first handshake). Node's
 * own guard only allows 3 per 10 minutes per connection (tls.CLIENT_RENEG_LIMIT), so OpenSSL is
 * told to refuse them all (SSL_OP_NO_RENEGOTIATION: a no_renegotiation alert, RFC 5246 §7.2.2).
 * OpenSSL takes a connection's options from the server's default context when the connection
 * starts, not from the one SNI selects later: the TLS servers must carry this policy, on every
 * certificate reload too (setSecureContext starts from nothing); the SNI contexts carry it as well
 * so that no context built here lacks it. TLS 1.3 has no renegotiation at all.
 */
export const CLIENT_TLS_POLICY = {
  minVersion: TLS_MIN_VERSION,
  secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
  ticketKeys: ticketKeys()
} as const

/**
 * CERTIFICATE_TLS_POLICY is CLIENT_TLS_POLICY for what serves hosts that require a client
 * certificate: no session tickets, and keys of its own (a ticket of another name never opens).
 */
export function certificateTlsPolicy (): typeof CLIENT_TLS_POLICY & { sessionIdContext: string } {
  return { ...CLIENT_TLS_POLICY, secureOptions: CLIENT_TLS_POLICY.secureOptions | constants.SSL_OP_NO_TICKET, ticketKeys: randomBytes(48), sessionIdContext: 'casgate-client-certificate' }
}

/**
 * ticketKeys are the keys session tickets are sealed with (48 bytes: name, HMAC and AES keys),
 * one set for every context of the process. Each context would otherwise make its own, and a
 * TLS 1.3 ticket, which is opened with the context SNI selected, never matched: every Outlook,
 * browser and phone reconnection paid a full handshake. The workers of a cluster share the
 * primary's (CASGATE_TLS_TICKET_KEYS), so a client resumes whichever worker takes it. They live
 * as long as the process, like nginx's without ssl_session_ticket_key.
 */
function ticketKeys (): Buffer {
  const shared = process.env.CASGATE_TLS_TICKET_KEYS
  return shared !== undefined && /^[0-9a-f]{96}$/.test(shared) ? Buffer.from(shared, 'hex') : randomBytes(48)
}

/** CertifiedHost is the part of a host block the TLS layer needs. */
export interface CertifiedHost {
  names: readonly string[]
  certificate: LoadedCertificate
  /** CA (and CRL) that client certificates of this host are checked against, when it requires them. */
  clientCertificate?: { ca: string, crl: string | undefined } | undefined
}

/**
 * secureContextFor builds the context that serves a certificate with its full chain; for a host
 * that requires client certificates, the CA and CRL they are verified against (OpenSSL takes
 * them from the context SNI selected, and names the CA in its certificate request).
 */
export function secureContextFor (certificate: LoadedCertificate, client?: CertifiedHost['clientCertificate']): SecureContext {
  return createSecureContext({
    cert: certificate.certPem,
    key: certificate.keyPem,
    ...CLIENT_TLS_POLICY,
    ...(client
      ? {
          ca: client.ca,
          ...(client.crl ? { crl: client.crl } : {}),
          // No resumption where a client certificate is the second factor: every connection shows
          // its certificate again and meets the CRL as it is now.
          ...certificateTlsPolicy()
        }
      : {})
  })
}

/**
 * SniContexts picks the certificate for a TLS handshake by server name: exact names first, then
 * `*.domain` wildcards (one label, as RFC 6125 §6.4.3 allows). A handshake without SNI, or with
 * a name no host lists, gets the fallback host's certificate.
 */
export class SniContexts {
  #byName = new HostNameTable<SecureContext>()
  #fallback: SecureContext | undefined
  /** Certificate served when the client names no known host; the TLS server's own default. */
  readonly fallbackCertificate: LoadedCertificate

  /** `fallback` serves handshakes without a known name (default: the first host). */
  constructor (hosts: readonly CertifiedHost[], fallback: CertifiedHost | undefined = hosts[0]) {
    if (hosts.length === 0 || fallback === undefined) throw new TypeError('SniContexts needs at least one host')
    for (const host of hosts) {
      const context = secureContextFor(host.certificate, host.clientCertificate)
      if (host === fallback) this.#fallback = context
      for (const name of host.names) this.#byName.set(name, context)
    }
    this.#fallback ??= secureContextFor(fallback.certificate, fallback.clientCertificate)
    this.fallbackCertificate = fallback.certificate
  }

  /** lookup returns the context for a server name (undefined or unknown: the default). */
  lookup (servername: string | undefined): SecureContext {
    if (!servername) return this.#fallback!
    return this.#byName.get(servername) ?? this.#fallback!
  }

  /** callback is node:tls's SNICallback. */
  readonly callback = (servername: string, done: (err: Error | null, context?: SecureContext) => void): void => {
    done(null, this.lookup(servername))
  }
}
