import type { IncomingHttpHeaders } from 'node:http'

/**
 * declaresBody says whether a request's headers announce a body (RFC 9112 §6.3): a
 * Transfer-Encoding, or a Content-Length other than 0.
 */
export function declaresBody (headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length']
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}
