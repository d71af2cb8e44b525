import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request as httpRequest } from 'node:http'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { Gateway } from '../src/gateway/gateway.js'
import { admin } from './helpers/admin.js'
import { labClient, labConfig, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { tempDir } from './helpers/tmp.js'
import { usersFile } from './helpers/users.js'

const run = promisify(execFile)

// The admin listener can drain servers: nothing but its token may use it. Each attack below came
// in through a real browser behaviour (a cross-site form, DNS rebinding) or a plain curl.

/** raw sends one request to the admin listener exactly as given, and returns status and body. */
function raw (gateway: Gateway, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: gateway.adminAddress!.port, method, path, headers, setHost: false }, (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function lab (preauth = false): Promise<{ gateway: Gateway, ex1: string, host: string }> {
  const servers = await startEmulators(2)
  const extra = { admin: { host: '127.0.0.1', port: 0, names: ['casgate-admin.contoso.local'] }, health: { enabled: false }, ...(preauth ? { preauth: { usersFile: await usersFile({ jdoe: 'Correct-Horse-1' }) } } : {}) }
  const gateway = await startLabGateway({ mode: 'offload', servers: servers.map((s) => s.url), extra })
  return { gateway, ex1: new URL(servers[0]!.url).host, host: `127.0.0.1:${gateway.adminAddress!.port}` }
}

describe('the admin listener cannot be abused', () => {
  it('answers nothing without the token, and everything with it (real curl)', async () => {
    const { gateway } = await lab()
    const url = `http://127.0.0.1:${gateway.adminAddress!.port}/status`
    const without = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', url])
    expect(without.stdout).toBe('401')
    const wrong = await run('curl', ['-s', '-H', 'Authorization: Bearer not-the-token-but-long-enough-0123456789', url])
    expect(JSON.parse(wrong.stdout).code).toBe('CASGATE_ERR_ADMIN_UNAUTHORIZED')
    const right = await run('curl', ['-s', '-H', `Authorization: Bearer ${gateway.config.admin!.token}`, url])
    expect(JSON.parse(right.stdout)).toHaveProperty('pools.cas.servers')
    expect(gateway.config.admin!.tokenSource).toBe('generated')
    expect(gateway.config.admin!.token.length).toBeGreaterThanOrEqual(32)
  })

  it('refuses a cross-site form post, even one that carries the token, and drains nothing', async () => {
    const { gateway, ex1, host } = await lab()
    const token = `Bearer ${gateway.config.admin!.token}`
    // What a page on evil.example can make a browser send: text/plain, its own Origin, no token.
    const form = await raw(gateway, 'POST', `/backends/${ex1}/drain`, { host, origin: 'https://evil.example', 'content-type': 'text/plain' }, '{"deadlineMs":0}')
    expect(form.status).toBe(401)
    // Even with the token (a leaked one, or a future cookie session), the page's origin is refused …
    const site = await raw(gateway, 'POST', `/backends/${ex1}/drain`, { host, authorization: token, origin: 'https://evil.example', 'content-type': 'application/json' }, '{}')
    expect(site).toMatchObject({ status: 403 })
    expect(JSON.parse(site.body).code).toBe('CASGATE_ERR_ADMIN_CROSS_SITE')
    expect((await raw(gateway, 'POST', `/backends/${ex1}/drain`, { host, authorization: token, 'sec-fetch-site': 'cross-site', 'content-type': 'application/json' }, '{}')).status).toBe(403)
    // … and so is anything an HTML form can send instead of JSON.
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const answer = await raw(gateway, 'POST', `/backends/${ex1}/drain`, { host, authorization: token, 'content-type': type }, 'deadlineMs=0')
      expect(answer.status).toBe(415)
    }
    expect((await admin(gateway, '/status')).json.drained).toEqual([])
    // The listener's own origin, and clients that send none (curl, scripts), may change things.
    expect((await raw(gateway, 'POST', `/backends/${ex1}/drain`, { host, authorization: token, origin: `http://${host}`, 'content-type': 'application/json' }, '{"vdir":"/owa"}')).status).toBe(200)
    expect((await admin(gateway, '/status')).json.drained).toEqual([expect.objectContaining({ backend: ex1, vdirs: ['/owa'] })])
  })

  it('refuses a Host that is not its own (DNS rebinding), and takes its configured names', async () => {
    const { gateway, host } = await lab()
    const token = `Bearer ${gateway.config.admin!.token}`
    const port = gateway.adminAddress!.port
    for (const foreign of [`evil.example:${port}`, 'evil.example', `127.0.0.2:${port}`, `127.0.0.1:${port + 1}`, `casgate-admin.contoso.local.evil.example:${port}`]) {
      const answer = await raw(gateway, 'GET', '/status', { host: foreign, authorization: token })
      expect(answer.status, foreign).toBe(421)
      expect(JSON.parse(answer.body).code).toBe('CASGATE_ERR_ADMIN_HOST')
    }
    for (const own of [host, `localhost:${port}`, 'casgate-admin.contoso.local', `CASGATE-ADMIN.contoso.local.:${port}`]) {
      expect((await raw(gateway, 'GET', '/status', { host: own, authorization: token })).status, own).toBe(200)
    }
  })

  it('serves the page\'s shell without the token, signs it in only with the token, same-origin, and its cookie opens the API', async () => {
    const { gateway, host } = await lab()
    const shell = await raw(gateway, 'GET', '/', { host })
    expect(shell.status).toBe(200)
    expect(shell.body).not.toContain('"pools"')
    const json = { host, 'content-type': 'application/json' }
    expect((await raw(gateway, 'POST', '/session', json, JSON.stringify({ token: 'a-wrong-token-of-enough-length-0123456789' }))).status).toBe(401)
    expect((await raw(gateway, 'POST', '/session', { ...json, origin: 'https://evil.example' }, JSON.stringify({ token: gateway.config.admin!.token }))).status).toBe(403)
    const signIn = await new Promise<{ status: number, cookie: string }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: gateway.adminAddress!.port, method: 'POST', path: '/session', headers: json, setHost: false }, (res) => {
        res.resume()
        resolve({ status: res.statusCode ?? 0, cookie: String(res.headers['set-cookie']?.[0] ?? '') })
      })
      req.on('error', reject)
      req.end(JSON.stringify({ token: gateway.config.admin!.token }))
    })
    expect(signIn.status).toBe(200)
    expect(signIn.cookie).toMatch(/^CasgateAdmin=[\w-]{43}; Path=\/; HttpOnly; SameSite=Strict/)
    const session = signIn.cookie.split(';')[0]!
    expect((await raw(gateway, 'GET', '/status', { host, cookie: session })).status).toBe(200)
    expect((await raw(gateway, 'GET', '/status', { host, cookie: 'CasgateAdmin=forged-session-id' })).status).toBe(401)
    // A stale value set in front of it (another service on this host: cookies ignore ports) does not sign the page out.
    expect((await raw(gateway, 'GET', '/status', { host, cookie: `CasgateAdmin=junk; ${session}` })).status).toBe(200)
    expect((await raw(gateway, 'POST', '/session', json, JSON.stringify({ token: '' }))).status).toBe(401)
    expect((await raw(gateway, 'POST', '/session/end', { ...json, cookie: session }, '{}')).status).toBe(200)
    expect((await raw(gateway, 'GET', '/status', { host, cookie: session })).status).toBe(401)
  })

  it('clears a user\'s lockout, and shows and clears where their affinity keys point', async () => {
    const { gateway } = await lab(true)
    const client = await labClient()
    const path = '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone'
    const basic = (password: string): string => `Basic ${Buffer.from(`jdoe:${password}`).toString('base64')}`
    for (let i = 0; i < 5; i++) await send(gateway, path, { dispatcher: client, headers: { authorization: basic(`guess-${i}`) } })
    expect((await send(gateway, path, { dispatcher: client, headers: { authorization: basic('Correct-Horse-1') } })).status).toBe(401)
    expect(await admin(gateway, '/lockout/clear', { user: 'CONTOSO\\jdoe' })).toMatchObject({ status: 200 })
    const served = await send(gateway, path, { dispatcher: client, headers: { authorization: basic('Correct-Horse-1') } })
    expect(served.status).toBe(200)
    const shown = (await admin(gateway, '/affinity/users/jdoe')).json
    expect(shown).toMatchObject({ user: 'jdoe', cleared: false, vdirs: expect.arrayContaining([{ vdir: '/Microsoft-Server-ActiveSync', server: expect.stringMatching(/^127\.0\.0\.1:\d+$/) }]) })
    expect((await admin(gateway, '/affinity/users/jdoe/clear', {})).json).toMatchObject({ cleared: true })
    expect((await admin(gateway, '/affinity/users/jdoe')).json).toMatchObject({ vdirs: expect.arrayContaining([{ vdir: '/Microsoft-Server-ActiveSync', server: undefined }]) })
    expect((await admin(gateway, '/lockout/clear', {})).status).toBe(400)
  })

  it('says that a gateway started without a file has nothing to reload (POST /reload: 409)', async () => {
    const { gateway } = await lab()
    const answer = await admin(gateway, '/reload', {})
    expect(answer.status).toBe(409)
    expect(String(answer.json.error)).toMatch(/without a configuration file/)
  })

  it('sets a server\'s weight: 0 takes no new requests, and /status shows it', async () => {
    const { gateway, ex1 } = await lab()
    const client = await labClient()
    expect((await admin(gateway, `/backends/${ex1}/weight`, { weight: 0 })).status).toBe(200)
    const served = new Set<unknown>()
    for (let i = 0; i < 8; i++) served.add((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client })).headers['x-backend'])
    expect(served).toEqual(new Set(['ex2']))
    const status = (await admin(gateway, '/status')).json as { pools: { cas: { servers: Array<{ name: string, weight: number }> } } }
    expect(status.pools.cas.servers.find((server) => server.name === ex1)?.weight).toBe(0)
    for (const weight of [-1, 1.5, 300, '2']) expect((await admin(gateway, `/backends/${ex1}/weight`, { weight })).status).toBe(400)
    expect((await admin(gateway, '/backends/nowhere:1/weight', { weight: 2 })).status).toBe(404)
  })

  it('refuses to start with a token too short to be one, also in the state directory', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'admin-token'), 'abc\n', { mode: 0o600 })
    const attempt = labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, admin: { host: '127.0.0.1', port: 0 } } })
    await expect(attempt).rejects.toThrow(/admin-token\): the admin token has 3 characters, fewer than 32/)
    writeFileSync(join(dir, 'admin-token'), '', { mode: 0o600 })
    await expect(labConfig({ mode: 'offload', servers: ['http://127.0.0.1:1'], extra: { stateDir: dir, admin: { host: '127.0.0.1', port: 0 } } })).rejects.toThrow(/has 0 characters/)
  })
})
