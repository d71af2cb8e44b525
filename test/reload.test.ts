import { readFileSync, writeFileSync } from 'node:fs'
import { Client } from 'undici'
import { describe, expect, it } from 'vitest'
import { labPki, startEmulators } from './helpers/lab.js'
import { usersFile } from './helpers/users.js'
import { adminJson, formsSession, fresh, startCasgate, type Cluster } from './helpers/casgate-cli.js'

// One casgate process (the default, no workers) re-reads its whole configuration on SIGHUP or
// POST /reload: the real CLI in front of emulated Exchange servers, the file rewritten under it.

const PASSWORDS = { jdoe: 'Correct-Horse-1', asmith: 'Battery-Staple-2' }

function basic (user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

function rewrite (cluster: Cluster, change: (config: Record<string, unknown>) => Record<string, unknown>): void {
  const file = `${cluster.dir}/casgate.yaml`
  writeFileSync(file, JSON.stringify(change(JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>)))
}

describe('one process reloads its whole configuration', () => {
  it('refuses a bad file and keeps serving; a good one removes a server while a Ping held there finishes', async () => {
    const servers = await startEmulators(2)
    const casgate = await startCasgate(servers, { health: { enabled: false } }, 1)
    const held = fresh(casgate, '/Microsoft-Server-ActiveSync/__casgate/hold?ms=4000&Cmd=Ping&User=jdoe&DeviceId=D1&DeviceType=iPhone')
    await expect.poll(() => servers.filter((server) => server.requests === 1).length).toBe(1)
    const holder = servers.find((server) => server.requests === 1)!
    const other = servers.find((server) => server !== holder)!
    // A keep-alive connection opened before the reload.
    const pki = await labPki()
    const kept = new Client(`https://127.0.0.1:${casgate.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
    const before = await kept.request({ path: '/EWS/Exchange.asmx', method: 'GET', headers: { host: 'mail.contoso.test' } })
    await before.body.text()
    expect(before.headers.connection).not.toBe('close')

    rewrite(casgate, (config) => ({ ...config, pools: { cas: { servers: [] } } }))
    casgate.child.kill('SIGHUP')
    await expect.poll(() => casgate.lines.some((line) => line.msg === 'configuration reload refused; the running configuration stays'), { timeout: 10_000 }).toBe(true)
    expect(casgate.lines.find((line) => line.msg === 'configuration reload refused; the running configuration stays')!.problems).toEqual(expect.arrayContaining([expect.objectContaining({ path: 'pools.cas.servers' })]))
    expect((await fresh(casgate, '/EWS/Exchange.asmx')).status).toBe(200)

    rewrite(casgate, (config) => ({ ...config, pools: { cas: { servers: [other.url] } } }))
    expect(await adminJson(casgate, '/reload', {})).toMatchObject({ status: 200, reloaded: true })
    const answers = await Promise.all(Array.from({ length: 8 }, () => fresh(casgate, '/EWS/Exchange.asmx')))
    expect(new Set(answers.map((answer) => answer.backend))).toEqual(new Set([other.name]))
    const status = await adminJson(casgate, '/status') as { pools: { cas: { servers: Array<{ origin: string }> } } }
    expect(status.pools.cas.servers.map((server) => server.origin)).toEqual([other.url])
    // The connection of the previous configuration serves its next request and is told to close.
    const after = await kept.request({ path: '/EWS/Exchange.asmx', method: 'GET', headers: { host: 'mail.contoso.test' } })
    await after.body.text()
    expect(after.headers.connection).toBe('close')
    await kept.close()
    // The Ping held on the removed server finishes there, on the configuration it started with.
    expect(await held).toMatchObject({ status: 200, backend: holder.name })
    await expect.poll(() => casgate.lines.some((line) => line.msg === 'the previous configuration finished'), { timeout: 15_000 }).toBe(true)
  })

  it('keeps lockout counts, sign-outs and drains across a reload', async () => {
    const servers = await startEmulators(2)
    const casgate = await startCasgate(servers, { health: { enabled: false }, preauth: { usersFile: await usersFile(PASSWORDS), lockout: { userThreshold: 4, addressThreshold: 100, lockoutMs: 60_000 } } }, 1)
    const path = '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone'
    const session = await formsSession(casgate, 'jdoe', PASSWORDS.jdoe)
    expect((await fresh(casgate, '/owa/logoff.owa', { cookie: session })).status).toBe(302)
    for (let i = 0; i < 2; i++) expect((await fresh(casgate, path, { authorization: basic('jdoe', `guess-${i}`) })).status).toBe(401)
    expect((await adminJson(casgate, `/backends/${new URL(servers[0]!.url).host}/drain`, {})).status).toBe(200)

    // The same servers, a new Basic realm: the file really is read again.
    rewrite(casgate, (config) => ({ ...config, preauth: { ...(config.preauth as object), realm: 'Contoso mail' } }))
    expect(await adminJson(casgate, '/reload', {})).toMatchObject({ status: 200, reloaded: true })
    expect((await fresh(casgate, path)).headers['www-authenticate']).toBe('Basic realm="Contoso mail", charset="UTF-8"')
    // Two more wrong guesses reach the threshold of 4: the right password is refused now.
    for (let i = 2; i < 4; i++) expect((await fresh(casgate, path, { authorization: basic('jdoe', `guess-${i}`) })).status).toBe(401)
    expect((await fresh(casgate, path, { authorization: basic('jdoe', PASSWORDS.jdoe) })).status).toBe(401)
    // The signed-out session stays signed out.
    expect((await fresh(casgate, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(302)
    // The drained server stays drained.
    const answers = await Promise.all(Array.from({ length: 6 }, () => fresh(casgate, '/EWS/Exchange.asmx', { authorization: basic('asmith', PASSWORDS.asmith) })))
    expect(new Set(answers.map((answer) => answer.backend))).toEqual(new Set(['ex2']))
    expect((await adminJson(casgate, '/status') as { drained: Array<{ backend: string }> }).drained.map((state) => state.backend)).toEqual([new URL(servers[0]!.url).host])
  })

  it('keeps affinity placements across a reload, those that spilled off their first choice included', async () => {
    const servers = await startEmulators(3)
    const casgate = await startCasgate(servers, { health: { enabled: false }, affinity: { balanceFactor: 1.05 } }, 1)
    const sync = (user: number): string => `/Microsoft-Server-ActiveSync?Cmd=Sync&User=user${user}&DeviceId=D${user}&DeviceType=iPhone`
    const before = await Promise.all(Array.from({ length: 60 }, async (_, user) => (await fresh(casgate, sync(user))).backend))
    const spilled = ((await adminJson(casgate, '/affinity')) as { vdirs: Array<{ vdir: string, spilled: number }> }).vdirs.find((vdir) => vdir.vdir === '/Microsoft-Server-ActiveSync')!.spilled
    expect(spilled).toBeGreaterThan(0)
    rewrite(casgate, (config) => ({ ...config, hsts: { maxAgeSeconds: 600 } }))
    expect(await adminJson(casgate, '/reload', {})).toMatchObject({ status: 200, reloaded: true })
    // In the other order: placed anew, bounded loads would spill other keys.
    const after: string[] = []
    for (let user = 59; user >= 0; user--) after[user] = (await fresh(casgate, sync(user))).backend
    expect(after.map((backend, user) => [user, backend]).filter(([user, backend]) => before[user as number] !== backend)).toEqual([])
  })

  it('fails no request while it reloads three times under load (new connections and keep-alive ones)', async () => {
    const servers = await startEmulators(2)
    const casgate = await startCasgate(servers, { health: { enabled: false } }, 1)
    const pki = await labPki()
    const statuses: number[] = []
    let reloads = 0
    const load = { on: true }
    // Two loops of new connections and one keep-alive client, bounded in count, while the file is re-read.
    const fresher = async (): Promise<void> => {
      for (let i = 0; i < 150 && load.on; i++) statuses.push((await fresh(casgate, '/EWS/Exchange.asmx')).status)
    }
    const keptAlive = async (): Promise<void> => {
      let client = new Client(`https://127.0.0.1:${casgate.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
      for (let i = 0; i < 150 && load.on; i++) {
        const response = await client.request({ path: '/EWS/Exchange.asmx', method: 'GET', headers: { host: 'mail.contoso.test' } })
        await response.body.text()
        statuses.push(response.statusCode)
        // A retiring configuration's connection says close after its answer: the client opens another.
        if (response.headers.connection === 'close') {
          await client.close()
          client = new Client(`https://127.0.0.1:${casgate.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
        }
      }
      await client.close()
    }
    const reloading = (async () => {
      for (let i = 0; i < 3; i++) {
        await new Promise((resolve) => setTimeout(resolve, 300))
        rewrite(casgate, (config) => ({ ...config, hsts: { maxAgeSeconds: 600 + i } }))
        expect(await adminJson(casgate, '/reload', {})).toMatchObject({ status: 200, reloaded: true })
        reloads++
      }
      await new Promise((resolve) => setTimeout(resolve, 300))
      load.on = false
    })()
    await Promise.all([fresher(), fresher(), keptAlive(), reloading])
    expect(reloads).toBe(3)
    expect(statuses.length).toBeGreaterThan(30)
    expect(statuses.filter((status) => status !== 200)).toEqual([])
    expect((await fresh(casgate, '/EWS/Exchange.asmx')).headers['strict-transport-security']).toBe('max-age=602')
  })
})
