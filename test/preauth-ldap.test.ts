import { describe, expect, it } from 'vitest'
import { LdapProvider, bindNameFor } from '../src/preauth/ldap-provider.js'
import { labClient, labPki, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { closedPort } from './helpers/ports.js'
import { LDAP_SUFFIX, startSlapd } from './helpers/slapd.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// A real OpenLDAP slapd on loopback (installed by .ci/run), plain and over TLS with the lab CA.
const USERS = { jdoe: 'Correct-Horse-1', 'o,brien': 'Comma-In-Name-2' }
const BIND_NAME = `uid={user},ou=people,${LDAP_SUFFIX}`
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

describe('LDAP credential provider against slapd', () => {
  it('binds as the user over LDAPS with the configured CA: right, wrong, unknown, empty password, a name that needs escaping', async () => {
    const pki = await labPki()
    const slapd = await startSlapd(USERS, pki)
    const provider = new LdapProvider({ urls: [slapd.ldapsUrl], bindName: BIND_NAME, startTls: false, timeoutMs: 3_000 }, pki.root.certPem)
    expect(await provider.check('jdoe', USERS.jdoe)).toBe('valid')
    expect(await provider.check('jdoe', 'wrong')).toBe('invalid')
    expect(await provider.check('nobody', 'whatever')).toBe('invalid')
    // An empty password would be an anonymous bind, which slapd accepts: never sent.
    expect(await provider.check('jdoe', '')).toBe('invalid')
    expect(bindNameFor(BIND_NAME, 'o,brien')).toBe(`uid=o\\,brien,ou=people,${LDAP_SUFFIX}`)
    expect(await provider.check('o,brien', USERS['o,brien'])).toBe('valid')
    // DN injection: a crafted name cannot bind as someone else.
    expect(await provider.check(`jdoe,ou=people,${LDAP_SUFFIX}`, USERS.jdoe)).toBe('invalid')
    // StartTLS on the plain port works too; a wrong CA fails as unavailable, not as a bad password.
    expect(await new LdapProvider({ urls: [slapd.ldapUrl], bindName: BIND_NAME, startTls: true, timeoutMs: 3_000 }, pki.root.certPem).check('jdoe', USERS.jdoe)).toBe('valid')
    const stranger = await (await import('../src/certificates/lab-ca.js')).createLabPki(['other.test'])
    expect(await new LdapProvider({ urls: [slapd.ldapsUrl], bindName: BIND_NAME, startTls: false, timeoutMs: 3_000 }, stranger.root.certPem).check('jdoe', USERS.jdoe)).toBe('unavailable')
  })

  it('tries the next server when the first is unreachable, and says unavailable when none answers', async () => {
    const pki = await labPki()
    const slapd = await startSlapd(USERS, pki)
    const down = `ldaps://127.0.0.1:${await closedPort()}`
    const provider = new LdapProvider({ urls: [down, slapd.ldapsUrl], bindName: BIND_NAME, startTls: false, timeoutMs: 2_000 }, pki.root.certPem)
    expect(await provider.check('jdoe', USERS.jdoe)).toBe('valid')
    await slapd.stop()
    expect(await provider.check('jdoe', USERS.jdoe)).toBe('unavailable')
  })
})

describe('preauthentication through casgate with LDAP', () => {
  it('Basic: success, failure, a cached success while the directory is down, 503 for anything new', async () => {
    const pki = await labPki()
    const slapd = await startSlapd(USERS, pki)
    const servers = await startEmulators(1)
    const ca = writeFiles(tempDir(), { 'ldap-ca.pem': pki.root.certPem })['ldap-ca.pem']
    const gateway = await startLabGateway({
      mode: 'offload',
      servers: servers.map((s) => s.url),
      extra: { health: { enabled: false }, preauth: { ldap: { urls: [slapd.ldapsUrl], bindName: BIND_NAME, ca } } }
    })
    const client = await labClient()
    const eas = (authorization: string) => send(gateway, '/Microsoft-Server-ActiveSync?Cmd=Ping&User=jdoe&DeviceId=D1&DeviceType=iPhone', { dispatcher: client, method: 'POST', body: 'x', headers: { authorization } })
    expect((await eas(basic('jdoe', USERS.jdoe))).status).toBe(200)
    expect((await eas(basic('jdoe', 'wrong'))).status).toBe(401)
    await slapd.stop()
    // The phone's next Ping does not need the directory: its success is cached (as a keyed hash).
    expect((await eas(basic('jdoe', USERS.jdoe))).status).toBe(200)
    const unavailable = await eas(basic('jdoe', 'another-guess'))
    expect(unavailable.status).toBe(503)
    expect(unavailable.headers['retry-after']).toBe('30')
    expect(JSON.parse(unavailable.text).code).toBe('CASGATE_ERR_PREAUTH_UNAVAILABLE')
    // The form says so in words, and does not count it as a failed logon.
    const page = await send(gateway, '/casgate/logon', { dispatcher: client })
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!
    const cookie = String(page.headers['set-cookie']).split(';')[0]!
    const form = await send(gateway, '/casgate/logon', {
      dispatcher: client,
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ csrf, username: 'jdoe', password: USERS.jdoe }).toString()
    })
    expect(form.status).toBe(503)
    expect(form.text).toContain('Sign-in is unavailable right now')
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-failed')).toHaveLength(1)
    expect(gateway.logs.raw.join('')).not.toContain(USERS.jdoe)
  })

  it('refuses ldap:// without StartTLS in the configuration, naming the key', async () => {
    await expect(startLabGateway({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { preauth: { ldap: { urls: ['ldap://dc1.contoso.test'], bindName: '{user}@contoso.test' } } } }))
      .rejects.toThrow(/preauth\.ldap\.urls: ldap:\/\/ without startTls sends every user's password in clear text/)
  })
})
