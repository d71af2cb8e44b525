import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { ResolvedVdir } from '../src/config/vdir-tables.js'
import { parseRequestTarget } from '../src/routing/request-target.js'
import { VdirTable } from '../src/routing/vdir-table.js'
import { decodeFully, decodeOnce, MAX_DECODE_ROUNDS } from '../src/rules/decode.js'

// Bounded property-based fuzzing of path normalisation (issue 12). The reference is the reading
// IIS (HTTP.sys) and the WHATWG URL parser give a path: percent-decoded once as UTF-8
// (decodeURIComponent), '\' a separator like '/', and Windows dropping trailing dots and spaces
// of a name. Whatever casgate accepts must be exactly that reading and must leave no way to
// climb out of the first segment.

const pieces = [
  '/', '/', '/', '.', '.', '..', '%', '%2e', '%2E', '%2f', '%2F', '%5c', '%5C', '%25', '%252e', '%252f', '#', '?', '&', '=',
  ' ', '%20', '%00', '%0a', '%7f', '\\', '+', ';', ':', '~', 'a', 'Z', 'owa', 'OWA', 'ecp', 'rpc', 'EWS', 'x.htm',
  'é', '%C3%A9', '%c0%ae', '%c0%af', '%e0%80%ae', '%u002e', '%ED%A0%80', '\u3002', '%E3%80%82', '\uff0e', '\ud800', '%', '%4', '%zz'
]
const rawTarget = fc.oneof(
  { weight: 6, arbitrary: fc.array(fc.constantFrom(...pieces), { maxLength: 14 }).map((parts) => `/${parts.join('')}`) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom(...pieces), { maxLength: 14 }).map((parts) => parts.join('')) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }).map((text) => `/${text}`) }
)

interface Reference { decoded: string | undefined, segments: string[], query: string }

/** reference decodes the path of `raw` once, the way IIS serves it, and splits it into names. */
function reference (raw: string): Reference {
  const mark = raw.indexOf('?')
  const path = mark === -1 ? raw : raw.slice(0, mark)
  let decoded: string | undefined
  try {
    decoded = decodeURIComponent(path)
  } catch {
    decoded = undefined
  }
  return { decoded, segments: decoded === undefined ? [] : decoded.split(/[/\\]/), query: mark === -1 ? '' : raw.slice(mark + 1) }
}

// A name Windows reads as '.' or '..' once its trailing dots and spaces are gone.
const climbs = (segment: string): boolean => /^[. ]*\.[. ]*$/.test(segment)

const VDIRS = ['/owa', '/ecp', '/EWS', '/rpc', '/Microsoft-Server-ActiveSync', '/']
const table = new VdirTable(VDIRS.map((path) => ({ path }) as ResolvedVdir))

describe('request targets under fuzzing, against the once-decoded reference', () => {
  it('accepts only the reference reading, without dot segments, backslashes, controls, trailing dots or spaces, or #', () => {
    fc.assert(fc.property(rawTarget, (raw) => {
      const verdict = parseRequestTarget(raw)
      const ref = reference(raw)
      if (ref.decoded !== undefined && ref.segments.some((segment) => segment === '.' || segment === '..' || climbs(segment))) expect(verdict.ok, raw).toBe(false)
      if (ref.decoded === undefined) expect(verdict.ok, raw).toBe(false)
      if (!verdict.ok) {
        expect(typeof verdict.problem).toBe('string')
        return
      }
      const { path, query } = verdict.target
      expect(raw.startsWith('/') && !raw.includes('#'), raw).toBe(true)
      expect(path).toBe(ref.decoded)
      expect(query).toBe(ref.query)
      expect(path.startsWith('/')).toBe(true)
      expect(path).not.toContain('\\')
      expect([...path].some((c) => c.charCodeAt(0) < 0x20 || c === '\x7f'), raw).toBe(false)
      expect(path).not.toMatch(/%(2e|2f|5c)/i)
      for (const segment of path.split('/')) {
        expect(segment === '.' || segment === '..' || climbs(segment), raw).toBe(false)
        expect(segment.endsWith('.') || segment.endsWith(' '), raw).toBe(false)
      }
      // The rule engine reads the same path, decoded further and case-folded.
      if (!path.includes('%')) expect(decodeFully(raw.split('?')[0]!)).toBe(path.toLowerCase())
    }), { numRuns: 5_000 })
  })

  it('refuses every spelling of a dot segment the reference decodes (%2e%2e, %2E., .%2e, \\ as a separator)', () => {
    const dot = fc.constantFrom('.', '%2e', '%2E')
    const dots = fc.array(dot, { minLength: 1, maxLength: 2 }).map((d) => d.join(''))
    const separator = fc.constantFrom('/', '%2f', '%2F', '\\', '%5c', '%5C')
    const name = fc.constantFrom('owa', 'ecp', 'rpc', 'EWS', 'x', 'powershell')
    fc.assert(fc.property(name, separator, dots, fc.constantFrom('', ' ', '.', '. '), separator, name, fc.constantFrom('', '?a=1', '/'), (first, sep1, d, trailing, sep2, last, end) => {
      const raw = `/${first}${sep1}${d}${trailing}${sep2}${last}${end}`
      expect(parseRequestTarget(raw).ok, raw).toBe(false)
    }), { numRuns: 2_000 })
  })

  it('routes an accepted path by the first segment of the reference reading', () => {
    fc.assert(fc.property(rawTarget, (raw) => {
      const verdict = parseRequestTarget(raw)
      if (!verdict.ok) return
      const first = reference(raw).decoded!.split('/')[1]!
      const expected = VDIRS.find((path) => path.toLowerCase() === `/${first}`.toLowerCase())
      expect(table.matchPath(verdict.target.path)?.path, raw).toBe(expected)
    }), { numRuns: 3_000 })
  })
})

describe('decodeFully under fuzzing', () => {
  const escapes = fc.constantFrom('%', '%25', '%2', '%32', '%35', '%65', '%45', '%u', '%U', '%u0025', '%u002e', '%C3', '%A9', '%c3%a9', '%zz', 'A', 'e', '5', '2', 'u', 'İ', 'K', '\ud800', '/', '+')
  const text = fc.oneof(fc.array(escapes, { maxLength: 20 }).map((p) => p.join('')), fc.string({ maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 30 }))

  it('never throws, returns lower case, and is idempotent once it reaches a fixed point', () => {
    fc.assert(fc.property(text, (input) => {
      const once = decodeFully(input)
      expect(once).toBe(once.toLowerCase())
      if (decodeOnce(once) === once) expect(decodeFully(once), JSON.stringify(input)).toBe(once)
    }), { numRuns: 5_000 })
  })

  it('reads one level exactly as decodeURIComponent wherever that succeeds', () => {
    fc.assert(fc.property(text, (input) => {
      let expected: string
      try {
        expected = decodeURIComponent(input)
      } catch {
        return
      }
      expect(decodeOnce(input)).toBe(expected)
    }), { numRuns: 3_000 })
  })

  it('stops after MAX_DECODE_ROUNDS, however deep the nesting', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 12 }), fc.constantFrom('%41', '%2e', '%u0041'), (depth, seed) => {
      let nested: string = seed
      for (let i = 0; i < depth; i++) nested = nested.replace(/%/g, '%25')
      const out = decodeFully(nested)
      if (depth < MAX_DECODE_ROUNDS) expect(out).not.toContain('%')
      else expect(out).toContain('%')
    }), { numRuns: 200 })
  })
})
