import { describe, expect, it } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { labClient, rawExchange, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { admin } from './helpers/admin.js'

// The exploit rule pack at work over real sockets: attacks get 403 CASGATE_ERR_BLOCKED and never
// reach the emulated Exchange server, their legitimate look-alikes do; blocks are logged once
// and counted per rule; RPC requests and what is pipelined behind them are judged alike.

async function rulesLab (extra: Record<string, unknown> = {}) {
  const servers = await startEmulators(1)
  const gateway = await startLabGateway({
    mode: 'offload',
    servers: servers.map((s) => s.url),
    extra: { health: { enabled: false }, admin: { host: '127.0.0.1', port: 0 }, ...extra }
  })
  return { gateway, server: servers[0]!, client: await labClient() }
}

const ATTACKS: Array<{ path: string, rule: string, cookie?: string, method?: 'GET' | 'POST' }> = [
  { path: '/owa/auth/x.js', cookie: 'X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; X-BEResource=localhost/owa/auth/logon.aspx?~3;', rule: 'proxylogon-anonresource-backend' },
  { path: '/owa/y.js', cookie: 'X-BEResource=EX01.contoso.local/EWS/Exchange.asmx?a=~1942062522;', rule: 'proxylogon-beresource' },
  { path: '/autodiscover/autodiscover.json?@evil.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@evil.com', rule: 'proxyshell-explicit-logon-ssrf' },
  { path: '/autodiscover/autodiscover.json?@evil.com/powershell/?X-Rps-CAT=VgEAVAdXaW5kb3dz&Email=autodiscover/autodiscover.json%3F@evil.com', rule: 'proxyshell-explicit-logon-ssrf' },
  { path: '/autodiscover/autodiscover.json?a..foo.var/owa/?&Email=autodiscover/autodiscover.json?a..foo.var&Protocol=XYZ&FooProtocol=%50owershell', rule: 'proxyshell-email-autodiscover' },
  // Double-encoded ProxyShell: caught by its own rule before the ProxyNotShell one.
  { path: '/autodiscover/autodiscover.json%253F%2540evil.com/Powershell', rule: 'proxyshell-explicit-logon-ssrf' },
  { path: '/autodiscover/autodiscover.json?x=%2570owershell', rule: 'proxynotshell-autodiscover-powershell' },
  { path: '/autodiscover/autodiscover.json?@evil.com/PushNotifications/x', cookie: 'Email=autodiscover/autodiscover.json%3F@evil.com', rule: 'proxyshell-explicit-logon-ssrf' },
  { path: '/autodiscover/autodiscover.json?@evil.com/x', cookie: 'Email=autodiscover/autodiscover.json%3F@evil.com', rule: 'proxyshell-email-autodiscover-cookie' },
  { path: '/owa/mastermailbox%40outlook.com/powershell', rule: 'owassrf-owa-explicit-logon-powershell' },
  { path: '/owa/mastermailbox%2540outlook.com/%2570owershell', rule: 'owassrf-owa-explicit-logon-powershell' },
  { path: '/EWS/x/powershell/', rule: 'powershell-path-outside-powershell-vdir' }
]

const LEGITIMATE: Array<{ path: string, cookie?: string }> = [
  { path: '/autodiscover/autodiscover.json/v1.0/jdoe@contoso.com?Protocol=ActiveSync&RedirectCount=1' },
  { path: '/autodiscover/autodiscover.json?Email=jdoe%40contoso.com&Protocol=EWS&RedirectCount=1' },
  { path: '/owa/?ae=Item&t=IPM.Note&id=RgAAAAB&email=jdoe%40contoso.com', cookie: 'X-BackEndCookie=S-1-5-21-1=u56Lnp2ejJqBz8jLyMbLyJ7SzZ7Nm9LLmsvN0sbIzc7SnsbKyJzPyMyZzMzGgYHNz87G0s/I0s7Oq83Pxc7Pxc7L; X-OWA-CANARY=abc; ClientId=8C0D' },
  { path: '/owa/jdoe@contoso.com/' },
  { path: '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe@contoso.com&DeviceId=ABC123&DeviceType=iPhone' },
  { path: '/mapi/emsmdb/?MailboxId=0b8a9c2d@contoso.com' }
]

describe('the Exchange exploit rule pack', () => {
  it('blocks each attack with 403 CASGATE_ERR_BLOCKED, logs it once and counts it per rule; the look-alikes pass', async () => {
    const { gateway, server, client } = await rulesLab()
    for (const attack of ATTACKS) {
      const response = await send(gateway, attack.path, { dispatcher: client, ...(attack.cookie ? { headers: { cookie: attack.cookie } } : {}) })
      expect(response.status, attack.path).toBe(403)
      expect(JSON.parse(response.text), attack.path).toMatchObject({ code: 'CASGATE_ERR_BLOCKED', message: `request blocked by rule ${attack.rule}` })
    }
    expect(server.seen).toEqual([])
    for (const legitimate of LEGITIMATE) {
      expect((await send(gateway, legitimate.path, { dispatcher: client, ...(legitimate.cookie ? { headers: { cookie: legitimate.cookie } } : {}) })).status, legitimate.path).toBe(200)
    }
    expect(server.seen).toHaveLength(LEGITIMATE.length)
    const blocks = gateway.logs.lines.filter((line) => line.event === 'rule-block')
    expect(blocks.map((line) => line.rule)).toEqual(ATTACKS.map((attack) => attack.rule))
    expect(blocks[0]).toMatchObject({ client: '127.0.0.1', url: ATTACKS[0]!.path })
    // A byte ASP.NET trims off a cookie name (0xA0, no-break space) does not hide it.
    const nbsp = await rawExchange(gateway, Buffer.from('GET /owa/auth/x.js HTTP/1.1\r\nHost: mail.contoso.test\r\nCookie: \u00a0X-BEResource=localhost/owa/auth/logon.aspx?~3\r\nConnection: close\r\n\r\n', 'latin1'))
    expect(nbsp).toMatch(/^HTTP\/1\.1 403/)
    expect(server.seen).toHaveLength(LEGITIMATE.length)
    const status = (await admin(gateway, '/status')).json as { rules: { pack: string, blocked: Record<string, number> } }
    expect(status.rules.blocked['proxylogon-beresource']).toBe(2)
    expect(status.rules.pack).toMatch(/^exchange-/)
    expect(status.rules.blocked['owassrf-owa-explicit-logon-powershell']).toBe(2)
    expect(status.rules.blocked['proxylogon-anonresource-backend']).toBe(1)
  })

  it('judges RPC requests and what follows them by the same rules', async () => {
    const { gateway, server } = await rulesLab()
    const cookie = 'Cookie: X-AnonResource-Backend=localhost/ecp/default.flt?~3\r\n'
    const direct = await rawExchange(gateway, `RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail.contoso.test\r\n${cookie}Content-Length: 0\r\n\r\n`)
    expect(direct).toMatch(/^HTTP\/1\.1 403/)
    expect(direct).toContain('CASGATE_ERR_BLOCKED')
    const rpc = 'RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: 0\r\n'
    const behind = await rawExchange(gateway, `${rpc}\r\n${rpc}${cookie}\r\n`)
    expect(behind).toMatch(/^HTTP\/1\.1 200/)
    expect(server.seen).toEqual(['RPC_IN_DATA /rpc/rpcproxy.dll'])
    expect(gateway.logs.lines.filter((line) => line.event === 'rule-block')).toHaveLength(2)
  })

  it('strips headers only Exchange\'s own front end may set', async () => {
    const { gateway, client } = await rulesLab()
    const echo = JSON.parse((await send(gateway, '/EWS/Exchange.asmx', {
      dispatcher: client,
      headers: { 'x-commonaccesstoken': 'VgEAVAdXaW5kb3dz', 'x-isfromcafe': '1', 'x-sourcecafeserver': 'ex1', msexchproxyuri: 'https://ex1/ews', 'x-backend-diag-x': '1', 'x-anchormailbox': 'jdoe@contoso.com', 'client-request-id': 'c1', X_CommonAccessToken: 'VgEA', X_Forwarded_For: '203.0.113.9' }
    })).text) as EchoBody
    // IIS reads X_CommonAccessToken as HTTP_X_COMMONACCESSTOKEN, the same server variable.
    for (const name of ['x-commonaccesstoken', 'x-isfromcafe', 'x-sourcecafeserver', 'msexchproxyuri', 'x-backend-diag-x', 'x_commonaccesstoken', 'x_forwarded_for']) expect(echo.headers[name], name).toBeUndefined()
    expect(echo.headers['x-anchormailbox']).toBe('jdoe@contoso.com')
    expect(echo.headers['client-request-id']).toBe('c1')
  })

  it('lets a rule be switched off by id, loudly, and refuses an unknown id in the configuration', async () => {
    const { gateway, server, client } = await rulesLab({ rules: { disable: ['powershell-path-outside-powershell-vdir'] } })
    expect((await send(gateway, '/EWS/x/powershell/', { dispatcher: client })).status).toBe(200)
    expect(server.seen).toEqual(['GET /EWS/x/powershell/'])
    expect(gateway.logs.lines.some((line) => line.rule === 'powershell-path-outside-powershell-vdir' && line.level === 40)).toBe(true)
    await expect(rulesLab({ rules: { disable: ['proxylogon-no-such-rule'] } })).rejects.toThrow(/rules\.disable\[0\]: "proxylogon-no-such-rule" is not a rule of pack exchange-/)
  })
})
