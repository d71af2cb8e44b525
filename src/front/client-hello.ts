// Reads a TLS ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) without consuming it, to learn
// the SNI host name (RFC 6066 §3) before deciding whether to terminate or pass the connection
// through. A ClientHello may be split over several TCP segments and over several TLS records;
// the maintained npm parser fails on the latter, so this one gathers the whole handshake message
// first, under a size cap.

const RECORD_HEADER = 5
const HANDSHAKE = 22
const CLIENT_HELLO = 1
const EXT_SERVER_NAME = 0
const EXT_ALPN = 16

/** MAX_CLIENT_HELLO caps what is buffered: post-quantum key shares make hellos ~2 KB, not 64. */
export const MAX_CLIENT_HELLO = 16 * 1024
// The hello's records may take a few headers more than the message itself.
const MAX_WIRE = MAX_CLIENT_HELLO + RECORD_HEADER * 4

/** ClientHelloInfo is what the front door needs from a ClientHello. */
export interface ClientHelloInfo {
  /** SNI host name, lowercased; undefined when the client sent none. */
  serverName: string | undefined
  alpn: string[]
}

/** HelloResult is the state of a hello being read: more bytes needed, done, or refused. */
export type HelloResult =
  | { state: 'partial' }
  | { state: 'complete', hello: ClientHelloInfo }
  | { state: 'invalid', reason: string }

const PARTIAL: HelloResult = { state: 'partial' }

function invalid (reason: string): HelloResult {
  return { state: 'invalid', reason }
}

/**
 * parseClientHello looks at the bytes received so far. It never throws: anything that is not
 * a well-formed ClientHello within MAX_CLIENT_HELLO bytes is 'invalid' with a reason.
 */
export function parseClientHello (data: Buffer): HelloResult {
  // Gather the handshake bytes out of as many records as it takes.
  const fragments: Buffer[] = []
  let gathered = 0
  let needed = -1
  let offset = 0
  while (needed < 0 || gathered < needed) {
    // Too large only when no further record could fit: judged by where the next record starts,
    // not by how many bytes have arrived, so that the verdict never depends on how TCP cut them.
    if (data.length < offset + RECORD_HEADER) return offset + RECORD_HEADER + 1 > MAX_WIRE ? invalid('hello too large') : PARTIAL
    if (data[offset] !== HANDSHAKE) return invalid(offset === 0 ? 'not a TLS handshake' : 'hello interleaved with another record type')
    if (data[offset + 1] !== 3) return invalid('unknown record version')
    const length = data.readUInt16BE(offset + 3)
    if (length === 0 || length > 16384) return invalid('bad record length')
    if (offset + RECORD_HEADER + length > MAX_WIRE) return invalid('hello too large')
    if (data.length < offset + RECORD_HEADER + length) return PARTIAL
    fragments.push(data.subarray(offset + RECORD_HEADER, offset + RECORD_HEADER + length))
    gathered += length
    offset += RECORD_HEADER + length
    if (needed < 0 && gathered >= 4) {
      const head = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments)
      if (head[0] !== CLIENT_HELLO) return invalid('first handshake message is not a ClientHello')
      needed = 4 + head.readUIntBE(1, 3)
      if (needed > MAX_CLIENT_HELLO) return invalid('hello too large')
    }
  }
  const message = fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments)
  try {
    return { state: 'complete', hello: readHelloBody(message.subarray(4, needed)) }
  } catch (err) {
    return invalid((err as Error).message)
  }
}

class Reader {
  offset = 0
  constructor (readonly buffer: Buffer) {}

  need (count: number): void {
    if (this.offset + count > this.buffer.length) throw new Error('truncated ClientHello')
  }

  u8 (): number { this.need(1); return this.buffer[this.offset++]! }
  u16 (): number { this.need(2); const v = this.buffer.readUInt16BE(this.offset); this.offset += 2; return v }
  bytes (count: number): Buffer { this.need(count); const v = this.buffer.subarray(this.offset, this.offset + count); this.offset += count; return v }
  skip (count: number): void { this.need(count); this.offset += count }
  get left (): number { return this.buffer.length - this.offset }
}

function readHelloBody (body: Buffer): ClientHelloInfo {
  const r = new Reader(body)
  r.skip(2) // legacy_version
  r.skip(32) // random
  r.skip(r.u8()) // legacy_session_id
  r.skip(r.u16()) // cipher_suites
  r.skip(r.u8()) // legacy_compression_methods
  const info: ClientHelloInfo = { serverName: undefined, alpn: [] }
  if (r.left === 0) return info // SSLv3-era hello without extensions
  const extensions = new Reader(r.bytes(r.u16()))
  let serverNames = 0
  while (extensions.left > 0) {
    const type = extensions.u16()
    const data = new Reader(extensions.bytes(extensions.u16()))
    // One server_name extension (RFC 8446 §4.2) with one host_name (RFC 6066 §3): OpenSSL
    // refuses a second of either, and a passthrough backend might read the other one.
    if (type === EXT_SERVER_NAME && ++serverNames > 1) throw new Error('more than one server_name extension')
    if (type === EXT_SERVER_NAME && data.left > 0) {
      const list = new Reader(data.bytes(data.u16()))
      while (list.left > 0) {
        const nameType = list.u8()
        const name = list.bytes(list.u16())
        if (nameType === 0) {
          if (info.serverName !== undefined) throw new Error('more than one server name')
          // latin1, not ascii: Node's ascii decoding drops the high bit, reading 0xED 'ail' as 'mail'.
          const text = name.toString('latin1')
          // RFC 6066: a DNS host name (a trailing dot is dropped later, host-names.ts); refuse
          // anything else, NUL and non-ASCII bytes included.
          if (!/^[A-Za-z0-9._-]{1,253}$/.test(text)) throw new Error('malformed server name')
          info.serverName = text.toLowerCase()
        }
      }
    } else if (type === EXT_ALPN && data.left > 0) {
      const list = new Reader(data.bytes(data.u16()))
      while (list.left > 0) info.alpn.push(list.bytes(list.u8()).toString('ascii'))
    }
  }
  return info
}
