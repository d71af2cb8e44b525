import type { Inspection } from './peek.js'

/** RequestLine is the first line of an HTTP/1.x request. */
export interface RequestLine {
  method: string
  target: string
}

/** MAX_REQUEST_LINE bounds the peek; IIS's own limit on a URL is 16 KB. */
export const MAX_REQUEST_LINE = 16 * 1024

/** RPC_METHODS are Outlook Anywhere's (RPC over HTTP) methods, which Node's HTTP parser refuses. */
export const RPC_METHODS = new Set(['RPC_IN_DATA', 'RPC_OUT_DATA'])

/**
 * inspectRequestLine reads `METHOD SP request-target SP HTTP/1.x CRLF` (RFC 9112 §3). Only the
 * method decides anything here; everything else is left to the HTTP parser or the backend.
 */
export function inspectRequestLine (bytes: Buffer): Inspection<RequestLine> {
  const end = bytes.indexOf('\r\n')
  if (end === -1) {
    // Without a line end yet, a method can still be refused early when it is not a token.
    const space = bytes.indexOf(32)
    const head = space === -1 ? bytes : bytes.subarray(0, space)
    return /^[A-Za-z_-]*$/.test(head.toString('latin1')) ? { state: 'partial' } : { state: 'invalid', reason: 'not an HTTP request' }
  }
  const line = bytes.subarray(0, end).toString('latin1')
  const match = /^([A-Za-z_-]+) (\S+) HTTP\/1\.[01]$/.exec(line)
  if (!match) return { state: 'invalid', reason: 'not an HTTP/1 request line' }
  return { state: 'complete', value: { method: match[1]!, target: match[2]! } }
}
