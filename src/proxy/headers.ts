import type { IncomingHttpHeaders } from 'node:http'
import { BlockList, isIP } from 'node:net'
import { isFrontEndOnlyHeader } from '../rules/front-end-headers.js'

// Hop-by-hop headers belong to one connection and are never forwarded (RFC 9110 §7.6.1), nor
// are the headers a Connection header names. Proxy-Authorization is for a proxy, never for
// Exchange. Expect: 100-continue (curl over 1 MB, .NET clients on every POST) was already
// answered by casgate's own HTTP server, and undici refuses to send it.
const requestHopByHop = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'expect'])
const responseHopByHop = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'trailer', 'transfer-encoding', 'upgrade'])
const forwardingHeaders = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'forwarded'])

/** TrustedProxies says whether a client address is a proxy whose forwarding headers count. */
export type TrustedProxies = (address: string) => boolean

/** trustedProxies builds the check once; with no entries (the usual case) it costs nothing per request. */
export function trustedProxies (list: BlockList, entries: number): TrustedProxies {
  if (entries === 0) return () => false
  return (address) => {
    // Node reports IPv4 clients of a dual-stack listener as ::ffff:a.b.c.d.
    if (address.startsWith('::ffff:') && isIP(address.slice(7)) === 4) return list.check(address.slice(7), 'ipv4')
    return list.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4')
  }
}

/**
 * clientAddress is the address of the client behind the connection: the socket's peer, or, when
 * that peer is a trusted proxy, the last address its X-Forwarded-For names.
 */
export function clientAddress (request: { socket: { remoteAddress?: string | undefined }, headers: IncomingHttpHeaders }, trusted: TrustedProxies): string | undefined {
  const peer = request.socket.remoteAddress
  if (peer === undefined || !trusted(peer)) return peer
  const header = request.headers['x-forwarded-for']
  if (header === undefined) return peer
  // Node joins repeated X-Forwarded-For lines with ", "; the last entry is the trusted proxy's.
  const forwarded = String(header)
  const last = forwarded.slice(forwarded.lastIndexOf(',') + 1).trim()
  return last === '' ? peer : last
}

// Headers that frame or address the request are end-to-end whatever a Connection header says:
// "Connection: content-length" would otherwise drop the length of a body that is still relayed,
// and Exchange would read that body as the next request.
const neverHopByHop = new Set(['content-length', 'host', 'authorization', 'cookie'])

function connectionTokens (rawHeaders: readonly string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.length === 10 && rawHeaders[i]!.toLowerCase() === 'connection') {
      tokens ??= new Set()
      for (const token of rawHeaders[i + 1]!.split(',')) {
        const name = token.trim().toLowerCase()
        if (!neverHopByHop.has(name)) tokens.add(name)
      }
    }
  }
  return tokens
}

/**
 * upstreamRequestHeaders builds the flat [name, value, …] list sent to the backend from the
 * client's raw headers, in one pass: `host` is the client's Host as the guard normalised it (or,
 * for an HTTP/1.0 request without one, the name the client connected to — never the backend's
 * own address, which undici would fill in), hop-by-hop headers go, so do the headers only
 * Exchange's own front end may set (rules/front-end-headers.ts) and names with '_', and X-Forwarded-For/-Proto/-Host
 * describe the client. Forwarding headers the client sent count only from a trusted proxy. No
 * Via is added: IIS re-authenticates NTLM on every request that carries one.
 */
export function upstreamRequestHeaders (rawHeaders: readonly string[], clientAddress: string | undefined, trusted: TrustedProxies, host: string): string[] {
  const named = connectionTokens(rawHeaders)
  const trustClient = clientAddress !== undefined && trusted(clientAddress)
  const out: string[] = ['host', host]
  let forwardedFor: string | undefined
  let forwardedProto: string | undefined
  let forwardedHost: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!
    const value = rawHeaders[i + 1]!
    const lower = name.toLowerCase()
    // IIS reads '-' and '_' alike in server variables (HTTP_X_FORWARDED_FOR): X_Forwarded_For or
    // X_CommonAccessToken would pass every check of casgate's and still be the header behind it.
    // No Exchange client sends an underscore; they go, as nginx drops them by default.
    if (name.includes('_') || requestHopByHop.has(lower) || named?.has(lower) || lower === 'host' || isFrontEndOnlyHeader(lower)) continue
    if (forwardingHeaders.has(lower)) {
      if (!trustClient) continue
      if (lower === 'x-forwarded-for') { forwardedFor = forwardedFor ? `${forwardedFor}, ${value}` : value; continue }
      if (lower === 'x-forwarded-proto') { forwardedProto ??= value; continue }
      if (lower === 'x-forwarded-host') { forwardedHost ??= value; continue }
    }
    out.push(name, value)
  }
  if (clientAddress !== undefined) {
    out.push('x-forwarded-for', forwardedFor ? `${forwardedFor}, ${clientAddress}` : clientAddress)
  } else if (forwardedFor) {
    out.push('x-forwarded-for', forwardedFor)
  }
  out.push('x-forwarded-proto', forwardedProto ?? 'https')
  out.push('x-forwarded-host', forwardedHost ?? host)
  return out
}

/** replaceHeader sets `name` (lowercase) in a flat header list, dropping every other spelling of it. */
export function replaceHeader (headers: string[], name: string, value: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.toLowerCase() === name) headers.splice(i, 2)
  }
  headers.push(name, value)
}

/**
 * clientResponseHeaders turns the backend's response headers into the flat list written to the
 * client, without hop-by-hop headers or those the backend's Connection header names.
 */
export function clientResponseHeaders (headers: IncomingHttpHeaders): string[] {
  const connection = headers.connection
  const named = connection === undefined ? undefined : new Set(String(connection).split(',').map((t) => t.trim().toLowerCase()))
  const out: string[] = []
  for (const name in headers) {
    if (responseHopByHop.has(name) || named?.has(name)) continue
    const value = headers[name]
    if (value === undefined) continue
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) out.push(name, value[i]!)
    } else {
      out.push(name, value)
    }
  }
  return out
}
