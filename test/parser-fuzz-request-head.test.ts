import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Inspection } from '../src/front/peek.js'
import { MAX_CONTENT_LENGTH, parseRequestHead } from '../src/front/request-head.js'
import { inspectRequestLine } from '../src/front/request-line.js'
import { labClient, rawExchange, send, startEmulators, startLabGateway } from './helpers/lab.js'

// Bounded property-based fuzzing of casgate's own HTTP/1.1 readers (issue 12): the request-line
// peek and the RPC channel's request-head parser. Well-formed heads are generated from RFC 9112's
// grammar and must read back exactly; every cut must wait; the mutations two parsers could read
// differently (RFC 9112 §2.2 bare LF, §5.2 obs-fold, §6.1 Transfer-Encoding, §6.3 two lengths)
// must be refused.

const MAX_HEAD = 4_096

const latin1 = (text: string): Buffer => Buffer.from(text, 'latin1')
const char = (from: number, to: number): fc.Arbitrary<string> => fc.integer({ min: from, max: to }).map((c) => String.fromCharCode(c))

const token = fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,16}$/)
const headerName = fc.oneof(
  fc.constantFrom('Host', 'Cookie', 'cookie', 'Set-Cookie', 'set-cookie', 'Authorization', 'X-Forwarded-For', 'Accept', 'constructor', 'toString', '__proto__', 'hasOwnProperty'),
  token
).filter((name) => !['content-length', 'transfer-encoding'].includes(name.toLowerCase()))
// field-value (RFC 9110 §5.5): visible ASCII, obs-text, SP and HTAB inside; leading and trailing
// whitespace is not part of the value.
const valueChar = fc.oneof({ weight: 8, arbitrary: char(0x21, 0x7e) }, char(0x80, 0xff), fc.constantFrom(' ', '\t'))
const headerValue = fc.string({ unit: valueChar, maxLength: 40 })
const target = fc.string({ unit: char(0x21, 0x7e), maxLength: 60 }).map((rest) => `/${rest}`)
const contentLength = fc.oneof(fc.integer({ min: 0, max: 1_000_000 }).map(String), fc.constantFrom('0', '00', '007', String(MAX_CONTENT_LENGTH)))

interface Head { method: string, target: string, headers: Array<[string, string]>, contentLength: string | undefined, at: number }

const head: fc.Arbitrary<Head> = fc.record({
  method: fc.oneof(fc.constantFrom('RPC_IN_DATA', 'RPC_OUT_DATA', 'GET'), token),
  target,
  headers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 8 }),
  contentLength: fc.option(contentLength, { nil: undefined }),
  at: fc.nat(8)
})

function headerLines (h: Head): Array<[string, string]> {
  const lines = [...h.headers]
  if (h.contentLength !== undefined) lines.splice(h.at % (lines.length + 1), 0, ['Content-Length', h.contentLength])
  return lines
}

function serialise (h: Head, lines = headerLines(h)): string {
  return `${h.method} ${h.target} HTTP/1.1\r\n${lines.map(([name, value]) => `${name}:${value}\r\n`).join('')}\r\n`
}

const trim = (value: string): string => value.replace(/^[ \t]+|[ \t]+$/g, '')

/** expectedHeaders is Node's reading of a header list: lower-case names, set-cookie a list, repeats joined. */
function expectedHeaders (lines: Array<[string, string]>): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = Object.create(null)
  for (const [name, raw] of lines) {
    const lower = name.toLowerCase()
    const value = trim(raw)
    const previous = headers[lower]
    if (lower === 'set-cookie') headers[lower] = [...((previous as string[] | undefined) ?? []), value]
    else headers[lower] = previous === undefined ? value : `${previous as string}${lower === 'cookie' ? '; ' : ', '}${value}`
  }
  return headers
}

/** decidesOnce checks the peek contract on every prefix: once decided, longer prefixes decide alike. */
function decidesOnce<T> (bytes: Buffer, inspect: (bytes: Buffer) => Inspection<T>): Inspection<T> | undefined {
  let decided: Inspection<T> | undefined
  for (let cut = 0; cut <= bytes.length; cut++) {
    const result = inspect(bytes.subarray(0, cut))
    expect(['partial', 'complete', 'invalid']).toContain(result.state)
    if (decided !== undefined) expect(result.state, `cut ${cut} of ${JSON.stringify(bytes.toString('latin1'))}`).toBe(decided.state)
    if (decided?.state === 'complete') expect(result).toEqual(decided)
    if (decided === undefined && result.state !== 'partial') decided = result
  }
  return decided
}

describe('the request-line peek under fuzzing', () => {
  const method = fc.stringMatching(/^[A-Za-z_-]{1,20}$/)
  // \S in the line pattern: anything but JavaScript whitespace (which includes U+00A0).
  const lineTarget = fc.string({ unit: char(0, 0xff).filter((c) => !/\s/.test(c)), minLength: 1, maxLength: 60 })

  it('reads back the method and target of any well-formed request line, and waits at every earlier cut', () => {
    fc.assert(fc.property(method, lineTarget, fc.constantFrom('0', '1'), fc.uint8Array({ maxLength: 20 }), (m, t, minor, tail) => {
      const line = latin1(`${m} ${t} HTTP/1.${minor}\r\n`)
      expect(inspectRequestLine(Buffer.concat([line, tail]))).toEqual({ state: 'complete', value: { method: m, target: t } })
      for (let cut = 0; cut < line.length; cut++) expect(inspectRequestLine(line.subarray(0, cut)).state, `cut ${cut}`).toBe('partial')
    }), { numRuns: 2_000 })
  })

  it('never throws, and decides once, on arbitrary bytes and on mangled request lines', () => {
    const near = fc.tuple(method, lineTarget, fc.string({ unit: fc.constantFrom(' ', '\r', '\n', '\t', 'H', 'T', 'P', '/', '1', '.', '\0', '\xa0', 'G'), maxLength: 16 }))
      .map(([m, t, junk]) => latin1(`${m} ${t}${junk}`))
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)), near), (bytes) => {
      const decided = decidesOnce(bytes, inspectRequestLine)
      if (decided?.state === 'complete') expect(decided.value.method).toMatch(/^[A-Za-z_-]+$/)
    }), { numRuns: 2_000 })
  })
})

describe('the RPC request-head parser under fuzzing', () => {
  it('reads back method, target, headers and length of any well-formed head, and waits at every earlier cut', () => {
    fc.assert(fc.property(head, fc.uint8Array({ maxLength: 12 }), (h, body) => {
      const text = serialise(h)
      const bytes = latin1(text)
      const result = parseRequestHead(Buffer.concat([bytes, body]), MAX_HEAD)
      const lines = headerLines(h)
      expect(result).toEqual({
        state: 'complete',
        value: {
          method: h.method,
          target: h.target,
          rawHeaders: lines.flatMap(([name, value]) => [name, trim(value)]),
          headers: expectedHeaders(lines),
          contentLength: h.contentLength === undefined ? 0 : Number(h.contentLength),
          headLength: bytes.length
        }
      })
      for (let cut = 0; cut < bytes.length; cut++) expect(parseRequestHead(bytes.subarray(0, cut), MAX_HEAD).state, `cut ${cut}`).toBe('partial')
    }), { numRuns: 1_500 })
  })

  it('refuses every mutation two parsers could read differently', () => {
    const ctl = fc.oneof(char(0, 8), char(0x0b, 0x0c), char(0x0e, 0x1f), fc.constant('\x7f'))
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('bare-lf' as const), at: fc.nat(), text: fc.constant('') }),
      fc.record({ kind: fc.constant('obs-fold' as const), at: fc.nat(), text: fc.tuple(fc.constantFrom(' ', '\t'), headerValue).map(([ws, v]) => ws + v) }),
      fc.record({ kind: fc.constant('ctl' as const), at: fc.nat(), text: ctl }),
      fc.record({ kind: fc.constant('two-lengths' as const), at: fc.nat(), text: contentLength }),
      fc.record({ kind: fc.constant('transfer-encoding' as const), at: fc.nat(), text: fc.constantFrom('chunked', 'identity', 'gzip, chunked', '') }),
      fc.record({ kind: fc.constant('space-before-colon' as const), at: fc.nat(), text: fc.constantFrom(' ', '\t') })
    )
    fc.assert(fc.property(head, mutation, fc.constantFrom('Transfer-Encoding', 'transfer-encoding', 'TRANSFER-ENCODING'), fc.constantFrom('Content-Length', 'content-length'), (h, m, te, cl) => {
      let lines = headerLines(h)
      let text: string
      if (m.kind === 'two-lengths' || m.kind === 'transfer-encoding') {
        const extra: [string, string] = m.kind === 'two-lengths' ? [cl, m.text] : [te, m.text]
        if (m.kind === 'two-lengths' && h.contentLength === undefined) lines = [...lines, [cl, m.text]]
        lines.splice(m.at % (lines.length + 1), 0, extra)
        text = serialise(h, lines)
      } else if (m.kind === 'space-before-colon') {
        lines = lines.length === 0 ? [['Host', 'x']] : lines
        const i = m.at % lines.length
        lines[i] = [lines[i]![0] + m.text, lines[i]![1]]
        text = serialise(h, lines)
      } else if (m.kind === 'obs-fold') {
        lines = lines.length === 0 ? [['Host', 'x']] : lines
        const i = m.at % lines.length
        lines[i] = [lines[i]![0], `${lines[i]![1]}\r\n${m.text}`]
        text = serialise(h, lines)
      } else if (m.kind === 'bare-lf') {
        // Any CRLF of the head, the final empty line's included, loses its CR.
        text = serialise(h)
        const ends = [...text.matchAll(/\r\n/g)].map((match) => match.index)
        const at = ends[m.at % ends.length]!
        text = text.slice(0, at) + text.slice(at + 1)
      } else {
        // A control character inside the method, the target, a name or a value (HTAB is allowed in values only).
        text = serialise(h)
        const spots = [...text.matchAll(/[^\r\n]/g)].map((match) => match.index)
        const at = spots[m.at % spots.length]!
        text = text.slice(0, at) + m.text + text.slice(at)
      }
      const bytes = latin1(text)
      const result = parseRequestHead(bytes, MAX_HEAD)
      expect(result.state, `${m.kind}: ${JSON.stringify(text)}`).toBe('invalid')
      // A refused head is refused at every longer cut too: the peek never waits on it again.
      expect(parseRequestHead(Buffer.concat([bytes, latin1('\r\n\r\n')]), MAX_HEAD).state).toBe('invalid')
    }), { numRuns: 3_000 })
  })

  it('refuses a head beyond maxHeaderBytes, complete or not', () => {
    fc.assert(fc.property(head, fc.integer({ min: 1, max: 400 }), (h, over) => {
      const bytes = latin1(serialise(h))
      const max = Math.max(0, bytes.length - over)
      expect(parseRequestHead(bytes, max)).toEqual({ state: 'invalid', reason: 'headers too large' })
      if (max + 1 < bytes.length - 4) expect(parseRequestHead(bytes.subarray(0, max + 1), max)).toEqual({ state: 'invalid', reason: 'headers too large' })
      expect(parseRequestHead(bytes, bytes.length).state).toBe('complete')
    }), { numRuns: 1_000 })
  })

  it('never throws, and decides once, on arbitrary bytes and on heads with random damage', () => {
    const damage = fc.tuple(head, fc.array(fc.tuple(fc.nat(), fc.constantFrom('\r', '\n', '\r\n', ' ', ':', '\0', '\t', '\r\n\r\n', 'Set-Cookie: a\r\n', 'Content-Length: 1\r\n')), { maxLength: 4 }))
      .map(([h, edits]) => {
        let text = serialise(h)
        for (const [at, piece] of edits) text = text.slice(0, at % (text.length + 1)) + piece + text.slice(at % (text.length + 1))
        return latin1(text)
      })
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)), damage), (bytes) => {
      decidesOnce(bytes, (b) => parseRequestHead(b, 400))
    }), { numRuns: 1_000 })
  })

  it('reads repeated Set-Cookie lines as a list and prototype names as plain headers (regressions)', () => {
    // Found by the read-back property: a second Set-Cookie line threw a TypeError (the first had
    // been stored as a string), which escaped the RPC channel's data handler; a header named
    // "constructor" read Object.prototype's.
    const result = parseRequestHead(latin1('RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nconstructor: x\r\n\r\n'), MAX_HEAD)
    expect(result).toMatchObject({ state: 'complete', value: { headers: { 'set-cookie': ['a=1', 'b=2'], constructor: 'x' } } })
    // A bare LF after the first line used to leave the head waiting for more bytes.
    expect(parseRequestHead(latin1('RPC_IN_DATA /rpc/ HTTP/1.1\r\nHost: a\n\r\n'), MAX_HEAD)).toEqual({ state: 'invalid', reason: 'bare LF in request head' })
  })
})

describe('an RPC request with two Set-Cookie lines', () => {
  it('is answered, and the gateway keeps serving', async () => {
    const [server] = await startEmulators(1)
    const gateway = await startLabGateway({ mode: 'offload', servers: [server!.url], extra: { health: { enabled: false } } })
    // The request that follows is refused (not an RPC method), which closes the channel.
    const answer = await rawExchange(gateway, 'RPC_IN_DATA /rpc/rpcproxy.dll?ex1.contoso.local:6001 HTTP/1.1\r\nHost: mail.contoso.test\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\nGET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n')
    expect(answer).toMatch(/^HTTP\/1\.1 200 /)
    expect(server!.seen).toEqual(['RPC_IN_DATA /rpc/rpcproxy.dll?ex1.contoso.local:6001'])
    expect((await send(gateway, '/owa/', { dispatcher: await labClient() })).status).toBe(200)
  })
})
