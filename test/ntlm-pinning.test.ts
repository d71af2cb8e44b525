import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { Client } from 'undici'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { labPki, startLabGateway } from './helpers/lab.js'
import { logOn } from './helpers/ntlm-client.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { onTestFinished } from 'vitest'

const run = promisify(execFile)
const USERS = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`user${String(i).padStart(2, '0')}`, `Pw-${i}-secret`]))
const DIRECTORY = { domain: 'CONTOSO', users: USERS }

async function ntlmLab (mode: 'offload' | 'reencrypt') {
  const pki = await labPki()
  const tls = mode === 'reencrypt' ? { tls: { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem } } : {}
  const servers = await Promise.all(['ex1', 'ex2', 'ex3'].map((name) => new ExchangeEmulator({ name, ntlm: DIRECTORY, ...tls }).start()))
  onTestFinished(async () => { await Promise.all(servers.map((s) => s.close())) })
  // Round robin: consecutive requests land on different servers unless pinning holds them.
  const gateway = await startLabGateway({ mode, servers: servers.map((s) => s.url), pool: { balance: 'round-robin' } })
  const files = writeFiles(tempDir(), { 'root.pem': pki.root.certPem })
  return { servers, gateway, rootCa: files['root.pem'], origin: `https://mail.contoso.test:${gateway.address.port}` }
}

describe.each(['offload', 'reencrypt'] as const)('NTLM through casgate (%s)', (mode) => {
  it('20 curl --ntlm clients in parallel: each logs on once and every request is served as itself', async () => {
    const { gateway, rootCa, origin } = await ntlmLab(mode)
    const results = await Promise.all(Object.entries(USERS).map(async ([user, password]) => {
      // One curl, five URLs: one connection, one handshake, four more requests riding the logon.
      const urls = Array.from({ length: 5 }, (_, i) => `${origin}/EWS/Exchange.asmx?n=${i}`)
      const { stdout } = await run('curl', ['-sS', '--ntlm', '-u', `CONTOSO\\${user}:${password}`, '--cacert', rootCa,
        '--resolve', `mail.contoso.test:${gateway.address.port}:127.0.0.1`, '-w', '\n', ...urls])
      return { user, echoes: stdout.trim().split('\n').map((line) => JSON.parse(line) as EchoBody) }
    }))
    for (const { user, echoes } of results) {
      expect(echoes, user).toHaveLength(5)
      for (const echo of echoes) expect(echo.user, user).toBe(user)
      // Every request of that connection went to the server that authenticated it.
      expect(new Set(echoes.map((e) => `${e.server}#${e.connection}`)).size, user).toBe(1)
      // Only the handshake carried credentials; the rest rode the authenticated connection.
      expect(echoes.filter((e) => e.headers.authorization !== undefined).length, user).toBe(1)
    }
    await expect.poll(() => gateway.pools.get('cas')!.servers.reduce((sum, b) => sum + b.pinned, 0)).toBe(0)
  }, 60_000)

  it('python requests_ntlm sessions in parallel are each served as their own user', async () => {
    const { gateway, rootCa, origin } = await ntlmLab(mode)
    // Debian's requests_ntlm hashes with hashlib's MD4, which OpenSSL 3 keeps in its legacy provider.
    const { 'openssl.cnf': opensslConf } = writeFiles(tempDir(), {
      'openssl.cnf': 'openssl_conf = init\n[init]\nproviders = providers\n[providers]\ndefault = on\nlegacy = on\n[on]\nactivate = 1\n'
    })
    const script = [
      'import json, sys, requests',
      'from requests_ntlm import HttpNtlmAuth',
      'user, password, url, ca, port = sys.argv[1:6]',
      's = requests.Session()',
      's.auth = HttpNtlmAuth("CONTOSO\\\\" + user, password)',
      'out = []',
      'for i in range(4):',
      '    r = s.get(url.replace("mail.contoso.test", "127.0.0.1") + "?n=%d" % i, verify=ca, headers={"Host": "mail.contoso.test:" + port})',
      '    out.append([r.status_code, r.json().get("user") if r.status_code == 200 else None])',
      'print(json.dumps(out))'
    ].join('\n')
    const users = Object.entries(USERS).slice(0, 10)
    const results = await Promise.all(users.map(async ([user, password]) => {
      const { stdout } = await run('/usr/bin/python3', ['-c', script, user, password, `${origin}/EWS/Exchange.asmx`, rootCa, String(gateway.address.port)],
        { env: { ...process.env, OPENSSL_CONF: opensslConf } })
      return { user, answers: JSON.parse(stdout) as Array<[number, string | null]> }
    }))
    for (const { user, answers } of results) expect(answers, user).toEqual(Array.from({ length: 4 }, () => [200, user]))
  }, 60_000)
})

describe('a pinned connection whose backend goes away', () => {
  it('is closed, not moved to another server', async () => {
    const { servers, gateway } = await ntlmLab('offload')
    const pki = await labPki()
    const client = new Client(`https://127.0.0.1:${gateway.address.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' }, pipelining: 1 })
    onTestFinished(() => client.destroy())
    const get = (authorization?: string) => client.request({ path: '/EWS/Exchange.asmx', method: 'GET', headers: { host: 'mail.contoso.test', ...(authorization ? { authorization } : {}) } })
    const logon = await logOn(client, '/EWS/Exchange.asmx', 'user07', USERS.user07!, 'CONTOSO')
    const first = await logon.body.json() as EchoBody
    expect(first.user).toBe('user07')
    // The logon holds for later requests on the connection, on the same server.
    const again = await (await get()).body.json() as EchoBody
    expect(again).toMatchObject({ user: 'user07', server: first.server, connection: first.connection })
    expect(gateway.pools.get('cas')!.servers.find((b) => b.name.endsWith(new URL(servers.find((s) => s.name === first.server)!.url).port))!.pinned).toBe(1)

    await servers.find((s) => s.name === first.server)!.close()
    const after = await get().then(async (r) => ({ status: r.statusCode, body: await r.body.text() }), (err: Error) => err)
    expect(after).toBeInstanceOf(Error) // the connection closed; no answer from another server
  })
})
