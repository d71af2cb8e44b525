import { readFileSync, writeFileSync } from 'node:fs'
import { describe, expect, it, onTestFinished } from 'vitest'
import { issueCertificate } from '../src/certificates/lab-ca.js'
import { labPki, startEmulators } from './helpers/lab.js'
import { usersFile } from './helpers/users.js'
import { adminJson, formsSession, fresh, startCasgate as startCluster, type Cluster } from './helpers/casgate-cli.js'
import { handshake } from './helpers/tls-session.js'

// `listen.workers: N` runs N processes that behave as one casgate: the real CLI is started with two
// workers in front of emulated Exchange servers, and every client request below opens a new
// connection, so the primary deals them out to both workers in turn.

const PASSWORDS = { jdoe: 'Correct-Horse-1', asmith: 'Battery-Staple-2' }

function workersThatServed (cluster: Cluster): Set<unknown> {
  return new Set(cluster.lines.filter((line) => line.msg === 'request').map((line) => line.worker))
}

function basic (user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

describe('several workers behave as one casgate', () => {
  it('keeps each of 60 ActiveSync users on one server across 10 new connections each, whichever worker takes them', async () => {
    const servers = await startEmulators(3)
    // A tight balance factor makes many keys spill off their first choice: only shared placements agree then.
    const cluster = await startCluster(servers, { affinity: { balanceFactor: 1.05 } })
    const placed = new Map<string, Set<string>>()
    for (let round = 0; round < 10; round++) {
      await Promise.all(Array.from({ length: 60 }, async (_, user) => {
        const answer = await fresh(cluster, `/Microsoft-Server-ActiveSync?Cmd=Sync&User=user${user}&DeviceId=D${user}&DeviceType=iPhone`)
        expect(answer.status).toBe(200)
        const seen = placed.get(`user${user}`) ?? new Set<string>()
        placed.set(`user${user}`, seen.add(answer.backend))
      }))
    }
    const split = [...placed].filter(([, backends]) => backends.size > 1)
    expect(split).toEqual([])
    await expect.poll(() => workersThatServed(cluster).size).toBe(2)
    const affinity = await adminJson(cluster, '/affinity') as { vdirs: Array<{ vdir: string, requests: number, keysHeld: number, spilled: number }> }
    const activeSync = affinity.vdirs.find((vdir) => vdir.vdir === '/Microsoft-Server-ActiveSync')!
    expect(activeSync.requests).toBe(600)
    expect(activeSync.keysHeld).toBe(60)
    expect(activeSync.spilled).toBeGreaterThan(0)
  })

  it('probes health once for all workers, and every worker routes by what the probes found', async () => {
    const servers = await startEmulators(2)
    const cluster = await startCluster(servers, { health: { intervalMs: 300, rise: 1, fall: 1 } })
    servers[0]!.setHealthy('/EWS', false)
    // Both workers stop sending EWS to ex1 once the primary's probe sees its health page go.
    await expect.poll(async () => {
      const answers = await Promise.all(Array.from({ length: 8 }, () => fresh(cluster, '/EWS/Exchange.asmx')))
      return new Set(answers.map((answer) => answer.backend))
    }, { timeout: 10_000, interval: 200 }).toEqual(new Set(['ex2']))
    const before = servers.map((server) => server.healthProbes)
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    // One prober: about 1500/300 = 5 probes per (server, vdir) in this window, not twice as many.
    const vdirs = (await adminJson(cluster, '/status') as { health: Array<{ backend: string }> }).health.length / servers.length
    const probes = servers.map((server, i) => server.healthProbes - before[i]!)
    for (const count of probes) expect(count).toBeLessThanOrEqual(Math.ceil(1_500 / 270) * vdirs + vdirs)
    await expect.poll(() => workersThatServed(cluster).size).toBe(2)
  })

  it('counts failed logons across workers: the threshold holds for the instance, not per worker', async () => {
    const servers = await startEmulators(1)
    const cluster = await startCluster(servers, { preauth: { usersFile: await usersFile(PASSWORDS), lockout: { userThreshold: 4, addressThreshold: 100, lockoutMs: 60_000 } } })
    const path = '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone'
    // Two wrong guesses land on each worker: alone, neither would reach 4.
    for (let i = 0; i < 4; i++) expect((await fresh(cluster, path, { authorization: basic('jdoe', `guess-${i}`) })).status).toBe(401)
    for (let i = 0; i < 2; i++) expect((await fresh(cluster, path, { authorization: basic('jdoe', PASSWORDS.jdoe) })).status).toBe(401)
    expect((await fresh(cluster, path.replace('jdoe', 'asmith'), { authorization: basic('asmith', PASSWORDS.asmith) })).status).toBe(200)
    await expect.poll(() => workersThatServed(cluster).size).toBe(2)
    // The admin clears the lockout once, on the primary: every worker lets jdoe in again.
    expect((await adminJson(cluster, '/lockout/clear', { user: 'jdoe' })).status).toBe(200)
    for (let i = 0; i < 4; i++) expect((await fresh(cluster, path, { authorization: basic('jdoe', PASSWORDS.jdoe) })).status).toBe(200)
    const placed = await adminJson(cluster, '/affinity/users/jdoe') as { vdirs: Array<{ vdir: string, server?: string }> }
    expect(placed.vdirs.find((vdir) => vdir.vdir === '/Microsoft-Server-ActiveSync')?.server).toBe(new URL(servers[0]!.url).host)
  })

  it('signs in on one worker and out on another: the signed-out session is refused by every worker', async () => {
    const servers = await startEmulators(1)
    const cluster = await startCluster(servers, { preauth: { usersFile: await usersFile(PASSWORDS) } })
    const session = await formsSession(cluster, 'jdoe', PASSWORDS.jdoe)
    for (let i = 0; i < 4; i++) expect((await fresh(cluster, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(200)
    expect((await fresh(cluster, '/owa/logoff.owa', { cookie: session })).status).toBe(302)
    for (let i = 0; i < 4; i++) expect((await fresh(cluster, '/owa/', { cookie: session, accept: 'text/html' })).status).toBe(302)
    await expect.poll(() => workersThatServed(cluster).size).toBe(2)
  })

  it('merges the workers\' figures on /status and carries a drain to every worker', async () => {
    const servers = await startEmulators(2)
    const cluster = await startCluster(servers)
    for (let i = 0; i < 6; i++) expect((await fresh(cluster, '/EWS/Exchange.asmx')).status).toBe(200)
    const status = await adminJson(cluster, '/status') as { workers: { serving: number, answered: number }, frontDoor: { terminatedConnections: number }, pools: { cas: { servers: Array<{ budgets: { interactive: { limit: number } } }> } } }
    expect(status.workers).toMatchObject({ serving: 2, answered: 2 })
    expect(status.frontDoor.terminatedConnections).toBe(6)
    // The configured budget holds for the instance: each worker has half of it.
    expect(status.pools.cas.servers[0]!.budgets.interactive.limit).toBe(256)
    // Metrics add the workers' counters up: six EWS requests, whichever worker served them.
    const token = readFileSync(`${cluster.dir}/admin-token`, 'utf8').trim()
    const metrics = await (await fetch(`http://127.0.0.1:${cluster.admin}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text()
    const ews = metrics.split('\n').filter((line) => line.startsWith('casgate_requests_total{') && line.includes('vdir="/EWS"'))
    expect(ews.reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0)).toBe(6)
    expect(metrics).toMatch(/^casgate_server_up\{pool="cas",server="[^"]+",vdir="\/EWS"\} 1$/m)
    const drained = await adminJson(cluster, `/backends/${new URL(servers[0]!.url).host}/drain`, {})
    expect(drained.status).toBe(200)
    const answers = await Promise.all(Array.from({ length: 10 }, () => fresh(cluster, '/EWS/Exchange.asmx')))
    expect(new Set(answers.map((answer) => answer.backend))).toEqual(new Set(['ex2']))
  })

  it('resumes TLS sessions whichever worker takes the reconnection (one ticket key for all)', async () => {
    const servers = await startEmulators(1)
    const cluster = await startCluster(servers)
    const pki = await labPki()
    const first = await handshake(cluster.port, pki.root.certPem)
    // Dealt round robin: of four reconnections, two land on the other worker.
    const again = await Promise.all([0, 1, 2, 3].map(async () => (await handshake(cluster.port, pki.root.certPem, { session: first.session })).reused))
    expect(again).toEqual([true, true, true, true])
  })

  it('replaces a worker that dies and logs it; the instance keeps serving, and the replacement knows who is locked out', async () => {
    const servers = await startEmulators(1)
    const cluster = await startCluster(servers, { preauth: { usersFile: await usersFile(PASSWORDS), lockout: { userThreshold: 4, addressThreshold: 100, lockoutMs: 60_000 } } })
    const path = '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone'
    for (let i = 0; i < 4; i++) expect((await fresh(cluster, path, { authorization: basic('jdoe', `guess-${i}`) })).status).toBe(401)
    const workerLine = (): Record<string, unknown> | undefined => cluster.lines.find((line) => line.msg === 'casgate listening' && line.worker !== undefined)
    await expect.poll(workerLine).toBeDefined()
    const pid = Number(workerLine()!.pid)
    process.kill(pid, 'SIGKILL')
    await expect.poll(() => cluster.lines.some((line) => line.msg === 'worker exited; starting another' && line.pid === pid), { timeout: 10_000 }).toBe(true)
    await expect.poll(() => cluster.lines.filter((line) => line.msg === 'casgate listening' && line.worker !== undefined).length, { timeout: 15_000 }).toBe(3)
    await expect.poll(async () => (await adminJson(cluster, '/status') as { workers: { serving: number } }).workers.serving).toBe(2)
    const answers = await Promise.all(Array.from({ length: 6 }, () => fresh(cluster, '/EWS/Exchange.asmx', { authorization: basic('asmith', PASSWORDS.asmith) })))
    expect(answers.every((answer) => answer.status === 200)).toBe(true)
    // The replacement replayed the records still in force: jdoe is refused by both workers.
    const replacement = Number(cluster.lines.filter((line) => line.msg === 'casgate listening' && line.worker !== undefined)[2]!.pid)
    for (let i = 0; i < 6; i++) expect((await fresh(cluster, path, { authorization: basic('jdoe', PASSWORDS.jdoe) })).status).toBe(401)
    await expect.poll(() => cluster.lines.some((line) => line.event === 'preauth-locked-out' && line.pid === replacement)).toBe(true)
  })

  it('passes SIGHUP to every worker (new certificates on both), and stops gracefully on SIGTERM', async () => {
    const servers = await startEmulators(1)
    const cluster = await startCluster(servers)
    const pki = await labPki()
    const renewed = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test'] }, pki.intermediate)
    writeFileSync(cluster.files['mail.crt']!, renewed.certPem)
    writeFileSync(cluster.files['mail.key']!, renewed.keyPem)
    cluster.child.kill('SIGHUP')
    const serial = async (): Promise<string> => {
      const { connect } = await import('node:tls')
      return new Promise((resolve, reject) => {
        const socket = connect({ host: '127.0.0.1', port: cluster.port, servername: 'mail.contoso.test', ca: pki.root.certPem }, () => {
          resolve(socket.getPeerCertificate().serialNumber)
          socket.end()
        })
        socket.on('error', reject)
      })
    }
    const expected = new (await import('node:crypto')).X509Certificate(readFileSync(cluster.files['mail.crt']!)).serialNumber
    await expect.poll(async () => new Set(await Promise.all(Array.from({ length: 6 }, serial))), { timeout: 10_000 }).toEqual(new Set([expected]))
    // A held request in flight finishes before the instance exits, and it exits cleanly.
    const held = fresh(cluster, '/EWS/__casgate/hold?ms=800')
    await expect.poll(() => servers[0]!.requests).toBeGreaterThan(0)
    cluster.child.kill('SIGTERM')
    expect((await held).status).toBe(200)
    expect(await cluster.exited).toBe(0)
  })
})

describe('reloading the whole configuration', () => {
  it('refuses a bad file and keeps serving; a good one removes a server while a Ping held there finishes', async () => {
    const servers = await startEmulators(2)
    const cluster = await startCluster(servers, { health: { enabled: false } })
    const file = `${cluster.dir}/casgate.yaml`
    const running = JSON.parse(readFileSync(file, 'utf8')) as { pools: { cas: { servers: string[] } } }
    const held = fresh(cluster, '/Microsoft-Server-ActiveSync/__casgate/hold?ms=4000&Cmd=Ping&User=jdoe&DeviceId=D1&DeviceType=iPhone')
    await expect.poll(() => servers.filter((server) => server.requests === 1).length).toBe(1)
    const holder = servers.find((server) => server.requests === 1)!
    const other = servers.find((server) => server !== holder)!

    writeFileSync(file, JSON.stringify({ ...running, pools: { cas: { servers: [] } } }))
    cluster.child.kill('SIGHUP')
    await expect.poll(() => cluster.lines.some((line) => line.msg === 'configuration reload refused; the running configuration stays'), { timeout: 10_000 }).toBe(true)
    expect((await fresh(cluster, '/EWS/Exchange.asmx')).status).toBe(200)

    writeFileSync(file, JSON.stringify({ ...running, pools: { cas: { servers: [other.url] } } }))
    expect(await adminJson(cluster, '/reload', {})).toMatchObject({ status: 200, reloaded: true })
    const answers = await Promise.all(Array.from({ length: 8 }, () => fresh(cluster, '/EWS/Exchange.asmx')))
    expect(new Set(answers.map((answer) => answer.backend))).toEqual(new Set([other.name]))
    const status = await adminJson(cluster, '/status') as { pools: { cas: { servers: Array<{ origin: string }> } }, workers: { serving: number } }
    expect(status.pools.cas.servers.map((server) => server.origin)).toEqual([other.url])
    expect(status.workers.serving).toBe(2)
    // The Ping held on the removed server finishes there, on the configuration it started with.
    expect(await held).toMatchObject({ status: 200, backend: holder.name })
    await expect.poll(() => cluster.lines.filter((line) => line.msg === 'worker of the previous configuration finished').length, { timeout: 15_000 }).toBe(2)
  })
})

describe('a reload whose workers cannot start', () => {
  it('fails, replaces none of them, and a worker that dies later is replaced with the configuration that runs', async () => {
    const servers = await startEmulators(1)
    const cluster = await startCluster(servers, { health: { enabled: false } })
    const { createServer } = await import('node:net')
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>((resolve) => taken.close(() => resolve())))
    const file = `${cluster.dir}/casgate.yaml`
    const running = JSON.parse(readFileSync(file, 'utf8')) as { listen: object }
    // A valid file whose port is taken: its workers exit before they listen.
    writeFileSync(file, JSON.stringify({ ...running, listen: { ...running.listen, port: (taken.address() as { port: number }).port } }))
    const answer = await adminJson(cluster, '/reload', {})
    expect(answer).toMatchObject({ status: 400, reloaded: false })
    await new Promise((resolve) => setTimeout(resolve, 2_000))
    expect(cluster.lines.filter((line) => line.msg === 'worker exited; starting another')).toEqual([])
    expect((await fresh(cluster, '/EWS/Exchange.asmx')).status).toBe(200)
    // A worker of the running configuration dies: its replacement serves what runs, not the refused file.
    const pid = Number(cluster.lines.find((line) => line.msg === 'casgate listening' && line.worker !== undefined)!.pid)
    process.kill(pid, 'SIGKILL')
    await expect.poll(() => cluster.lines.some((line) => line.msg === 'worker exited; starting another' && line.pid === pid), { timeout: 10_000 }).toBe(true)
    await expect.poll(async () => (await adminJson(cluster, '/status') as { workers: { serving: number } }).workers.serving, { timeout: 15_000 }).toBe(2)
    const answers = await Promise.all(Array.from({ length: 6 }, () => fresh(cluster, '/EWS/Exchange.asmx')))
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(200))
    expect(cluster.lines.filter((line) => line.msg === 'worker exited; starting another')).toHaveLength(1)
  })
})

describe('a cluster that cannot start', () => {
  it('exits 2, as one process does, when its workers cannot listen (the port is taken)', async () => {
    const servers = await startEmulators(1)
    const { createServer } = await import('node:net')
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>((resolve) => taken.close(() => resolve())))
    const port = (taken.address() as { port: number }).port
    await expect(startCluster(servers, { listen: { host: '127.0.0.1', port, workers: 2, shutdownGraceMs: 1_000 } })).rejects.toThrow(/casgate exited 2: .*before it listened/s)
  })
})
