import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { activeSyncIdentity, authorizationIdentity } from '../src/affinity/identity.js'
import { normalizeUser } from '../src/auth/user-name.js'
import { basicCredentials } from '../src/auth/basic.js'
import { NTLMSSP_SIGNATURE, ntlmMessageType, ntlmToken, parseAuthenticate } from '../src/auth/ntlm-message.js'
import { cookiePairs, readCookie, readCookies, removeCookies } from '../src/util/cookies.js'
import { frameAuthenticate } from './helpers/ntlm-client.js'

// Bounded property-based fuzzing of the readers of who a request speaks for (issue 12): Basic
// (RFC 7617), NTLM AUTHENTICATE framing (MS-NLMP §2.2.1.3), ActiveSync's query forms
// (MS-ASHTTP §2.2.1.1.1) and the Cookie header (RFC 6265 §4.2.1). None may throw on anything a
// client can send; what a well-formed credential names must read back. test/cookies.test.ts
// holds the stripping property for casgate's own cookies; this adds the cross-reader ones.

const base64 = (bytes: Uint8Array | string): string => Buffer.from(bytes).toString('base64')
const scheme = fc.constantFrom('Basic', 'basic', 'BASIC', 'NTLM', 'ntlm', 'Negotiate', 'Bearer', 'Digest', 'Kerberos', '')
const separator = fc.constantFrom(' ', '  ', '\t', ' \t', '')
const junkBase64 = fc.string({ unit: fc.constantFrom(...'ABCDEFabcdef0123456789+/=-_ .:%\n'), maxLength: 40 })

// An NTLM message with every descriptor chosen by the fuzzer: lengths, offsets past the end, wrap-arounds.
const lyingNtlm = fc.tuple(fc.constantFrom(1, 2, 3, 3, 3, 0, 4), fc.array(fc.tuple(fc.nat(0xffff), fc.oneof(fc.nat(120), fc.constant(0xffffffff), fc.nat())), { minLength: 6, maxLength: 6 }), fc.nat(), fc.uint8Array({ maxLength: 80 }), fc.nat(80))
  .map(([type, descriptors, flags, payload, cut]) => {
    const header = Buffer.alloc(64)
    NTLMSSP_SIGNATURE.copy(header, 0)
    header.writeUInt32LE(type, 8)
    descriptors.forEach(([length, offset], i) => {
      header.writeUInt16LE(length, 12 + i * 8)
      header.writeUInt16LE(length, 14 + i * 8)
      header.writeUInt32LE(offset, 16 + i * 8)
    })
    header.writeUInt32LE(flags >>> 0, 60)
    const message = Buffer.concat([header, payload])
    return cut < 64 ? message.subarray(0, Math.max(8, cut)) : message
  })

const anyIdentity = (value: string | undefined): void => {
  if (value !== undefined) expect(value).toMatch(/^(user|bearer|device):/)
}

describe('Authorization readers under fuzzing', () => {
  it('never throw on arbitrary headers, arbitrary base64 of arbitrary bytes, or NTLM messages that lie about their fields', () => {
    const header = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.tuple(scheme, separator, junkBase64).map(([s, sep, b]) => `${s}${sep}${b}`),
      fc.tuple(scheme, separator, fc.uint8Array({ maxLength: 120 })).map(([s, sep, b]) => `${s}${sep}${base64(b)}`),
      fc.tuple(fc.constantFrom('NTLM', 'Negotiate', 'negotiate'), separator, lyingNtlm).map(([s, sep, m]) => `${s}${sep}${base64(m)}`)
    )
    fc.assert(fc.property(header, (value) => {
      anyIdentity(authorizationIdentity(value))
      const basic = basicCredentials(value)
      if (basic !== undefined) expect(basic.user.length > 0 && !basic.user.includes(':')).toBe(true)
      const token = ntlmToken(value)
      if (token !== undefined) expect([1, 2, 3, undefined]).toContain(ntlmMessageType(token))
    }), { numRuns: 4_000 })
  })

  it('parseAuthenticate refuses a malformed message with its own error, never an out-of-range read', () => {
    const own = ['not an NTLM AUTHENTICATE message', 'truncated NTLM message', 'NTLM field outside the message']
    fc.assert(fc.property(fc.oneof(lyingNtlm, fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b))), (token) => {
      try {
        const message = parseAuthenticate(token)
        expect(typeof message.user).toBe('string')
      } catch (err) {
        expect(err).toBeInstanceOf(Error)
        expect(own).toContain((err as Error).message)
      }
    }), { numRuns: 3_000 })
  })

  it('reads the user of a well-formed NTLM AUTHENTICATE, Unicode or OEM', () => {
    const latin1Name = fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)), maxLength: 20 })
    fc.assert(fc.property(fc.boolean(), latin1Name, fc.string({ unit: 'binary', maxLength: 20 }), latin1Name, (unicode, oem, wide, domain) => {
      const user = unicode ? wide : oem
      const encoding = unicode ? 'utf16le' : 'latin1'
      const fields = [Buffer.alloc(24), Buffer.alloc(40, 1), Buffer.from(domain, encoding), Buffer.from(user, encoding), Buffer.from('WS', encoding), Buffer.alloc(0)]
      const token = frameAuthenticate(fields, unicode ? 0xa2888205 : 0xa2888204)
      expect(parseAuthenticate(token)).toMatchObject({ user, domain })
      const expected = normalizeUser(user)
      expect(authorizationIdentity(`NTLM ${base64(token)}`)).toBe(expected === '' ? undefined : `user:${expected}`)
    }), { numRuns: 2_000 })
  })

  it('round-trips Basic user:password for any user without a colon (RFC 7617 §2)', () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 24 })
    fc.assert(fc.property(text.filter((u) => u.length > 0 && !u.includes(':')), text, fc.constantFrom('Basic', 'basic', 'BASIC'), fc.constantFrom(' ', '  ', '\t'), (user, password, name, sep) => {
      const header = `${name}${sep}${base64(`${user}:${password}`)}`
      expect(basicCredentials(header)).toEqual({ user, password })
      if (sep.startsWith(' ')) {
        const expected = normalizeUser(user)
        expect(authorizationIdentity(header)).toBe(expected === '' ? undefined : `user:${expected}`)
      }
    }), { numRuns: 3_000 })
  })

  it('folds any account name to lower case without its domain', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (name) => {
      const user = normalizeUser(name)
      expect(user).toBe(user.toLowerCase())
      expect(user).not.toContain('\\')
    }), { numRuns: 2_000 })
    fc.assert(fc.property(fc.stringMatching(/^[A-Za-z0-9._-]{1,20}$/), fc.stringMatching(/^[A-Za-z0-9-]{1,15}$/), (account, domain) => {
      const user = normalizeUser(account)
      expect(normalizeUser(`${domain}\\${account}`)).toBe(user)
      expect(normalizeUser(`${account}@${domain}.com`)).toBe(user)
    }), { numRuns: 1_000 })
  })
})

describe('ActiveSync identity under fuzzing', () => {
  it('never throws on any query, and reads only user:, device: or nothing', () => {
    const query = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.string({ unit: fc.constantFrom('%', '=', '&', '+', 'User', 'DeviceId', 'deviceid', 'x', '%5C', '%zz', '%E0%A4', '\\', '@', 'A', '/'), maxLength: 20 }),
      fc.uint8Array({ maxLength: 40 }).map((b) => base64(b)),
      fc.uint8Array({ maxLength: 40 }).map((b) => encodeURIComponent(base64(b)))
    )
    fc.assert(fc.property(query, fc.boolean(), (q, mark) => {
      anyIdentity(activeSyncIdentity(`/Microsoft-Server-ActiveSync${mark ? '?' : ''}${q}`))
    }), { numRuns: 4_000 })
  })

  it('reads User= (else DeviceId=) and the device ID of the base64 form', () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 20 })
    fc.assert(fc.property(text, fc.stringMatching(/^[A-Za-z0-9]{1,32}$/), (user, device) => {
      const expected = normalizeUser(user)
      const got = activeSyncIdentity(`/Microsoft-Server-ActiveSync?Cmd=Sync&User=${encodeURIComponent(user)}&DeviceId=${device}&DeviceType=iPhone`)
      expect(got).toBe(expected === '' ? `device:${device.toLowerCase()}` : `user:${expected}`)
    }), { numRuns: 2_000 })
    // MS-ASHTTP §2.2.1.1.1.1: version, command, locale (2), device ID length, device ID, then the rest.
    fc.assert(fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.uint8Array({ maxLength: 30 }), (head, id, rest) => {
      const bytes = Buffer.concat([head, Buffer.from([id.length]), id, rest])
      expect(activeSyncIdentity(`/Microsoft-Server-ActiveSync?${encodeURIComponent(base64(bytes))}`)).toBe(`device:${Buffer.from(id).toString('hex')}`)
    }), { numRuns: 2_000 })
  })
})

describe('the Cookie readers agree with each other under fuzzing', () => {
  const name = fc.oneof(fc.constantFrom('CasgateSession', 'X-BEResource', 'a', 'ClientId'), fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}$/))
  const cookieHeader = (names: fc.Arbitrary<string>): fc.Arbitrary<string> => fc.array(fc.oneof(
    names.map((n) => n.toLowerCase()), names,
    fc.string({ unit: fc.constantFrom('=', ';', ' ', '\t', ',', 'a', 'x', 'C', 's'), maxLength: 10 }),
    fc.string({ maxLength: 8 })
  ), { maxLength: 10 }).map((parts) => parts.join(''))

  it('readCookie is the first non-empty value readCookies finds, and readCookies every pair of that exact name', () => {
    fc.assert(fc.property(cookieHeader(name), name, (header, wanted) => {
      const values = cookiePairs(header).filter((pair) => pair.name === wanted).map((pair) => pair.value)
      expect(readCookies(header, wanted)).toEqual(values)
      expect(readCookie(header, wanted)).toBe(values.length === 0 || values[0] === '' ? undefined : values[0])
    }), { numRuns: 3_000 })
  })

  it('after removeCookies, no spelling of a removed name can be read from the lines Node would join, and other headers are untouched', () => {
    fc.assert(fc.property(fc.array(name, { minLength: 1, maxLength: 3 }), fc.array(fc.constantFrom('cookie', 'Cookie', 'COOKIE', 'X-Other', 'Cookie2'), { minLength: 1, maxLength: 4 }), (removed, kinds) => {
      // Every line carries each removed name in some form.
      const headers = kinds.flatMap((kind, i) => [kind, removed.map((n, k) => `${(i + k) % 2 === 0 ? n : n.toUpperCase()}=v${k}; x=${n}=y; keep${i}=1`).join('; ')])
      const notCookies = (list: string[]): string[][] => list.flatMap((value, i) => (i % 2 === 0 && value.toLowerCase() !== 'cookie' ? [[value, list[i + 1]!]] : []))
      const others = notCookies(headers)
      removeCookies(headers, removed)
      const again = [...headers]
      removeCookies(again, removed)
      expect(again).toEqual(headers)
      const joined = headers.filter((_, i) => i % 2 === 1 && headers[i - 1]!.toLowerCase() === 'cookie').join('; ')
      for (const n of removed) {
        for (const spelling of [n, n.toLowerCase(), n.toUpperCase()]) expect(readCookie(joined, spelling)).toBeUndefined()
        for (const pair of cookiePairs(joined)) {
          expect(pair.name.toLowerCase()).not.toBe(n.toLowerCase())
          expect(pair.value.toLowerCase()).not.toContain(`${n.toLowerCase()}=`)
        }
      }
      expect(notCookies(headers)).toEqual(others)
    }), { numRuns: 1_000 })
    fc.assert(fc.property(fc.array(name, { minLength: 1, maxLength: 2 }), fc.array(cookieHeader(name), { minLength: 1, maxLength: 3 }), (removed, lines) => {
      const headers = lines.flatMap((line) => ['Cookie', line])
      removeCookies(headers, removed)
      for (const separator of ['; ', ';']) {
        const joined = headers.filter((_, i) => i % 2 === 1).join(separator)
        for (const n of removed) expect(readCookies(joined, n)).toEqual([])
      }
    }), { numRuns: 2_000 })
  })
})
