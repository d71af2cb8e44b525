import { describe, expect, it } from 'vitest'
import type { Dispatcher } from 'undici'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import type { Gateway } from '../src/gateway/gateway.js'
import { hashPassword } from '../src/auth/password-hash.js'
import { labClient, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// Issue 12 item 8, the forms parts: one cookie reading for sessions and for stripping, a CSRF
// token bound to its pre-session by an HMAC, and return URLs that are always a valid Location.

const PASSWORD = 'Correct-Horse-1'
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

async function formsLab (): Promise<{ gateway: Gateway, client: Dispatcher }> {
  const servers = await startEmulators(1)
  const usersFile = writeFiles(tempDir(), { 'users.txt': `jdoe:${await hashPassword(PASSWORD, 14)}\n` })['users.txt']
  const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra: { health: { enabled: false }, preauth: { usersFile } } })
  return { gateway, client: await labClient() }
}

/** openForm fetches the sign-in page: its pre-session cookie and the token and return URL the page carries. */
async function openForm (gateway: Gateway, client: Dispatcher, query = '?url=%2Fowa%2F'): Promise<{ preSession: string, csrf: string, url: string }> {
  const page = await send(gateway, `/casgate/logon${query}`, { dispatcher: client })
  expect(page.status).toBe(200)
  return {
    preSession: /CasgateCsrf=([^;]+)/.exec(String(page.headers['set-cookie']))![1]!,
    csrf: /name="csrf" value="([^"]+)"/.exec(page.text)![1]!,
    url: /name="url" value="([^"]*)"/.exec(page.text)![1]!.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
  }
}

async function post (gateway: Gateway, client: Dispatcher, cookie: string, fields: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number, location: string | undefined, session: string | undefined, text: string }> {
  const response = await send(gateway, '/casgate/logon', { dispatcher: client, method: 'POST', headers: { ...FORM, cookie, ...headers }, body: new URLSearchParams({ username: 'jdoe', password: PASSWORD, url: '/owa/', ...fields }).toString() })
  return {
    status: response.status,
    location: response.headers.location as string | undefined,
    session: /CasgateSession=([^;]+)/.exec(String(response.headers['set-cookie'] ?? ''))?.[1],
    text: response.text
  }
}

async function signIn (gateway: Gateway, client: Dispatcher): Promise<string> {
  const form = await openForm(gateway, client)
  const response = await post(gateway, client, `CasgateCsrf=${form.preSession}`, { csrf: form.csrf })
  expect(response.status).toBe(303)
  return response.session!
}

describe('one cookie reading for sessions and for what Exchange receives', () => {
  it('takes a session smuggled into another cookie\'s value for no session, and never forwards its value', async () => {
    const { gateway, client } = await formsLab()
    const session = await signIn(gateway, client)
    // RFC 6265 §4.2.1: pairs are separated by ';' only, so this is a cookie "a" with the value "x CasgateSession=…".
    for (const cookie of [`a=x CasgateSession=${session}`, `a=x,CasgateSession=${session}`, `casgatesession=${session}`]) {
      const page = await send(gateway, '/owa/', { dispatcher: client, headers: { accept: 'text/html', cookie } })
      expect(page.status, cookie).toBe(302)
      expect((await send(gateway, '/owa/service.svc', { dispatcher: client, method: 'POST', headers: { cookie } })).status, cookie).toBe(440)
      // On a vdir without preauthentication the request reaches Exchange, without the session in any form.
      const mapi = await send(gateway, '/mapi/emsmdb/', { dispatcher: client, method: 'POST', headers: { cookie: `${cookie}; theme=dark` } })
      expect(mapi.status).toBe(200)
      const seen = JSON.parse(mapi.text) as EchoBody
      expect(String(seen.headers.cookie), cookie).not.toContain(session)
      expect(String(seen.headers.cookie)).toMatch(/(^|; )theme=dark$/)
    }
    // With a real session beside it: the session counts, the smuggled copy does not travel on.
    const owa = await send(gateway, '/owa/service.svc', { dispatcher: client, method: 'POST', headers: { cookie: `CasgateSession=${session}; a=x CasgateSession=${session}; theme=dark` } })
    expect(owa.status).toBe(200)
    expect(String((JSON.parse(owa.text) as EchoBody).headers.cookie)).not.toContain(session)
    // Look-alikes that are other cookies travel on unchanged; tolerant spacing still reads the session.
    const lookAlikes = await send(gateway, '/owa/service.svc', { dispatcher: client, method: 'POST', headers: { cookie: `MyCasgateSession=1;CasgateSession=${session};CasgateSessionX=2` } })
    expect(lookAlikes.status).toBe(200)
    expect((JSON.parse(lookAlikes.text) as EchoBody).headers.cookie).toBe('MyCasgateSession=1; CasgateSessionX=2')
  })
})

describe('the sign-in form\'s CSRF token is bound to its pre-session', () => {
  it('refuses a planted cookie with its own value as token, a token of another pre-session, and posts from elsewhere', async () => {
    const { gateway, client } = await formsLab()
    const refused = (response: { status: number, session: string | undefined, text: string }): void => {
      expect(response.status).toBe(403)
      expect(response.session).toBeUndefined()
      expect(response.text).toContain('Your sign-in page expired.')
    }
    // A plain double-submit pair chosen by the attacker (no Origin header: not a browser).
    const chosen = 'A'.repeat(24)
    refused(await post(gateway, client, `CasgateCsrf=${chosen}`, { csrf: chosen }))
    refused(await post(gateway, client, `CasgateCsrf=${'B'.repeat(43)}`, { csrf: 'B'.repeat(43) }))
    // The attacker's own genuine token with the victim's pre-session cookie.
    const attacker = await openForm(gateway, client)
    const victim = await openForm(gateway, client)
    refused(await post(gateway, client, `CasgateCsrf=${victim.preSession}`, { csrf: attacker.csrf }))
    refused(await post(gateway, client, '', { csrf: victim.csrf }))
    // A genuine pair posted by a sibling subdomain or another site.
    refused(await post(gateway, client, `CasgateCsrf=${victim.preSession}`, { csrf: victim.csrf }, { 'sec-fetch-site': 'same-site' }))
    refused(await post(gateway, client, `CasgateCsrf=${victim.preSession}`, { csrf: victim.csrf }, { origin: 'https://evil.contoso.test' }))

    // Legitimate: the pair from one page, from a browser (same-origin) or a plain client.
    const browser = await post(gateway, client, `CasgateCsrf=${victim.preSession}`, { csrf: victim.csrf }, { origin: 'https://mail.contoso.test', 'sec-fetch-site': 'same-origin' })
    expect(browser.status).toBe(303)
    const plain = await openForm(gateway, client)
    // A cookie planted beside the genuine one (more specific path, so sent first) cannot shadow it.
    expect((await post(gateway, client, `CasgateCsrf=${chosen}; CasgateCsrf=${plain.preSession}`, { csrf: plain.csrf })).status).toBe(303)
  })
})

describe('return URLs', () => {
  it('redirects to a return URL with é, 中 or an emoji after the password (UTF-8, percent-encoded), never 500', async () => {
    const { gateway, client } = await formsLab()
    const session = await signIn(gateway, client)
    for (const [raw, encoded] of [
      ['/owa/?path=/mail/é', '/owa/?path=/mail/%C3%A9'],
      ['/owa/#path=/calendar/中', '/owa/#path=/calendar/%E4%B8%AD'],
      ['/owa/?q=😀 "x"', '/owa/?q=%F0%9F%98%80%20%22x%22'],
      ['/owa/?x=%C3%A9', '/owa/?x=%C3%A9']
    ] as const) {
      // The page keeps the return URL already encoded; a form posted with the raw text works alike.
      const form = await openForm(gateway, client, `?url=${encodeURIComponent(raw)}`)
      expect(form.url).toBe(encoded)
      for (const url of [form.url, raw]) {
        const fresh = await openForm(gateway, client)
        const response = await post(gateway, client, `CasgateCsrf=${fresh.preSession}`, { csrf: fresh.csrf, url })
        expect(response.status, url).toBe(303)
        expect(response.location).toBe(encoded)
      }
      // The redirect leads to Exchange with the path as sent.
      const path = encoded.split('#')[0]!
      const followed = await send(gateway, path, { dispatcher: client, method: 'POST', headers: { cookie: `CasgateSession=${session}` } })
      expect(followed.status).toBe(200)
      expect((JSON.parse(followed.text) as EchoBody).url).toBe(path)
    }
    // Control characters give the default, as an off-site URL does.
    for (const url of ['/owa/\u0000x', '/owa/\u007fx', '//evil.example/é']) {
      const fresh = await openForm(gateway, client)
      expect((await post(gateway, client, `CasgateCsrf=${fresh.preSession}`, { csrf: fresh.csrf, url })).location, url).toBe('/owa/')
    }
  })
})
