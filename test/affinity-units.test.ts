import { createSecretKey, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { AffinityKeys } from '../src/affinity/affinity-keys.js'
import { AssignmentStore } from '../src/affinity/assignment-store.js'
import { activeSyncIdentity, authorizationIdentity, setCookieValue } from '../src/affinity/identity.js'
import { normalizeUser } from '../src/auth/user-name.js'
import { readCookie } from '../src/util/cookies.js'
import { placeKey } from '../src/affinity/placement.js'
import { buildConfig } from '../src/config/load.js'
import { ConfigError } from '../src/errors/errors.js'
import { authenticateHeader, negotiateHeader } from './helpers/ntlm-client.js'

const basic = (credentials: string): string => `Basic ${Buffer.from(credentials).toString('base64')}`
// A CHALLENGE message as a backend would send it: enough for the client helper to answer.
const challenge = (): string => {
  const message = Buffer.alloc(48)
  Buffer.from('NTLMSSP\0', 'latin1').copy(message)
  message.writeUInt32LE(2, 8)
  message.writeUInt32LE(0x00088201, 20)
  randomBytes(8).copy(message, 24)
  return `NTLM ${message.toString('base64')}`
}

describe('identity behind a request', () => {
  it('folds the spellings of one account together', () => {
    for (const name of ['jdoe', 'JDoe', 'CONTOSO\\jdoe', 'jdoe@contoso.com', ' contoso\\JDOE ']) expect(normalizeUser(name)).toBe('jdoe')
  })

  it('reads Basic, NTLM AUTHENTICATE and Bearer; an NTLM NEGOTIATE and unknown schemes name nobody', () => {
    expect(authorizationIdentity(basic('CONTOSO\\jdoe:secret'))).toBe('user:jdoe')
    expect(authorizationIdentity(basic('jdoe@contoso.com:pass:with:colons'))).toBe('user:jdoe')
    expect(authorizationIdentity(authenticateHeader(challenge(), 'JDoe', 'pw', 'CONTOSO'))).toBe('user:jdoe')
    // Two handshakes of one user: different tokens, one identity.
    expect(authenticateHeader(challenge(), 'jdoe', 'pw', 'CONTOSO')).not.toBe(authenticateHeader(challenge(), 'jdoe', 'pw', 'CONTOSO'))
    expect(authorizationIdentity(negotiateHeader())).toBeUndefined()
    expect(authorizationIdentity('Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnag')).toBeUndefined() // Kerberos
    expect(authorizationIdentity('Bearer eyJ0eXAi.eyJ1cG4i.sig')).toBe('bearer:eyJ0eXAi.eyJ1cG4i.sig')
    expect(authorizationIdentity('Digest username="x"')).toBeUndefined()
    expect(authorizationIdentity(basic(':nouser'))).toBeUndefined()
    expect(authorizationIdentity('Basic')).toBeUndefined()
    expect(authorizationIdentity(undefined)).toBeUndefined()
  })

  it('reads ActiveSync\'s User=, else DeviceId=, plain or base64-encoded', () => {
    expect(activeSyncIdentity('/Microsoft-Server-ActiveSync?Cmd=Sync&User=CONTOSO%5CJDoe&DeviceId=ABC&DeviceType=iPhone')).toBe('user:jdoe')
    expect(activeSyncIdentity('/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=ABC123&DeviceType=Android')).toBe('device:abc123')
    // Base64 query (MS-ASHTTP 2.2.1.1.1.1): version 141, command 0, locale, device ID length + bytes, …
    const encoded = Buffer.concat([Buffer.from([141, 0, 9, 4, 4]), Buffer.from([0xde, 0xad, 0xbe, 0xef]), Buffer.from([0, 6]), Buffer.from('iPhone')]).toString('base64')
    expect(activeSyncIdentity(`/Microsoft-Server-ActiveSync?${encodeURIComponent(encoded)}`)).toBe('device:deadbeef')
    expect(activeSyncIdentity('/Microsoft-Server-ActiveSync')).toBeUndefined()
    expect(activeSyncIdentity('/Microsoft-Server-ActiveSync?Cmd=Sync&User=&DeviceId=')).toBeUndefined()
    expect(activeSyncIdentity('/Microsoft-Server-ActiveSync?User=%E0%A4%A')).toBeUndefined()
  })

  it('reads cookies by exact name, and what a Set-Cookie gives', () => {
    expect(readCookie('a=1; XSession=2; Session=3', 'Session')).toBe('3')
    expect(readCookie('Session=3', 'Session')).toBe('3')
    expect(readCookie('MySession=3', 'Session')).toBeUndefined()
    expect(readCookie('Session=', 'Session')).toBeUndefined()
    expect(setCookieValue(['other=1; Path=/', 'Session=abc; Path=/; HttpOnly'], 'Session')).toBe('abc')
    expect(setCookieValue('Session=; Max-Age=0', 'Session')).toBeUndefined()
    expect(setCookieValue('Session=abc; Max-Age=0', 'Session')).toBeUndefined()
  })
})

describe('keyed hashes', () => {
  it('never holds the identity, and the key depends on the secret', () => {
    const one = new AffinityKeys(createSecretKey(Buffer.alloc(32, 1)))
    const two = new AffinityKeys(createSecretKey(Buffer.alloc(32, 2)))
    const key = one.key('user:jdoe')
    expect(key).toHaveLength(12)
    expect(key).not.toContain('jdoe')
    expect(one.key('user:jdoe')).toBe(key)
    expect(two.key('user:jdoe')).not.toBe(key)
    expect(one.serverCookie('cas', 'ex1.contoso.local:443')).toMatch(/^[\w-]{10}\.[\w-]{22}$/)
    expect(one.serverCookie('cas', 'ex1.contoso.local:443')).not.toContain('ex1')
    expect(two.serverCookie('cas', 'ex1.contoso.local:443')).not.toBe(one.serverCookie('cas', 'ex1.contoso.local:443'))
  })
})

describe('rendezvous placement with bounded loads', () => {
  const servers = [{ name: '10.0.0.1:443', index: 0 }, { name: '10.0.0.2:443', index: 1 }, { name: '10.0.0.3:443', index: 2 }]
  const keys = new AffinityKeys(createSecretKey(Buffer.alloc(32, 7)))

  it('spreads first choices evenly even over server names that differ in one character', () => {
    const first = [0, 0, 0]
    const unbounded = new Int32Array(3)
    for (let i = 0; i < 30_000; i++) first[placeKey(keys.key(`user:${i}`), servers, unbounded, Infinity)!.index]!++
    for (const count of first) expect(Math.abs(count - 10_000)).toBeLessThan(400)
  })

  it('holds the busiest of 3 servers to 1.5× the least busy at 60 keys, for any key set', () => {
    for (let trial = 0; trial < 200; trial++) {
      const held = new Int32Array(3)
      for (let i = 0; i < 60; i++) held[placeKey(keys.key(`trial${trial}:user${i}`), servers, held, 1.1)!.index]!++
      expect(Math.max(...held)).toBeLessThanOrEqual(1.5 * Math.min(...held))
    }
  })

  it('takes a removed server\'s keys only, and puts none of the others elsewhere', () => {
    const unbounded = new Int32Array(3)
    for (let i = 0; i < 3_000; i++) {
      const key = keys.key(`user:${i}`)
      const all = placeKey(key, servers, unbounded, Infinity)!.index
      const without = placeKey(key, servers.filter((s) => s.index !== 1), unbounded, Infinity)!.index
      if (all !== 1) expect(without).toBe(all)
    }
  })

  it('has nowhere to place a key when no server is healthy', () => {
    expect(placeKey('k', [], new Int32Array(3), 1.1)).toBeUndefined()
  })
})

describe('assignment store', () => {
  it('counts keys held per server through overwrites, evictions and expiry', async () => {
    const store = new AssignmentStore({ maxEntries: 3, idleTtlMs: 200 })
    const owner = { held: new Int32Array(2), id: 'v', pool: { servers: [{ origin: 'https://a' }, { origin: 'https://b' }] } }
    const prefix = store.register(owner)
    store.set(`${prefix}a`, 0)
    store.set(`${prefix}b`, 0)
    store.set(`${prefix}a`, 0)
    expect([...owner.held]).toEqual([2, 0])
    store.set(`${prefix}a`, 1)
    expect([...owner.held]).toEqual([1, 1])
    store.set(`${prefix}c`, 1)
    store.set(`${prefix}d`, 1) // evicts the least recently used, b
    expect(store.get(`${prefix}b`)).toBeUndefined()
    expect([...owner.held]).toEqual([0, 3])
    await new Promise((resolve) => setTimeout(resolve, 300))
    store.purgeStale()
    expect(store.size).toBe(0)
    expect([...owner.held]).toEqual([0, 0])
  })
})

describe('affinity configuration', () => {
  const base = { hosts: [{ names: ['mail.contoso.com'], mode: 'passthrough', pool: 'cas' }, { names: ['owa.contoso.com'], mode: 'passthrough', pool: 'cas' }], pools: { cas: { servers: ['https://ex1.contoso.local'] } } }
  const issuesOf = (input: unknown): string[] => {
    try {
      buildConfig(input, { source: 'test', baseDir: '/' })
      return []
    } catch (err) {
      return (err as ConfigError).issues.map((issue) => `${issue.path}: ${issue.message}`)
    }
  }

  it('refuses a short secret, a missing one, a bad factor and a bad cookie name, naming the key', () => {
    process.env.CASGATE_TEST_SHORT_SECRET = 'too-short'
    expect(issuesOf({ ...base, affinity: { secretEnv: 'CASGATE_TEST_SHORT_SECRET' } })).toEqual(['affinity.secretEnv: the secret has 9 characters, fewer than 32'])
    expect(issuesOf({ ...base, affinity: { secretEnv: 'CASGATE_TEST_UNSET_SECRET' } })).toEqual(['affinity.secretEnv: environment variable CASGATE_TEST_UNSET_SECRET is not set'])
    expect(issuesOf({ ...base, affinity: { secretFile: '/nonexistent/affinity.key' } })[0]).toMatch(/^affinity.secretFile: cannot read/)
    expect(issuesOf({ ...base, affinity: { balanceFactor: 0.5 } })[0]).toMatch(/^affinity.balanceFactor/)
    expect(issuesOf({ ...base, affinity: { cookieName: 'bad name' } })[0]).toMatch(/^affinity.cookieName/)
  })
})
