import { describe, expect, it } from 'vitest'
import type { Dispatcher } from 'undici'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import type { Gateway } from '../src/gateway/gateway.js'
type LabGateway = Awaited<ReturnType<typeof startLabGateway>>
import { labClient, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { sharedFile, usersFile } from './helpers/users.js'

const EAS = '/Microsoft-Server-ActiveSync'
const PASSWORDS: Record<string, string> = { jdoe: 'Correct-Horse-1', asmith: 'Battery-Staple-2', bwayne: 'Not-Batman-3' }
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

// One users file for the whole file (scrypt at its lowest accepted cost, to keep tests quick).
function users (): Promise<string> {
  return usersFile(PASSWORDS)
}

async function preauthLab (preauth: Record<string, unknown> = {}, vdirs: Record<string, unknown> = {}): Promise<{ gateway: LabGateway, client: Dispatcher }> {
  const servers = await startEmulators(2)
  const gateway = await startLabGateway({
    mode: 'offload',
    servers: servers.map((s) => s.url),
    vdirs: { '/ecp': { enabled: true }, ...vdirs },
    extra: { health: { enabled: false }, preauth: { usersFile: await users(), ...preauth } }
  })
  return { gateway, client: await labClient() }
}

const echo = (text: string): EchoBody => JSON.parse(text) as EchoBody

describe('Basic preauthentication (ActiveSync, EWS)', () => {
  it('answers 401 with a realm until the right password comes, then forwards the request unchanged', async () => {
    const { gateway, client } = await preauthLab()
    const path = `${EAS}?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone`
    const none = await send(gateway, path, { dispatcher: client, method: 'POST', body: 'x' })
    expect(none.status).toBe(401)
    expect(none.headers['www-authenticate']).toBe('Basic realm="Exchange", charset="UTF-8"')
    expect(JSON.parse(none.text).code).toBe('CASGATE_ERR_PREAUTH_REQUIRED')
    const wrong = await send(gateway, path, { dispatcher: client, method: 'POST', body: 'x', headers: { authorization: basic('CONTOSO\\jdoe', 'wrong') } })
    expect(wrong.status).toBe(401)
    const right = await send(gateway, path, { dispatcher: client, method: 'POST', body: 'x', headers: { authorization: basic('CONTOSO\\jdoe', PASSWORDS.jdoe!) } })
    expect(right.status).toBe(200)
    expect(echo(right.text).headers.authorization).toBe(basic('CONTOSO\\jdoe', PASSWORDS.jdoe!))
    // EWS too; NTLM is not Basic and gets the Basic challenge.
    expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, headers: { authorization: 'NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==' } })).status).toBe(401)
    expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, headers: { authorization: basic('asmith@contoso.test', PASSWORDS.asmith!) } })).status).toBe(200)
    // MAPI and OAB are not preauthenticated (Outlook cannot answer casgate).
    expect((await send(gateway, '/mapi/emsmdb/', { dispatcher: client })).status).toBe(200)
    const logs = gateway.logs.raw.join('')
    expect(logs).toContain('"event":"preauth-failed"')
    for (const password of Object.values(PASSWORDS)) expect(logs).not.toContain(password)
  })

  it('lets every exclusion reach the backend without credentials, while the neighbouring paths get 401 or the form', async () => {
    const { gateway, client } = await preauthLab({ exclude: ['/owa/custom-sso'] }, { '/autodiscover': { preauth: 'basic' } })
    const passes = async (path: string, method: Dispatcher.HttpMethod = 'GET', headers: Record<string, string> = {}): Promise<number> =>
      (await send(gateway, path, { dispatcher: client, method, headers })).status
    for (const path of [
      '/EWS/Exchange.asmx/WSSecurity', '/ews/exchange.asmx/wssecurity', '/EWS/Exchange.asmx/WSSecurity/x',
      '/EWS/mrsproxy.svc', '/EWS/MRSProxy.svc', '/autodiscover/autodiscover.svc', '/Autodiscover/Autodiscover.svc/WSSecurity',
      '/EWS/Exchange.asmx%2FWSSecurity', '/EWS/%45xchange.asmx/WSSecurity',
      '/owa/healthcheck.htm', `${EAS}/healthcheck.htm`, '/EWS/healthcheck.htm', '/owa/custom-sso', '/owa/custom-sso/callback'
    ]) expect(await passes(path), path).toBe(200)
    expect(await passes(EAS, 'OPTIONS')).toBe(200)
    expect(await passes('/EWS/Exchange.asmx', 'POST', { authorization: 'Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL21haWwifQ.c2ln' })).toBe(200)

    for (const path of ['/EWS/Exchange.asmx', '/EWS/Exchange.asmx/WSSecurityX', '/EWS/mrsproxy.svc.bak', '/autodiscover/autodiscover.xml', '/autodiscover/autodiscover.svcx', `${EAS}/healthcheck.htm/x`]) {
      expect(await passes(path), path).toBe(401)
    }
    // Forms vdirs send browsers to the form, scripts get 440.
    const owa = await send(gateway, '/owa/', { dispatcher: client, headers: { accept: 'text/html' } })
    expect(owa.status).toBe(302)
    expect(owa.headers.location).toBe('/casgate/logon?url=%2Fowa%2F')
    expect(await passes('/owa/custom-ssox', 'GET')).toBe(440)
    expect(await passes('/ecp/', 'POST')).toBe(440)
  })

  it('locks a user after repeated failures and an address spraying many users, answering exactly like a wrong password', async () => {
    const { gateway, client } = await preauthLab({ lockout: { userThreshold: 3, addressThreshold: 6, lockoutMs: 60_000 } })
    const attempt = async (user: string, password: string): Promise<{ status: number, text: string }> => {
      const response = await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, headers: { authorization: basic(user, password) } })
      return { status: response.status, text: response.text }
    }
    const wrong = await attempt('jdoe', 'guess-1')
    await attempt('jdoe', 'guess-2')
    await attempt('jdoe', 'guess-3') // the third failure locks jdoe
    const locked = await attempt('jdoe', PASSWORDS.jdoe!)
    expect(locked).toEqual(wrong)
    // Another user from the same address still gets in, until the address itself is locked.
    expect((await attempt('asmith', PASSWORDS.asmith!)).status).toBe(200)
    for (const user of ['u1', 'u2', 'u3']) await attempt(user, 'spray')
    expect(await attempt('bwayne', PASSWORDS.bwayne!)).toEqual(wrong)
    const events = gateway.logs.lines.filter((line) => line.event === 'preauth-lockout')
    expect(events).toEqual([
      expect.objectContaining({ user: 'jdoe', client: '127.0.0.1', lockedForMs: 60_000 }),
      expect.objectContaining({ client: '127.0.0.1', lockedForMs: 60_000 })
    ])
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-locked-out').map((line) => line.user)).toEqual(['jdoe', 'bwayne'])
  })
})

/** A minimal cookie jar for one site. */
class Jar {
  readonly cookies = new Map<string, string>()
  take (setCookie: string | string[] | undefined): void {
    for (const line of [setCookie ?? []].flat()) {
      const [pair = ''] = line.split(';')
      const at = pair.indexOf('=')
      const name = pair.slice(0, at)
      const value = pair.slice(at + 1)
      if (value === '' || /max-age=0/i.test(line)) this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
  }

  header (): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ')
  }
}

async function signIn (gateway: Gateway, client: Dispatcher, jar: Jar, user: string, password: string, returnUrl = '/owa/'): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, text: string }> {
  const page = await send(gateway, `/casgate/logon?url=${encodeURIComponent(returnUrl)}`, { dispatcher: client, headers: { cookie: jar.header() } })
  jar.take(page.headers['set-cookie'])
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!
  const response = await send(gateway, '/casgate/logon', {
    dispatcher: client,
    method: 'POST',
    headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded', origin: 'https://mail.contoso.test' },
    body: new URLSearchParams({ csrf, url: returnUrl, username: user, password }).toString()
  })
  jar.take(response.headers['set-cookie'])
  return response
}

describe('forms preauthentication (OWA, ECP)', () => {
  it('signs in through casgate\'s form and reaches Exchange as Basic, without casgate\'s cookies', async () => {
    const { gateway, client } = await preauthLab()
    const jar = new Jar()
    const page = await send(gateway, '/casgate/logon?url=%2Fowa%2F%3Fpath%3D%2Fmail', { dispatcher: client })
    expect(page.status).toBe(200)
    expect(page.headers['content-security-policy']).toContain("default-src 'none'")
    expect(page.text).toContain('<label for="username">')
    expect(page.text).toContain('autocomplete="current-password"')
    expect(page.text).not.toMatch(/<script|https?:\/\//)

    const bad = await signIn(gateway, client, jar, 'jdoe', 'nope')
    expect(bad.status).toBe(200)
    expect(bad.text).toContain('role="alert"')
    expect(bad.text).toContain('The user name or password is incorrect.')
    expect(jar.cookies.has('CasgateSession')).toBe(false)

    const good = await signIn(gateway, client, jar, 'CONTOSO\\jdoe', PASSWORDS.jdoe!, '/owa/?path=/mail')
    expect(good.status).toBe(303)
    expect(good.headers.location).toBe('/owa/?path=/mail')
    expect(String(good.headers['set-cookie'])).toMatch(/CasgateSession=[\w-]+; Path=\/; Secure; HttpOnly; SameSite=Lax/)
    jar.cookies.set('theme', 'dark')
    const owa = await send(gateway, '/owa/service.svc?action=GetFolder', { dispatcher: client, method: 'POST', headers: { cookie: jar.header() } })
    expect(owa.status).toBe(200)
    const seen = echo(owa.text)
    expect(seen.headers.authorization).toBe(basic('CONTOSO\\jdoe', PASSWORDS.jdoe!))
    expect(seen.headers.cookie).toMatch(/^(CasgateAffinity-cas=[\w.-]+; )?theme=dark$/)
    // The password is inside the encrypted cookie only: not readable in it, not in the logs.
    expect(Buffer.from(jar.cookies.get('CasgateSession')!, 'base64url').toString('latin1')).not.toContain(PASSWORDS.jdoe)
    expect(gateway.logs.raw.join('')).not.toContain(PASSWORDS.jdoe)
    expect(gateway.logs.lines.find((line) => line.url === '/owa/service.svc?action=GetFolder')).toMatchObject({ user: 'CONTOSO\\jdoe' })
  })

  it('rejects a tampered or foreign session cookie and a form posted without its CSRF token; sign-out clears the session', async () => {
    const { gateway, client } = await preauthLab()
    const jar = new Jar()
    await signIn(gateway, client, jar, 'jdoe', PASSWORDS.jdoe!)
    const session = jar.cookies.get('CasgateSession')!
    const flipped = session.slice(0, 20) + (session[20] === 'A' ? 'B' : 'A') + session.slice(21)
    for (const value of [flipped, session.slice(0, -4), 'garbage', '']) {
      const response = await send(gateway, '/owa/', { dispatcher: client, headers: { accept: 'text/html', cookie: `CasgateSession=${value}` } })
      expect(response.status, value).toBe(302)
    }
    expect((await send(gateway, '/owa/', { dispatcher: client, headers: { cookie: jar.header() } })).status).toBe(200)

    // Login CSRF: a form from another site has neither the token nor the cookie.
    const forged = await send(gateway, '/casgate/logon', {
      dispatcher: client,
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
      body: new URLSearchParams({ csrf: 'x'.repeat(32), username: 'jdoe', password: PASSWORDS.jdoe! }).toString()
    })
    expect(forged.status).toBe(403)
    expect(forged.headers['set-cookie']).not.toMatch(/CasgateSession=[^;]/)
    // An open redirect is not: the return URL stays on this site.
    const offsite = await signIn(gateway, client, new Jar(), 'jdoe', PASSWORDS.jdoe!, '//evil.example/')
    expect(offsite.headers.location).toBe('/owa/')

    const signOut = await send(gateway, '/owa/logoff.owa', { dispatcher: client, headers: { cookie: jar.header() } })
    expect(signOut.status).toBe(302)
    expect(signOut.headers.location).toBe('/casgate/logon?signedOut=1')
    jar.take(signOut.headers['set-cookie'])
    expect(jar.cookies.has('CasgateSession')).toBe(false)
    expect((await send(gateway, '/owa/', { dispatcher: client, headers: { accept: 'text/html', cookie: jar.header() } })).status).toBe(302)
  })

  it('ends a session after its idle timeout, and after its absolute lifetime however active', async () => {
    const { gateway, client } = await preauthLab({ idleTimeoutMs: 2_500, absoluteTimeoutMs: 5_000 })
    const jar = new Jar()
    await signIn(gateway, client, jar, 'jdoe', PASSWORDS.jdoe!)
    const cookie = jar.header()
    await new Promise((resolve) => setTimeout(resolve, 3_600))
    expect((await send(gateway, '/owa/', { dispatcher: client, headers: { accept: 'text/html', cookie } })).status).toBe(302)
    // Absolute: the session never idles out (seen every half second), yet ends at 5 s.
    const active = new Jar()
    await signIn(gateway, client, active, 'jdoe', PASSWORDS.jdoe!)
    const started = Date.now()
    let status = 200
    while (status === 200 && Date.now() - started < 9_000) {
      await new Promise((resolve) => setTimeout(resolve, 500))
      const response = await send(gateway, '/owa/', { dispatcher: client, headers: { accept: 'text/html', cookie: active.header() } })
      active.take(response.headers['set-cookie'])
      status = response.status
    }
    expect(status).toBe(302)
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_900)
  })

  it('is stateless: a second instance with the same session secret accepts the session', async () => {
    // Not the same certificate any more: the session secret is no longer derived from its key (issue 12).
    const { 'session.key': secretFile } = { 'session.key': sharedFile('session.key', 'a shared session secret, 32+ characters long\n') }
    const first = await preauthLab({ secretFile })
    const second = await preauthLab({ secretFile })
    const jar = new Jar()
    await signIn(first.gateway, first.client, jar, 'asmith', PASSWORDS.asmith!)
    const response = await send(second.gateway, '/owa/', { dispatcher: second.client, headers: { cookie: jar.header() } })
    expect(response.status).toBe(200)
  })
})
