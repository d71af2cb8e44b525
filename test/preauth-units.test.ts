import { createSecretKey } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { EXCLUSION_PRESETS, Exclusions } from '../src/preauth/exclusions.js'
import { Lockout } from '../src/preauth/lockout.js'
import { hashPassword, parseScryptHash, verifyPassword, type ScryptHash } from '../src/auth/password-hash.js'
import { safeReturnUrl } from '../src/preauth/preauth-routes.js'
import { SessionCookies } from '../src/preauth/session-cookie.js'
import { parseUsersFile } from '../src/auth/users-file.js'
import { replaceHeader } from '../src/proxy/headers.js'
import { removeCookies } from '../src/util/cookies.js'

const secret = createSecretKey(Buffer.alloc(32, 5))

describe('preauthentication pieces', () => {
  it('hashes with scrypt and verifies in constant time; the users file names its bad lines', async () => {
    const hash = await hashPassword('Correct-Horse-1', 14)
    expect(hash).toMatch(/^\$scrypt\$ln=14,r=8,p=1\$/)
    const parsed = parseScryptHash(hash) as ScryptHash
    expect(await verifyPassword('Correct-Horse-1', parsed)).toBe(true)
    expect(await verifyPassword('correct-horse-1', parsed)).toBe(false)
    const { users, problems } = parseUsersFile(`# comment\nCONTOSO\\JDoe:${hash}\nnocolon\nasmith:plaintext\njdoe@contoso.com:${hash}\n`)
    expect([...users.keys()]).toEqual(['jdoe'])
    expect(problems).toEqual([
      { line: 3, message: 'expected user:$scrypt$…' },
      { line: 4, message: 'asmith: expected $scrypt$ln=15,r=8,p=1$<salt>$<hash>' },
      { line: 5, message: 'jdoe is listed twice' }
    ])
  })

  it('seals sessions that open only intact, under the same secret and cookie name', () => {
    const sessions = new SessionCookies([secret], 'CasgateSession')
    const payload = { id: 'session-1', user: 'jdoe', password: 'Correct-Horse-1', issuedAt: 1, seenAt: 2 }
    const sealed = sessions.seal(payload)
    expect(sessions.seal(payload)).not.toBe(sealed) // a fresh IV each time
    expect(sessions.open(sealed)).toEqual({ session: payload, keyIndex: 0 })
    expect(new SessionCookies([createSecretKey(Buffer.alloc(32, 6))], 'CasgateSession').open(sealed)).toBeUndefined()
    expect(new SessionCookies([secret], 'OtherName').open(sealed)).toBeUndefined()
    const bytes = Buffer.from(sealed, 'base64url')
    for (let i = 0; i < bytes.length; i += 7) {
      const tampered = Buffer.from(bytes)
      tampered[i] = tampered[i]! ^ 1
      expect(sessions.open(tampered.toString('base64url'))).toBeUndefined()
    }
  })

  it('excludes on the decoded path, case-insensitively, at segment boundaries; health pages only of the vdir itself', () => {
    const exclusions = new Exclusions(EXCLUSION_PRESETS['exchange-v1'], ['/owa/SSO/'])
    const ews = { path: '/EWS', healthPath: '/EWS/healthcheck.htm' }
    const owa = { path: '/owa', healthPath: '/owa/healthcheck.htm' }
    const mapi = { path: '/mapi', healthPath: '/mapi/healthcheck.htm' }
    expect(exclusions.reason('POST', '/EWS/Exchange.asmx/WSSecurity', ews, false)).toBe('path')
    expect(exclusions.reason('POST', '/ews/exchange.asmx/wssecurity', ews, false)).toBe('path')
    expect(exclusions.reason('GET', '/owa/sso/x', owa, false)).toBe('path')
    expect(exclusions.reason('GET', '/owa/ssox', owa, false)).toBeUndefined()
    expect(exclusions.reason('GET', '/mapi/healthcheck.htm', mapi, false)).toBe('health')
    expect(exclusions.reason('POST', '/mapi/healthcheck.htm', mapi, false)).toBeUndefined()
    expect(exclusions.reason('GET', '/owa/x/healthcheck.htm', owa, false)).toBeUndefined()
    expect(exclusions.reason('GET', '/owa#/healthcheck.htm', owa, false)).toBeUndefined()
    expect(exclusions.reason('OPTIONS', '/Microsoft-Server-ActiveSync', { path: '/Microsoft-Server-ActiveSync', healthPath: '' }, false)).toBe('options')
    // OPTIONS with a body is no preflight, and OWA/ECP clients send none.
    expect(exclusions.reason('OPTIONS', '/EWS/Exchange.asmx', ews, true)).toBeUndefined()
    expect(exclusions.reason('OPTIONS', '/owa/', owa, false)).toBeUndefined()
    expect(exclusions.bearerAllowed('/EWS')).toBe(true)
    expect(exclusions.bearerAllowed('/owa')).toBe(false)
    expect(exclusions.bearerAllowed('/ecp')).toBe(false)
    expect(new Exclusions(EXCLUSION_PRESETS.none, []).reason('OPTIONS', '/EWS/mrsproxy.svc', ews, false)).toBeUndefined()
    expect(new Exclusions(EXCLUSION_PRESETS.none, []).bearerAllowed('/EWS')).toBe(false)
  })

  it('locks with back-off, forgets failures after the window, and keys counters by hash', () => {
    const lockout = new Lockout({ userThreshold: 2, addressThreshold: 100, windowMs: 1_000, lockoutMs: 10_000, maxLockoutMs: 25_000 }, secret)
    let now = 0
    lockout.recordFailure('jdoe', '10.0.0.1', now)
    now += 2_000 // outside the window: starts over
    expect(lockout.recordFailure('CONTOSO\\JDoe', '10.0.0.1', now)).toEqual({})
    expect(lockout.recordFailure('jdoe@contoso.com', '10.0.0.1', now)).toEqual({ userLockedForMs: 10_000 })
    expect(lockout.isLocked('jdoe', '10.0.0.2', now + 9_999)).toBe(true)
    now += 10_000
    expect(lockout.isLocked('jdoe', undefined, now)).toBe(false)
    lockout.recordFailure('jdoe', undefined, now)
    expect(lockout.recordFailure('jdoe', undefined, now)).toEqual({ userLockedForMs: 20_000 })
    now += 20_000
    lockout.recordFailure('jdoe', undefined, now)
    expect(lockout.recordFailure('jdoe', undefined, now)).toEqual({ userLockedForMs: 25_000 })
  })

  it('keeps the return URL on this site', () => {
    for (const bad of ['//evil.example/', '/\\evil.example', 'https://evil.example/', '/casgate/logon', '/owa/\r\nx', 'owa', 42]) expect(safeReturnUrl(bad, '/owa/')).toBe('/owa/')
    expect(safeReturnUrl('/owa/?path=/mail', '/owa/')).toBe('/owa/?path=/mail')
  })

  it('takes casgate\'s cookies out of what Exchange receives and replaces Authorization', () => {
    const headers = ['Host', 'mail', 'Cookie', 'a=1; CasgateSession=xyz; b=2', 'cookie', 'CasgateCsrf=t', 'Authorization', 'Basic old']
    removeCookies(headers, ['CasgateSession', 'CasgateCsrf'])
    replaceHeader(headers, 'authorization', 'Basic new')
    expect(headers).toEqual(['Host', 'mail', 'Cookie', 'a=1; b=2', 'authorization', 'Basic new'])
  })
})
