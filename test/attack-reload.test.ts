import { writeFileSync } from 'node:fs'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { Client } from 'undici'
import { describe, expect, it, onTestFinished } from 'vitest'
import { loadConfigFile } from '../src/config/load.js'
import { startGateway, type Gateway, type ReloadResult } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { labPki, LogCapture, startEmulators } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { usersFile } from './helpers/users.js'
import { signInByForm } from './helpers/forms-sign-in.js'

// ATTACK REVIEW (issues 15/16): reload in one process, probed over real sockets. Each test here
// failed on main when it was written; see the report on branch attack-review.

const PASSWORDS = { jdoe: 'Correct-Horse-1' }

interface Lab { gateway: Gateway, file: string, config: Record<string, unknown>, logs: LogCapture }

async function startFromFile (servers: string[], extra: Record<string, unknown>): Promise<Lab> {
  const pki = await labPki()
  const dir = tempDir()
  const files = writeFiles(dir, { 'mail.crt': pki.server.certPem, 'mail.key': pki.server.keyPem, 'chain.pem': pki.intermediate.certPem, 'root.pem': pki.root.certPem })
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    hosts: [{ names: ['mail.contoso.test'], certificate: { cert: files['mail.crt'], key: files['mail.key'], chain: files['chain.pem'], ca: files['root.pem'] }, mode: 'offload', extendedProtection: false }],
    pools: { cas: { servers } },
    health: { enabled: false },
    stateDir: dir,
    ...extra
  }
  const file = `${dir}/casgate.yaml`
  writeFileSync(file, JSON.stringify(config))
  const logs = new LogCapture()
  const gateway = await startGateway(loadConfigFile(file), { configFile: file, logger: createLogger({ level: 'info', pretty: false }, logs) })
  onTestFinished(() => gateway.close())
  return { gateway, file, config, logs }
}

async function client (gateway: Gateway): Promise<Client> {
  const pki = await labPki()
  const c = new Client(`https://127.0.0.1:${gateway.address.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
  onTestFinished(async () => { if (!c.closed && !c.destroyed) await c.close() })
  return c
}

async function ask (c: Client, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number, text: string, headers: Record<string, string | string[] | undefined> }> {
  const response = await c.request({ path, method: body === undefined ? 'GET' : 'POST', headers: { host: 'mail.contoso.test', ...headers }, ...(body === undefined ? {} : { body }) })
  return { status: response.statusCode, text: await response.body.text(), headers: response.headers }
}

async function fresh (gateway: Gateway, path: string, headers: Record<string, string> = {}, body?: string): ReturnType<typeof ask> {
  const c = await client(gateway)
  try {
    return await ask(c, path, headers, body)
  } finally {
    await c.close()
  }
}

function formsSession (gateway: Gateway, user: string, password: string): Promise<string> {
  return signInByForm((path, headers, body) => fresh(gateway, path, headers, body), user, password)
}

/** A key set URL that answers only when told: a reload waits in preauth.start() meanwhile. */
async function slowKeys (): Promise<{ url: string, held: () => number, release: () => void }> {
  const waiting: ServerResponse[] = []
  let open = false
  const server: Server = createServer((_request, response) => {
    if (open) response.end(JSON.stringify({ keys: [] }))
    else waiting.push(response)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/keys`,
    held: () => waiting.length,
    release: () => {
      open = true
      for (const response of waiting.splice(0)) response.end(JSON.stringify({ keys: [] }))
    }
  }
}

/** bearerLab starts a gateway from a file whose preauth checks Bearer tokens against a key set URL (answering). */
async function bearerLab (extra: Record<string, unknown> = {}): Promise<{ lab: Lab, bearer: object }> {
  const [server] = await startEmulators(1)
  const keys = await slowKeys()
  keys.release()
  const bearer = { issuer: 'https://sts.windows.net/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/', audience: 'https://mail.contoso.test', jwks: { url: keys.url } }
  const lab = await startFromFile([server!.url], { preauth: { usersFile: await usersFile(PASSWORDS), bearer }, ...extra })
  return { lab, bearer }
}

/**
 * reloadHeld re-reads the file, now naming a key set URL that holds its answer: resolves once the
 * next configuration is built and waits in open() (it takes connections already).
 */
async function reloadHeld (lab: Lab, bearer: object): Promise<{ reload: Promise<ReloadResult>, reopened: Awaited<ReturnType<typeof slowKeys>> }> {
  const reopened = await slowKeys()
  lab.config.preauth = { ...(lab.config.preauth as object), bearer: { ...bearer, jwks: { url: reopened.url } } }
  writeFileSync(lab.file, JSON.stringify(lab.config))
  const reload = lab.gateway.reload()
  await expect.poll(() => reopened.held(), { timeout: 10_000 }).toBeGreaterThan(0)
  return { reload, reopened }
}

describe('ATTACK REVIEW: one-process reload', () => {
  it('a sign-out made while the next configuration opens stays signed out on it', async () => {
    const { lab, bearer } = await bearerLab()
    const session = await formsSession(lab.gateway, 'jdoe', PASSWORDS.jdoe)
    expect((await fresh(lab.gateway, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(200)
    // A keep-alive connection of the running configuration.
    const kept = await client(lab.gateway)
    expect((await ask(kept, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(200)

    // The key set URL holds its answer: the next configuration is built and waits in open().
    const { reload, reopened } = await reloadHeld(lab, bearer)
    // The user signs out on the connection they hold, meanwhile.
    expect((await ask(kept, '/owa/logoff.owa', { cookie: session })).status).toBe(302)
    reopened.release()
    expect(await reload).toMatchObject({ reloaded: true })
    // The signed-out session must not come back on the new configuration.
    expect((await fresh(lab.gateway, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(302)
  })

  it('a sign-out made on the next configuration while it opens reaches the running one, and the one after', async () => {
    const { lab, bearer } = await bearerLab()
    const session = await formsSession(lab.gateway, 'jdoe', PASSWORDS.jdoe)
    const kept = await client(lab.gateway)
    expect((await ask(kept, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(200)

    const { reload, reopened } = await reloadHeld(lab, bearer)
    // A new connection is the next configuration's already: the user signs out there.
    expect((await fresh(lab.gateway, '/owa/logoff.owa', { cookie: session })).status).toBe(302)
    reopened.release()
    expect(await reload).toMatchObject({ reloaded: true })
    // The connection the previous configuration still holds must refuse the session now ...
    expect((await ask(kept, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(302)
    // ... and so must the configuration after the next reload.
    expect(await lab.gateway.reload()).toMatchObject({ reloaded: true })
    expect((await fresh(lab.gateway, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(302)
  })

  it('a retired configuration leaves no handle behind (ten reloads in a row)', async () => {
    const [server] = await startEmulators(1)
    const lab = await startFromFile([server!.url], { preauth: { usersFile: await usersFile(PASSWORDS) }, affinity: {} })
    const finished = (): number => lab.logs.lines.filter((line) => line.msg === 'the previous configuration finished').length
    const handles = (): Record<string, number> => {
      const count: Record<string, number> = {}
      for (const kind of process.getActiveResourcesInfo()) count[kind] = (count[kind] ?? 0) + 1
      return count
    }
    // One request on each configuration, on a connection that ends before the reload.
    expect((await fresh(lab.gateway, '/EWS/Exchange.asmx', { authorization: `Basic ${Buffer.from(`jdoe:${PASSWORDS.jdoe}`).toString('base64')}` })).status).toBe(200)
    expect(await lab.gateway.reload()).toMatchObject({ reloaded: true })
    await expect.poll(finished, { timeout: 10_000 }).toBe(1)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const before = handles()
    for (let i = 0; i < 10; i++) {
      expect((await fresh(lab.gateway, '/EWS/Exchange.asmx', { authorization: `Basic ${Buffer.from(`jdoe:${PASSWORDS.jdoe}`).toString('base64')}` })).status).toBe(200)
      expect(await lab.gateway.reload()).toMatchObject({ reloaded: true })
    }
    await expect.poll(finished, { timeout: 20_000 }).toBe(11)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const after = handles()
    for (const kind of new Set([...Object.keys(before), ...Object.keys(after)])) expect({ kind, count: after[kind] ?? 0 }).toEqual({ kind, count: before[kind] ?? 0 })
  })

  it('listen.maxConnectionsPerAddress and maxConnections hold across a reload (the retiring door\'s connections count)', async () => {
    const [server] = await startEmulators(1)
    const lab = await startFromFile([server!.url], { listen: { host: '127.0.0.1', port: 0, maxConnectionsPerAddress: 3, maxConnections: 5 } })
    const pki = await labPki()
    const open = (localAddress: string): Promise<'served' | 'closed'> => new Promise((resolve) => {
      const raw = netConnect({ host: '127.0.0.1', port: lab.gateway.address.port, localAddress })
      const socket: TLSSocket = tlsConnect({ socket: raw, servername: 'mail.contoso.test', ca: pki.root.certPem }, () => socket.write('GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n'))
      onTestFinished(() => { socket.destroy() })
      raw.on('error', () => undefined)
      socket.on('error', () => undefined)
      socket.once('data', () => resolve('served'))
      socket.once('close', () => resolve('closed'))
    })
    // Idle keep-alive connections, as many as one address may hold.
    expect(await Promise.all([1, 2, 3].map(() => open('127.0.0.1')))).toEqual(['served', 'served', 'served'])
    expect(await lab.gateway.reload()).toMatchObject({ reloaded: true })
    // They are still open (the previous door lets them end by themselves): the address is at its limit.
    expect(await open('127.0.0.1')).toBe('closed')
    // And in total: 3 + 2 from another address is 5, the total limit.
    expect(await Promise.all([1, 2].map(() => open('127.0.0.2')))).toEqual(['served', 'served'])
    expect(await open('127.0.0.3')).toBe('closed')
  })

  it('a stop that comes while a reload opens the next configuration leaves nothing running (no port, no timer)', async () => {
    const before = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length
    const { lab, bearer } = await bearerLab({ health: { enabled: true, intervalMs: 60_000 } })
    const port = lab.gateway.address.port
    const { reload, reopened } = await reloadHeld(lab, bearer)
    await lab.gateway.close()
    reopened.release()
    expect(await reload).toMatchObject({ reloaded: false, problems: [{ message: 'stopping' }] })
    // Nothing listens, and the next configuration's probes and timers were stopped with it.
    const refused = await new Promise<boolean>((resolve) => {
      const socket = netConnect({ host: '127.0.0.1', port })
      socket.once('connect', () => { socket.destroy(); resolve(false) })
      socket.once('error', () => resolve(true))
    })
    expect(refused).toBe(true)
    await expect.poll(() => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length, { timeout: 5_000 }).toBeLessThanOrEqual(before)
  })
})
