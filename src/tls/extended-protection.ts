import type { X509Certificate } from 'node:crypto'
import { isIP } from 'node:net'
import { connect } from 'node:tls'
import type { GatewayConfig, TerminatedHost } from '../config/load.js'
import type { ConfigIssue } from '../errors/errors.js'

// Exchange Extended Protection binds NTLM/Negotiate to the TLS channel: the client sends the
// hash of the certificate it saw (RFC 5929 tls-server-end-point) and the server compares it with
// the hash of its own. Through a re-encrypting proxy that only works when the proxy serves the
// very same certificate (same DER, not just the same name or key) as the Exchange servers.

/**
 * extendedProtectionByVdir is Microsoft's per-vdir setting once Extended Protection is enabled
 * (Exchange Server 2019 CU14 defaults, "Configure Windows Extended Protection in Exchange Server").
 */
export const extendedProtectionByVdir: Record<string, 'required' | 'accept' | 'off'> = {
  '/owa': 'required',
  '/ecp': 'required',
  '/mapi': 'required',
  '/rpc': 'required',
  '/powershell': 'required',
  '/EWS': 'accept',
  '/Microsoft-Server-ActiveSync': 'accept',
  '/oab': 'accept',
  '/autodiscover': 'off'
}

/** backendLeaf reads the certificate a backend serves, whoever signed it. */
export function backendLeaf (url: URL, serverName: string | undefined, timeoutMs: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '')
    const socket = connect({
      host,
      port: Number(url.port || 443),
      rejectUnauthorized: false, // reading, not trusting: verification is the traffic's business
      ALPNProtocols: ['http/1.1'],
      ...(serverName ? { servername: serverName } : {})
    }, () => {
      // One call only: a second getPeerX509Certificate() on a client socket returns undefined.
      const leaf = socket.getPeerX509Certificate()
      socket.destroy()
      if (leaf) resolve(leaf)
      else reject(new Error('no certificate presented'))
    })
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)))
    socket.once('error', reject)
  })
}

function affectedVdirs (host: TerminatedHost): { required: string[], accept: string[] } {
  const published = host.vdirs.map((vdir) => vdir.path)
  return {
    required: published.filter((path) => extendedProtectionByVdir[path] === 'required'),
    accept: published.filter((path) => extendedProtectionByVdir[path] === 'accept')
  }
}

/**
 * checkExtendedProtection compares, for every re-encrypting host with Extended Protection on, the
 * certificate casgate serves with the one each server of the pools it publishes serves (a host is
 * compared with its own pools only). A mismatch is an error naming the
 * backend, both thumbprints, the vdirs that will break and the fix; an unreachable backend is a
 * warning (it may simply be down now).
 */
export async function checkExtendedProtection (config: GatewayConfig, timeoutMs = 5_000): Promise<{ errors: ConfigIssue[], warnings: ConfigIssue[] }> {
  const errors: ConfigIssue[] = []
  const warnings: ConfigIssue[] = []
  const checks: Array<Promise<void>> = []
  config.hosts.forEach((host, i) => {
    if (host.mode !== 'reencrypt' || !host.extendedProtection) return
    const { required, accept } = affectedVdirs(host)
    const pools = [...new Set(host.vdirs.map((vdir) => vdir.pool))].map((name) => config.pools.get(name)!)
    const front = host.certificate.leaf
    const path = `hosts[${i}].certificate`
    for (const pool of pools) {
      for (const server of pool.servers) {
        const serverName = pool.serverName ?? (isIP(server.hostname) === 0 ? server.hostname : host.names.find((n) => !n.startsWith('*')))
        checks.push(backendLeaf(server, serverName, timeoutMs).then((leaf) => {
          if (leaf.fingerprint256 === front.fingerprint256) return
          errors.push({
            path,
            message: `backend ${server.host} serves a different certificate than casgate (backend SHA-256 ${leaf.fingerprint256}, casgate ${front.fingerprint256}): with Extended Protection, logons fail on ${required.join(', ') || 'no published Required vdir'} (Required) and, for clients that send channel binding, on ${accept.join(', ') || 'none'} (Accept) — typically OWA forms still work while Outlook and phones prompt forever`,
            fix: `serve the very certificate the Exchange servers have (export it with its key as PFX and use it here), or bind casgate's certificate on ${server.hostname}; only if Extended Protection is off on Exchange, set hosts[${i}].extendedProtection: false`
          })
        }, (err: Error) => {
          warnings.push({ path, message: `could not read the certificate of backend ${server.host} to compare for Extended Protection (${err.message})`, fix: 'check that the server is up and serves TLS; casgate check will compare once it answers' })
        }))
      }
    }
  })
  await Promise.all(checks)
  return { errors, warnings }
}
