import type { IncomingHttpHeaders } from 'node:http'
import type { Inspection } from './peek.js'

// casgate's own reader of an HTTP/1.1 request head, for the requests Node's parser refuses
// (Outlook Anywhere's RPC_IN_DATA / RPC_OUT_DATA). Deliberately stricter than RFC 9112 asks:
// whatever it accepts, it hands on re-serialised from what it parsed, so anything two parsers
// could read differently (bare LF, obs-fold, spaces before the colon, two lengths,
// Transfer-Encoding next to Content-Length) is refused rather than interpreted.

/** RequestHead is one parsed request head. */
export interface RequestHead {
  method: string
  target: string
  /** Flat [name, value, …] in arrival order, names as sent, values trimmed. */
  rawHeaders: string[]
  /** Lower-case names; repeated ones joined with ', ' (cookie: '; '), as Node does. */
  headers: IncomingHttpHeaders
  /** The body's length: Content-Length, or 0 without one. */
  contentLength: number
  /** Bytes of the head, CRLFCRLF included: where the body starts in the buffer. */
  headLength: number
}

/**
 * MAX_CONTENT_LENGTH bounds an RPC channel: Outlook opens them at 1 GiB (the RPC proxy's channel
 * lifetime); anything over 2^31-1 relies on every hop reading a length past 32 bits alike.
 */
export const MAX_CONTENT_LENGTH = 2 ** 31 - 1

const token = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
// field-value: visible ASCII, obs-text, spaces and tabs inside (RFC 9110 §5.5); no CR, LF, NUL.
const fieldValue = /^[\t\x20-\x7e\x80-\xff]*$/
const requestLine = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\/[\x21-\x7e]*) HTTP\/1\.([01])$/

function add (headers: IncomingHttpHeaders, name: string, value: string): void {
  const previous = headers[name]
  // set-cookie is a list from its first line on, as in Node: a second one used to call push on
  // a string and throw out of the RPC channel's data handler.
  if (name === 'set-cookie') {
    if (previous === undefined) headers[name] = [value]
    else (previous as string[]).push(value)
  } else if (previous === undefined) headers[name] = value
  else headers[name] = `${previous as string}${name === 'cookie' ? '; ' : ', '}${value}`
}

/** bareLf says whether `bytes` hold an LF not preceded by CR. */
function bareLf (bytes: Buffer): boolean {
  for (let lf = bytes.indexOf(10); lf !== -1; lf = bytes.indexOf(10, lf + 1)) {
    if (lf === 0 || bytes[lf - 1] !== 13) return true
  }
  return false
}

/**
 * parseRequestHead reads one request head from the start of `bytes`: partial until CRLFCRLF
 * arrives, invalid (with a reason) for anything not strictly HTTP/1.1.
 */
export function parseRequestHead (bytes: Buffer, maxHeaderBytes: number): Inspection<RequestHead> {
  const end = bytes.indexOf('\r\n\r\n')
  if (end === -1) {
    if (bytes.length > maxHeaderBytes) return { state: 'invalid', reason: 'headers too large' }
    // A bare LF before the head is complete is refused now, not after 64 KiB of waiting; any
    // of them, not only the first (…\r\nHost: a\n\r\n would never complete).
    if (bareLf(bytes)) return { state: 'invalid', reason: 'bare LF in request head' }
    return { state: 'partial' }
  }
  if (end + 4 > maxHeaderBytes) return { state: 'invalid', reason: 'headers too large' }
  const lines = bytes.subarray(0, end).toString('latin1').split('\r\n')
  const line = requestLine.exec(lines[0]!)
  if (!line) return { state: 'invalid', reason: 'malformed request line' }
  if (line[3] !== '1') return { state: 'invalid', reason: 'RPC over HTTP needs HTTP/1.1' }
  const rawHeaders: string[] = []
  // No prototype, as in Node: a header named constructor or __proto__ is a header like any other.
  const headers: IncomingHttpHeaders = Object.create(null)
  let contentLength: number | undefined
  for (let i = 1; i < lines.length; i++) {
    const text = lines[i]!
    if (text.includes('\n')) return { state: 'invalid', reason: 'bare LF in request head' }
    const colon = text.indexOf(':')
    if (colon <= 0) return { state: 'invalid', reason: text.length > 0 && (text[0] === ' ' || text[0] === '\t') ? 'obsolete line folding' : 'malformed header line' }
    const name = text.slice(0, colon)
    if (!token.test(name)) return { state: 'invalid', reason: 'malformed header name' }
    const value = text.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')
    if (!fieldValue.test(value)) return { state: 'invalid', reason: 'control character in header value' }
    const lower = name.toLowerCase()
    if (lower === 'transfer-encoding') return { state: 'invalid', reason: 'Transfer-Encoding on an RPC channel' }
    if (lower === 'content-length') {
      if (contentLength !== undefined) return { state: 'invalid', reason: 'more than one content-length header' }
      if (!/^[0-9]{1,12}$/.test(value) || Number(value) > MAX_CONTENT_LENGTH) return { state: 'invalid', reason: 'bad Content-Length' }
      contentLength = Number(value)
    }
    rawHeaders.push(name, value)
    add(headers, lower, value)
  }
  return { state: 'complete', value: { method: line[1]!, target: line[2]!, rawHeaders, headers, contentLength: contentLength ?? 0, headLength: end + 4 } }
}
