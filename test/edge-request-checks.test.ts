import { describe, expect, it } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { labClient, rawExchange, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { usersFile } from './helpers/users.js'

// Ways around the gateway on the HTTP path (issue 12, items 2, 3, 5, 8): each attack goes over
// a real TLS socket, and the emulated Exchange server's request log shows it never arrived.

const EAS = '/Microsoft-Server-ActiveSync'
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
const b64url = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const JWT = `${b64url({ alg: 'RS256', typ: 'JWT', kid: 'k1' })}.${b64url({ aud: 'https://mail.contoso.test', iss: 'https://sts.windows.net/t/' })}.c2lnbmF0dXJl`

function users (): Promise<string> {
  return usersFile({ jdoe: 'Correct-Horse-1' })
}

async function edgeLab (preauth = true) {
  const servers = await startEmulators(1)
  const gateway = await startLabGateway({
    mode: 'offload',
    servers: servers.map((s) => s.url),
    vdirs: { '/ecp': { enabled: true } },
    extra: { health: { enabled: false }, ...(preauth ? { preauth: { usersFile: await users() } } : {}) }
  })
  return { gateway, server: servers[0]!, client: await labClient() }
}

const status = (answer: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)

describe('a raw # never makes a path a health page', () => {
  it('refuses # in a request target (400) and treats %23 as a literal character', async () => {
    const { gateway, server } = await edgeLab()
    for (const vdir of ['/owa', '/ecp', '/EWS', EAS]) {
      const answer = await rawExchange(gateway, `GET ${vdir}#/healthcheck.htm HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close\r\n\r\n`)
      expect(status(answer), vdir).toBe(400)
      // Encoded, '#' is part of a name: /owa# is no published vdir, and /owa/x#/… no health page.
      expect(status(await rawExchange(gateway, `GET ${vdir}%23/healthcheck.htm HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close\r\n\r\n`)), vdir).toBe(404)
      expect(status(await rawExchange(gateway, `GET ${vdir}/x%23/healthcheck.htm HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close\r\n\r\n`)), vdir).toBeGreaterThanOrEqual(401)
    }
    expect(server.seen).toEqual([])
    // The real health pages still pass without credentials.
    expect((await send(gateway, '/owa/healthcheck.htm', { dispatcher: await labClient() })).status).toBe(200)
  })

  it('refuses names Windows would serve as another name (trailing dot or space) and encoded dot segments', async () => {
    const { gateway, server, client } = await edgeLab()
    for (const path of ['/owa/healthcheck.htm.', '/owa/healthcheck.htm%20', '/owa/%2e%2e/ecp/', '/owa/.%2E/ecp/', '/owa/..%5cecp/', '/EWS/mrsproxy.svc%2f..%2fExchange.asmx']) {
      expect((await send(gateway, path, { dispatcher: client })).status, path).toBe(400)
    }
    expect(server.seen).toEqual([])
  })
})

describe('Bearer tokens pass only where modern-auth clients send them, and only as JWTs', () => {
  it('sends OWA and ECP Bearer requests to the form, and needs a JWT on EWS', async () => {
    const { gateway, server, client } = await edgeLab()
    const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
    expect((await send(gateway, '/owa/', { dispatcher: client, headers: bearer(JWT) })).status).toBe(440)
    expect((await send(gateway, '/ecp/DDI/DDIService.svc/GetList', { dispatcher: client, method: 'POST', body: '{}', headers: bearer(JWT) })).status).toBe(440)
    expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'POST', headers: bearer('anything') })).status).toBe(401)
    expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'POST', headers: bearer(`${b64url({ alg: 'none' })}.${b64url({})}.`) })).status).toBe(401)
    expect(server.seen).toEqual([])
    expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'POST', headers: bearer(JWT) })).status).toBe(200)
    expect((await send(gateway, `${EAS}?Cmd=Sync`, { dispatcher: client, method: 'POST', headers: bearer(JWT) })).status).toBe(200)
    expect(server.seen).toEqual(['POST /EWS/Exchange.asmx', `POST ${EAS}?Cmd=Sync`])
  })
})

describe('OPTIONS', () => {
  it('skips preauthentication only without a body and only where Outlook and devices send it, never on OWA or ECP', async () => {
    const { gateway, server, client } = await edgeLab()
    expect((await send(gateway, '/ecp/DDI/DDIService.svc/SetObject', { dispatcher: client, method: 'OPTIONS', body: '{"identity":"x"}' })).status).toBe(440)
    expect((await send(gateway, '/owa/', { dispatcher: client, method: 'OPTIONS' })).status).toBe(440)
    expect((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'OPTIONS', body: '<x/>' })).status).toBe(401)
    expect(server.seen).toEqual([])
    expect((await send(gateway, EAS, { dispatcher: client, method: 'OPTIONS' })).status).toBe(200)
    expect(server.seen).toEqual([`OPTIONS ${EAS}`])
  })
})

describe('one Authorization, one Host, one session', () => {
  it('refuses a second Authorization, Host or session cookie with 400 and forwards nothing', async () => {
    const { gateway, server } = await edgeLab()
    const right = basic('jdoe', 'Correct-Horse-1')
    for (const extra of [
      `Authorization: ${right}\r\nAuthorization: ${basic('jdoe', 'guess')}\r\n`,
      `Authorization: ${right}\r\nAuthorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==\r\n`,
      `Authorization: ${right}\r\nHost: evil.example\r\n`,
      `Authorization: ${right}\r\nCookie: CasgateSession=a\r\nCookie: CasgateSession=b\r\n`,
      `Authorization: ${right}\r\nCookie: CasgateSession=a; CasgateSession=b\r\n`
    ]) {
      const answer = await rawExchange(gateway, `POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.contoso.test\r\n${extra}Content-Length: 0\r\nConnection: close\r\n\r\n`)
      expect(status(answer), extra).toBe(400)
      expect(answer).toContain('CASGATE_ERR_BAD_REQUEST')
    }
    expect(server.seen).toEqual([])
    // Credentials two base64 readers read differently are none: casgate would check one user, Exchange see another.
    const smuggled = `${right}Ym9iOmd1ZXNz`.replace(/=*Ym9i/, '==Ym9i')
    expect(status(await rawExchange(gateway, `POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.contoso.test\r\nAuthorization: ${smuggled}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`))).toBe(401)
    expect(server.seen).toEqual([])
    const one = await rawExchange(gateway, `POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.contoso.test\r\nAuthorization: ${right}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    expect(status(one)).toBe(200)
  })
})

describe('casgate\'s own cookies', () => {
  it('never reach Exchange on an RPC channel either', async () => {
    const { gateway } = await edgeLab()
    const answer = await rawExchange(gateway, 'RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail.contoso.test\r\nCookie: a=1; CasgateSession=sealed-value; casgatesession=x; b=2\r\nContent-Length: 1\r\n\r\nx')
    const echo = JSON.parse(answer.slice(answer.indexOf('{'))) as EchoBody
    expect(echo.headers.cookie).toBe('a=1; b=2')
  })
})

describe('Host', () => {
  it('sends the name the client connected to when an HTTP/1.0 request has no Host, never the backend\'s address', async () => {
    const { gateway, server } = await edgeLab(false)
    const answer = await rawExchange(gateway, 'GET /owa/ HTTP/1.0\r\n\r\n')
    const echo = JSON.parse(answer.slice(answer.indexOf('{'))) as EchoBody
    expect(echo.headers.host).toBe('mail.contoso.test')
    expect(echo.headers['x-forwarded-host']).toBe('mail.contoso.test')
    expect(JSON.stringify(echo.headers)).not.toContain(new URL(server.url).host)
  })

  it('forwards a fully qualified Host (trailing dot) normalised, and refuses a malformed one', async () => {
    const { gateway, client } = await edgeLab(false)
    const echo = JSON.parse((await send(gateway, '/owa/', { dispatcher: client, headers: { host: 'MAIL.contoso.test.' } })).text) as EchoBody
    expect(echo.headers.host).toBe('mail.contoso.test')
    for (const host of ['mail.contoso.test:99999', 'mail contoso', 'mail.contoso.test@evil.example', '[::1']) {
      expect(status(await rawExchange(gateway, `GET /owa/ HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)), host).toBe(400)
    }
  })
})
