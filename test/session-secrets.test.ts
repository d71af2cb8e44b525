import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createSecretKey } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from 'vitest'
import type { Dispatcher } from 'undici'
import { buildConfig, type GatewayConfig } from '../src/config/load.js'
import { describeSessionSecret } from '../src/config/preauth-config.js'
import { resolveStateDir } from '../src/config/secrets.js'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { ConfigError } from '../src/errors/errors.js'
import { startGateway, type Gateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { hashPassword } from '../src/auth/password-hash.js'
import { SessionCookies } from '../src/preauth/session-cookie.js'
import { LAB_NAMES, labClient, labPki, LogCapture, send, startEmulators } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// Issue 12 item 7: the session secret is random (a 0600 state file, or configured), never the
// TLS key Exchange holds too; a list of secrets rotates; logoff ends the session server-side.

const PASSWORD = 'Correct-Horse-1'
const OLD_SECRET = 'old-secret-'.padEnd(44, 'o')
const NEW_SECRET = 'new-secret-'.padEnd(44, 'n')
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

let hash: Promise<string> | undefined
/** configInput is a lab configuration (certificate, users file) in `dir`, with `preauth` and top-level `extra` over it. */
async function configInput (dir: string, servers: string[], preauth: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const pki = await labPki()
  hash ??= hashPassword(PASSWORD, 14)
  const files = writeFiles(dir, { 'mail.crt': pki.server.certPem, 'mail.key': pki.server.keyPem, 'chain.pem': pki.intermediate.certPem, 'root.pem': pki.root.certPem, 'users.txt': `jdoe:${await hash}\n` })
  return {
    listen: { host: '127.0.0.1', port: 0 },
    hosts: [{ names: LAB_NAMES.filter((n) => n !== '127.0.0.1'), certificate: { cert: files['mail.crt'], key: files['mail.key'], chain: files['chain.pem'], ca: files['root.pem'] }, mode: 'offload', extendedProtection: false }],
    pools: { cas: { servers } },
    health: { enabled: false },
    preauth: { usersFile: files['users.txt'], ...preauth },
    ...extra
  }
}

/** start runs a gateway on a configuration; `close` may be called early (a restart), the test closes it otherwise. */
async function start (config: GatewayConfig): Promise<{ gateway: Gateway, logs: LogCapture, close: () => Promise<void> }> {
  const logs = new LogCapture()
  const gateway = await startGateway(config, { logger: createLogger({ level: 'info', pretty: false }, logs) })
  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await gateway.close()
  }
  onTestFinished(close)
  return { gateway, logs, close }
}

async function signIn (gateway: Gateway, client: Dispatcher): Promise<string> {
  const page = await send(gateway, '/casgate/logon?url=%2Fowa%2F', { dispatcher: client })
  const preSession = /CasgateCsrf=([^;]+)/.exec(String(page.headers['set-cookie']))![1]!
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!
  const response = await send(gateway, '/casgate/logon', {
    dispatcher: client,
    method: 'POST',
    headers: { cookie: `CasgateCsrf=${preSession}`, 'content-type': 'application/x-www-form-urlencoded', origin: 'https://mail.contoso.test' },
    body: new URLSearchParams({ csrf, url: '/owa/', username: 'jdoe', password: PASSWORD }).toString()
  })
  expect(response.status).toBe(303)
  return /CasgateSession=([^;]+)/.exec(String(response.headers['set-cookie']))![1]!
}

/** status of a browser page load (302 to the form without a session) and of an OWA script request (440). */
async function owa (gateway: Gateway, client: Dispatcher, session: string): Promise<{ page: number, script: number, setCookie: string | undefined, echo: EchoBody | undefined }> {
  const page = await send(gateway, '/owa/', { dispatcher: client, headers: { accept: 'text/html', cookie: `CasgateSession=${session}` } })
  const script = await send(gateway, '/owa/service.svc?action=GetFolder', { dispatcher: client, method: 'POST', headers: { cookie: `CasgateSession=${session}` } })
  const setCookie = /CasgateSession=([^;]+)/.exec(String(script.headers['set-cookie'] ?? ''))?.[1]
  return { page: page.status, script: script.status, setCookie, echo: script.status === 200 ? JSON.parse(script.text) as EchoBody : undefined }
}

describe('the session secret', () => {
  // Whatever the machine running the tests says, the default is "state" next to the configuration.
  beforeEach(() => { vi.stubEnv('STATE_DIRECTORY', '') })
  afterEach(() => { vi.unstubAllEnvs() })

  it('is generated at first start into a 0600 state file, survives a restart, and another state directory refuses its cookies', async () => {
    const [server] = await startEmulators(1)
    const client = await labClient()
    const dir = tempDir()
    const stateDir = join(dir, 'var', 'casgate')
    const input = await configInput(dir, [server!.url], {}, { stateDir: 'var/casgate' })

    const first = await start(buildConfig(input, { source: 'test', baseDir: dir }))
    const file = join(stateDir, 'session-secret')
    expect(first.gateway.config.preauth).toMatchObject({ secretSource: 'generated', secretFile: file, secretStored: true })
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(statSync(stateDir).mode & 0o077).toBe(0)
    const secret = readFileSync(file, 'utf8')
    expect(secret).toMatch(/^[\w-]{43}\n$/)
    const session = await signIn(first.gateway, client)
    await first.close()

    // A restart reads the same file: the session goes on.
    const second = await start(buildConfig(input, { source: 'test', baseDir: dir }))
    expect(second.gateway.config.preauth).toMatchObject({ secretSource: 'state-file', secretFile: file })
    expect(readFileSync(file, 'utf8')).toBe(secret)
    const after = await owa(second.gateway, client, session)
    expect(after).toMatchObject({ page: 200, script: 200 })
    expect(after.echo!.headers.authorization).toBe(basic('jdoe', PASSWORD))

    // Same certificate and key, another state directory: the TLS key no longer opens sessions.
    const otherDir = tempDir()
    const other = await start(buildConfig(await configInput(otherDir, [server!.url]), { source: 'test', baseDir: otherDir }))
    expect(other.gateway.config.preauth!.secretFile).toBe(join(otherDir, 'state', 'session-secret'))
    expect(await owa(other.gateway, client, session)).toMatchObject({ page: 302, script: 440 })
  })

  it('is not created by casgate check, which says it will be generated; $STATE_DIRECTORY (systemd) is the default directory', async () => {
    const dir = tempDir()
    const input = await configInput(dir, ['http://127.0.0.1:1'])
    const checked = buildConfig(input, { source: 'test', baseDir: dir, writeState: false })
    expect(checked.preauth).toMatchObject({ secretSource: 'generated', secretStored: false, secretFile: join(dir, 'state', 'session-secret') })
    expect(describeSessionSecret(checked.preauth!)).toBe(`will be generated at first start into ${join(dir, 'state', 'session-secret')}`)
    expect(existsSync(join(dir, 'state'))).toBe(false)

    const systemd = join(tempDir(), 'casgate')
    vi.stubEnv('STATE_DIRECTORY', `${systemd}:/var/lib/other`)
    expect(resolveStateDir(undefined, dir)).toBe(systemd)
    expect(resolveStateDir('here', dir)).toBe(join(dir, 'here'))
    const started = buildConfig(input, { source: 'test', baseDir: dir })
    expect(started.preauth!.secretFile).toBe(join(systemd, 'session-secret'))
    expect(statSync(join(systemd, 'session-secret')).mode & 0o777).toBe(0o600)
    expect(describeSessionSecret(buildConfig(input, { source: 'test', baseDir: dir, writeState: false }).preauth!)).toBe(`state file ${join(systemd, 'session-secret')}`)
  })

  it('refuses a state file others can read, one too short, and a short line in a rotation list, each with its fix', async () => {
    const dir = tempDir()
    const stateDir = join(dir, 'state')
    mkdirSync(stateDir)
    const file = writeFiles(stateDir, { 'session-secret': 'x'.repeat(43) + '\n' })['session-secret']
    chmodSync(file, 0o644)
    const input = await configInput(dir, ['http://127.0.0.1:1'])
    const problem = (options: { writeState?: boolean } = {}, config = input): string => {
      try {
        buildConfig(config, { source: 'test', baseDir: dir, ...options })
      } catch (err) {
        if (err instanceof ConfigError) return err.message
        throw err
      }
      throw new Error('expected a ConfigError')
    }
    // casgate check reports it too.
    for (const options of [{}, { writeState: false }]) {
      expect(problem(options)).toContain(`stateDir (${file}): the session secret is readable or writable by others than its owner (mode 0644). Fix: run: chmod 600 ${file}`)
    }
    chmodSync(file, 0o600)
    writeFiles(stateDir, { 'session-secret': 'short\n' })
    expect(problem()).toContain(`stateDir (${file}): the secret has 5 characters, fewer than 32. Fix: remove the file; casgate generates a new one at start`)

    const secrets = writeFiles(dir, { 'rotation.txt': `${NEW_SECRET}\nold\n` })['rotation.txt']
    expect(problem({}, await configInput(dir, ['http://127.0.0.1:1'], { secretFile: secrets }))).toContain('preauth.secretFile (line 2): the secret has 3 characters, fewer than 32. Fix: write one secret per line')
    writeFiles(dir, { 'empty.txt': '\n' })
    expect(problem({}, await configInput(dir, ['http://127.0.0.1:1'], { secretFile: 'empty.txt' }))).toContain('preauth.secretFile: holds no secret')
    // A configuration that fails creates no state file.
    const fresh = tempDir()
    const failing = await configInput(fresh, ['http://127.0.0.1:1'], { usersFile: 'missing.txt' })
    expect(() => buildConfig(failing, { source: 'test', baseDir: fresh })).toThrow(ConfigError)
    expect(existsSync(join(fresh, 'state'))).toBe(false)
  })

  it('rotates: a gateway with [new, old] opens a cookie sealed with old and re-seals it with new at once', async () => {
    const [server] = await startEmulators(1)
    const client = await labClient()
    const dir = tempDir()
    const files = writeFiles(dir, { 'old.txt': `${OLD_SECRET}\n`, 'rotated.txt': `${NEW_SECRET}\n${OLD_SECRET}\n`, 'new.txt': `${NEW_SECRET}\n` })
    const gatewayWith = async (secretFile: string): Promise<Gateway> =>
      (await start(buildConfig(await configInput(dir, [server!.url], { secretFile }), { source: 'test', baseDir: dir }))).gateway
    const oldOnly = await gatewayWith(files['old.txt'])
    const rotated = await gatewayWith(files['rotated.txt'])
    const newOnly = await gatewayWith(files['new.txt'])
    expect(rotated.config.preauth).toMatchObject({ secretSource: 'file', secretFile: files['rotated.txt'] })
    expect(rotated.config.preauth!.secrets).toHaveLength(2)
    expect(describeSessionSecret(rotated.config.preauth!)).toBe(`preauth.secretFile ${files['rotated.txt']} (2 secrets: the first seals, all open)`)

    const sealedOld = await signIn(oldOnly, client)
    const seen = await owa(rotated, client, sealedOld)
    expect(seen).toMatchObject({ page: 200, script: 200 })
    expect(seen.echo!.headers.authorization).toBe(basic('jdoe', PASSWORD))
    // The re-sealed cookie is under the new secret only.
    const resealed = seen.setCookie!
    expect(resealed).toBeDefined()
    expect(await owa(newOnly, client, resealed)).toMatchObject({ page: 200, script: 200 })
    expect(await owa(oldOnly, client, resealed)).toMatchObject({ page: 302, script: 440 })
    // Once the old secret is dropped, its cookies are refused; a cookie sealed under new is not re-sealed again.
    expect(await owa(newOnly, client, sealedOld)).toMatchObject({ page: 302, script: 440 })
    expect((await owa(rotated, client, resealed)).setCookie).toBeUndefined()
    // The secret in the environment, one per line, works alike.
    vi.stubEnv('CASGATE_TEST_SESSION_SECRETS', `${NEW_SECRET}\n${OLD_SECRET}`)
    const fromEnv = (await start(buildConfig(await configInput(dir, [server!.url], { secretEnv: 'CASGATE_TEST_SESSION_SECRETS' }), { source: 'test', baseDir: dir }))).gateway
    expect(fromEnv.config.preauth).toMatchObject({ secretSource: 'env', secretFile: undefined })
    expect(await owa(fromEnv, client, sealedOld)).toMatchObject({ page: 200, script: 200 })
  })

  it('ends a session at logoff on the server: a copy replayed afterwards gets the form or 440, other sessions go on', async () => {
    const [server] = await startEmulators(1)
    const client = await labClient()
    const dir = tempDir()
    const { gateway, logs } = await start(buildConfig(await configInput(dir, [server!.url]), { source: 'test', baseDir: dir }))
    const first = await signIn(gateway, client)
    const second = await signIn(gateway, client)
    const third = await signIn(gateway, client)

    // A cross-site page cannot end a session.
    const crossSite = await send(gateway, '/owa/logoff.owa', { dispatcher: client, headers: { cookie: `CasgateSession=${first}`, 'sec-fetch-site': 'cross-site' } })
    expect(crossSite.status).toBe(403)
    expect(await owa(gateway, client, first)).toMatchObject({ page: 200, script: 200 })

    const logoff = await send(gateway, '/owa/logoff.owa', { dispatcher: client, headers: { cookie: `CasgateSession=${first}` } })
    expect(logoff.status).toBe(302)
    expect(logoff.headers.location).toBe('/casgate/logon?signedOut=1')
    expect(String(logoff.headers['set-cookie'])).toMatch(/^CasgateSession=; .*Max-Age=0/)
    // The browser dropped the cookie; a copy taken earlier (another tab, a thief) is refused now.
    const replay = await owa(gateway, client, first)
    expect(replay).toMatchObject({ page: 302, script: 440 })
    expect(await owa(gateway, client, second)).toMatchObject({ page: 200, script: 200 })

    // casgate's own sign-out path too; a second session cookie in the same request is ended with it.
    const own = await send(gateway, '/casgate/logoff', { dispatcher: client, headers: { cookie: `CasgateSession=${second}; CasgateSession=${third}` } })
    expect(own.status).toBe(302)
    expect(await owa(gateway, client, second)).toMatchObject({ page: 302, script: 440 })
    expect(await owa(gateway, client, third)).toMatchObject({ page: 302, script: 440 })
    // OWA's sign-out spelt with an escape is OWA's sign-out to IIS, so it ends the session too.
    const fourth = await signIn(gateway, client)
    expect((await send(gateway, '/owa/logoff%2eowa', { dispatcher: client, headers: { cookie: `CasgateSession=${fourth}` } })).status).toBe(302)
    expect(await owa(gateway, client, fourth)).toMatchObject({ page: 302, script: 440 })
    expect(logs.lines.filter((line) => line.event === 'preauth-logoff').map((line) => line.user)).toEqual(['jdoe', 'jdoe', 'jdoe', 'jdoe'])
    expect(logs.raw.join('')).not.toContain(PASSWORD)
  })
})

describe('the revocation set', () => {
  afterEach(() => { vi.useRealTimers() })

  it('keeps a revoked id until the session\'s expiry, holds a bounded number, and reports live entries it had to forget', () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['Date'] })
    const dropped: number[] = []
    const sessions = new SessionCookies([createSecretKey(Buffer.alloc(32, 7))], 'CasgateSession', { maxRevoked: 2, onRevocationDropped: (count) => dropped.push(count) })
    sessions.revoke('a', Date.now() + 10_000)
    sessions.revoke('gone', Date.now() - 1) // already expired: nothing to keep
    expect(sessions.isRevoked('a')).toBe(true)
    expect(sessions.isRevoked('gone')).toBe(false)
    expect(sessions.isRevoked('b')).toBe(false)
    vi.setSystemTime(Date.now() + 10_000)
    expect(sessions.isRevoked('a')).toBe(false) // its session has expired anyway
    expect(sessions.revokedCount).toBe(0)
    for (const id of ['c', 'd', 'e', 'f']) sessions.revoke(id, Date.now() + 60_000)
    expect(sessions.revokedCount).toBe(2)
    expect(dropped).toEqual([1]) // reported once a minute at most
    expect(sessions.isRevoked('f')).toBe(true)
  })
})
