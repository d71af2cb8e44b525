import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { CasgateError } from '../errors/errors.js'
import type { RequestHead } from '../front/request-head.js'
import { RPC_METHODS } from '../front/request-line.js'
import type { RequestGuard } from '../guard/request-guard.js'
import type { Publications } from '../routing/publications.js'
import { removeCookies } from '../util/cookies.js'
import { upstreamRequestHeaders, type TrustedProxies } from './headers.js'
import type { RoutedVdir } from './routed-vdir.js'

// What an Outlook Anywhere request head must be to go on (rpc-channel.ts reads them), and the
// head casgate writes upstream in its place.

/** RpcVerdict is a head judged: on to /rpc with the Host to send, or refused with the answer and why. */
export type RpcVerdict =
  | { ok: true, vdir: RoutedVdir, host: string }
  | { ok: false, error: CasgateError, reason: string }

/**
 * judgeRpcHead applies every check of the HTTP path to one RPC head: an RPC method, a Host, the
 * request guard (target, duplicates, rules), routing to /rpc and nothing else, and the client
 * certificate verdict of the host named.
 */
export function judgeRpcHead (head: RequestHead, client: TLSSocket, guard: RequestGuard<RoutedVdir>, publications: Publications<RoutedVdir>, hostCheck: (socket: Socket, hostName: string | undefined) => CasgateError | undefined): RpcVerdict {
  if (!RPC_METHODS.has(head.method)) return { ok: false, error: new CasgateError('CASGATE_ERR_METHOD_NOT_ALLOWED', [head.method, 'an RPC over HTTP connection']), reason: 'not an RPC method' }
  if (head.headers.host === undefined) return { ok: false, error: new CasgateError('CASGATE_ERR_BAD_REQUEST', ['no Host header']), reason: 'no host' }
  const publication = publications.forServerName(client.servername)
  const verdict = guard.check({ method: head.method, target: head.target, rawHeaders: head.rawHeaders, headers: head.headers, client: client.remoteAddress }, publication.vdirs)
  if (!verdict.ok) return { ok: false, error: verdict.error, reason: verdict.reason }
  if (publications.misdirected(publication, verdict.hostName)) return { ok: false, error: new CasgateError('CASGATE_ERR_MISDIRECTED', [verdict.host]), reason: 'host of another connection' }
  const vdir = verdict.vdir
  if (vdir === undefined || vdir.path !== '/rpc') return { ok: false, error: new CasgateError('CASGATE_ERR_METHOD_NOT_ALLOWED', [head.method, vdir ? vdir.path : 'this path']), reason: 'rpc outside /rpc' }
  const certificate = hostCheck(client, verdict.host?.replace(/:\d+$/, ''))
  if (certificate !== undefined) return { ok: false, error: certificate, reason: 'client certificate' }
  return { ok: true, vdir, host: verdict.host! }
}

/**
 * upstreamRpcHead is the head sent to Exchange: the forwarding headers, casgate's own cookies
 * removed, and the Content-Length casgate relays (whatever else the client said). `close` passes
 * on a client's Connection: close — the upstream connection is this client connection's alone.
 */
export function upstreamRpcHead (head: RequestHead, client: string | undefined, trusted: TrustedProxies, host: string, ownCookies: readonly string[], close: boolean): string {
  const headers = upstreamRequestHeaders(head.rawHeaders, client, trusted, host)
  removeCookies(headers, ownCookies)
  for (let i = headers.length - 2; i >= 0; i -= 2) if (headers[i]!.toLowerCase() === 'content-length') headers.splice(i, 2)
  headers.push('content-length', String(head.contentLength))
  if (close) headers.push('connection', 'close')
  let text = `${head.method} ${head.target} HTTP/1.1\r\n`
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`
  return `${text}\r\n`
}
