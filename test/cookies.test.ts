import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { cookieNameKey, cookiePairs, readCookie, readCookies, removeCookies } from '../src/util/cookies.js'

const OWN = ['CasgateSession', 'CasgateCsrf']

describe('the Cookie header, read one way for sessions and for stripping (RFC 6265 §4.2.1)', () => {
  it('splits on ";" only, tolerates missing or extra spaces, and compares names exactly', () => {
    expect(cookiePairs('a=1; b=2;c=3 ;  d = 4 ;; e')).toEqual([{ name: 'a', value: '1' }, { name: 'b', value: '2' }, { name: 'c', value: '3' }, { name: 'd', value: '4' }])
    expect(readCookie('a=x CasgateSession=v', 'CasgateSession')).toBeUndefined()
    expect(readCookie('a=x CasgateSession=v', 'a')).toBe('x CasgateSession=v')
    expect(readCookie('a=1;CasgateSession=v', 'CasgateSession')).toBe('v')
    expect(readCookie('casgatesession=v', 'CasgateSession')).toBeUndefined()
    expect(readCookie('MyCasgateSession=v', 'CasgateSession')).toBeUndefined()
    expect(readCookie('CasgateSession=; CasgateSession=v', 'CasgateSession')).toBeUndefined() // the first counts
    expect(readCookie('k=a=b', 'k')).toBe('a=b')
    expect(readCookies('CasgateSession=1; x=2; CasgateSession=3; CasgateSession=', 'CasgateSession')).toEqual(['1', '3', ''])
    expect(readCookies(undefined, 'x')).toEqual([])
  })

  it('removes casgate\'s cookies in any case, and any cookie whose value carries one, from every Cookie line', () => {
    const headers = ['Host', 'mail', 'Cookie', 'a=1; CasgateSession=xyz; b=2', 'cookie', 'CasgateCsrf=t', 'COOKIE', 'c=x CasgateSession=v;casgatecsrf=u;MyCasgateSession=k;d', 'Cookie', 'plain=1']
    removeCookies(headers, OWN)
    expect(headers).toEqual(['Host', 'mail', 'Cookie', 'a=1; b=2', 'COOKIE', 'MyCasgateSession=k; d', 'Cookie', 'plain=1'])
  })

  it('never throws, and leaves nothing readable as casgate\'s cookie or carrying one (fuzzed)', () => {
    const piece = fc.oneof(
      fc.constantFrom('CasgateSession', 'casgatesession', 'CasgateCsrf', 'a', 'MyCasgateSession', ''),
      fc.string({ maxLength: 12 }),
      fc.string({ unit: fc.constantFrom('=', ';', ' ', '\t', ',', 'C', 'a', 's', 'g', 't', 'e', 'S', 'i', 'o', 'n'), maxLength: 24 })
    )
    const header = fc.array(piece, { maxLength: 8 }).map((parts) => parts.join(''))
    fc.assert(fc.property(fc.array(header, { minLength: 1, maxLength: 3 }), (lines) => {
      const headers = lines.flatMap((line) => ['cookie', line])
      removeCookies(headers, OWN)
      for (let i = 0; i < headers.length; i += 2) {
        for (const name of OWN) {
          expect(readCookies(headers[i + 1], name)).toEqual([])
          for (const pair of cookiePairs(headers[i + 1])) {
            expect(cookieNameKey(pair.name)).not.toBe(name.toLowerCase())
            expect(pair.value.toLowerCase()).not.toContain(`${name.toLowerCase()}=`)
          }
        }
      }
      // What was not casgate's is kept, in order (names read as ASP.NET reads them: cookieNameKey).
      const before = lines.flatMap((line) => cookiePairs(line)).filter((pair) => !OWN.some((name) => cookieNameKey(pair.name) === name.toLowerCase() || pair.value.toLowerCase().includes(`${name.toLowerCase()}=`)))
      const after = headers.filter((_, i) => i % 2 === 1).flatMap((line) => cookiePairs(line))
      expect(after).toEqual(before)
    }), { numRuns: 2_000 })
  })
})
