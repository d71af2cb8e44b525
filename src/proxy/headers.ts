import type { IncomingHttpHeaders } from 'node:http'
import type { BlockList } from 'node:net'

// Hop-by-hop headers belong to one connection and are never forwarded (RFC 9110 §7.6.1).
// reply-from drops `connection` and what it names on the way in; the rest is ours to strip.
// Proxy-Authorization is for a proxy, never for Exchange. Expect: 100-continue (curl over
// 1 MB, .NET clients on every POST) was already answered by casgate's own HTTP server, and
// undici refuses to send it.
const requestHopByHop = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'expect']
const responseHopByHop = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'trailer', 'transfer-encoding', 'upgrade']
const forwardingHeaders = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'forwarded']

/** ClientInfo is what the front door knows about the client of a request. */
export interface ClientInfo {
  address: string | undefined
  /** Host header the client sent; Exchange builds its URLs (and OWA its redirects) from it. */
  host: string | undefined
}

/**
 * forwardRequestHeaders prepares headers for the backend: the client's Host is kept,
 * X-Forwarded-For/-Proto/-Host describe the client, and forwarding headers the client sent are
 * trusted only from a configured proxy. No Via is added: IIS re-authenticates NTLM on every
 * request that carries one.
 */
export function forwardRequestHeaders (headers: IncomingHttpHeaders, client: ClientInfo, trustProxy: BlockList): IncomingHttpHeaders {
  for (let i = 0; i < requestHopByHop.length; i++) {
    const name = requestHopByHop[i]!
    if (headers[name] !== undefined) delete headers[name]
  }
  const address = client.address
  const trusted = address !== undefined && isTrusted(trustProxy, address)
  if (trusted) {
    const earlier = headers['x-forwarded-for']
    headers['x-forwarded-for'] = earlier ? `${String(earlier)}, ${address}` : address
    headers['x-forwarded-proto'] ??= 'https'
    headers['x-forwarded-host'] ??= client.host
  } else {
    for (let i = 0; i < forwardingHeaders.length; i++) {
      const name = forwardingHeaders[i]!
      if (headers[name] !== undefined) delete headers[name]
    }
    if (address !== undefined) headers['x-forwarded-for'] = address
    headers['x-forwarded-proto'] = 'https'
    if (client.host !== undefined) headers['x-forwarded-host'] = client.host
  }
  if (client.host !== undefined) headers.host = client.host
  return headers
}

function isTrusted (list: BlockList, address: string): boolean {
  // Node reports IPv4 clients of a dual-stack listener as ::ffff:a.b.c.d.
  if (address.startsWith('::ffff:') && address.includes('.')) return list.check(address.slice(7), 'ipv4')
  return list.check(address, address.includes(':') ? 'ipv6' : 'ipv4')
}

/** stripResponseHopByHop removes hop-by-hop headers of the backend's response, and those its Connection names. */
export function stripResponseHopByHop (headers: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined> {
  const connection = headers.connection
  if (connection !== undefined) {
    for (const name of String(connection).split(',')) {
      const trimmed = name.trim().toLowerCase()
      if (trimmed) delete headers[trimmed]
    }
  }
  for (let i = 0; i < responseHopByHop.length; i++) {
    const name = responseHopByHop[i]!
    if (headers[name] !== undefined) delete headers[name]
  }
  return headers
}
