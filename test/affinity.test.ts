import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { Agent, Client, type Dispatcher } from 'undici'
import { ExchangeEmulator, type EchoBody } from '../src/emulator/exchange-server.js'
import { startGateway, type Gateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { curl } from './helpers/curl.js'
import { labClient, labConfig, labPki, LogCapture, send, startEmulators, startLabGateway, type LabGatewayOptions } from './helpers/lab.js'
import { logOn } from './helpers/ntlm-client.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { admin } from './helpers/admin.js'

const EAS = '/Microsoft-Server-ActiveSync'
const USERS = Array.from({ length: 60 }, (_, i) => `user${String(i).padStart(2, '0')}`)
const passwordOf = (user: string): string => `Pw-${user}-Secret!`
const basic = (user: string): string => `Basic ${Buffer.from(`CONTOSO\\${user}:${passwordOf(user)}`).toString('base64')}`

interface VdirTuning {
  vdir: string
  policy: string
  keysHeld: number
  requests: number
  busiestShare: number
  placed: number
  spilled: number
  moved: number
  unkeyedRequests: number
  cookiesIssued?: number
  imbalance?: string
  servers: Array<{ name: string, keysHeld: number, requests: number, share: number }>
}

async function tuning (gateway: Gateway, vdir: string): Promise<VdirTuning> {
  const response = await fetch(`http://127.0.0.1:${gateway.adminAddress!.port}/affinity`, { headers: { authorization: `Bearer ${gateway.config.admin!.token}` } })
  const body = await response.json() as { vdirs: VdirTuning[] }
  return body.vdirs.find((entry) => entry.vdir === vdir)!
}

/** activeSync sends one ActiveSync Sync as `user` (Basic) and says which server answered. */
async function activeSync (gateway: Gateway, client: Dispatcher, user: string): Promise<string> {
  const response = await send(gateway, `${EAS}?Cmd=Sync&User=${user}&DeviceId=DEV${user}&DeviceType=iPhone`, {
    dispatcher: client, method: 'POST', headers: { authorization: basic(user), 'content-type': 'application/vnd.ms-sync.wbxml' }, body: 'wbxml'
  })
  expect(response.status).toBe(200)
  return String(response.headers['x-backend'])
}

function spread (assignment: ReadonlyMap<string, string>, servers: readonly string[]): number[] {
  return servers.map((server) => [...assignment.values()].filter((s) => s === server).length)
}

const offloadLab = (servers: ExchangeEmulator[], extra: Record<string, unknown> = {}): LabGatewayOptions => ({
  mode: 'offload',
  servers: servers.map((s) => s.url),
  // Round robin would scatter every user's requests; whatever sticks is affinity's doing.
  pool: { balance: 'round-robin' },
  extra: { admin: { host: '127.0.0.1', port: 0 }, health: { enabled: false }, ...extra }
})

describe('authorization affinity behind one carrier NAT address', () => {
  it('keeps each of 60 Basic users on one server, the busiest holding at most 1.5× the least busy', async () => {
    const servers = await startEmulators(3)
    const gateway = await startLabGateway(offloadLab(servers))
    const client = await labClient()
    const assignment = new Map<string, string>()
    // Five rounds; every request leaves from 127.0.0.1, as phones behind one NAT would.
    for (let round = 0; round < 5; round++) {
      await Promise.all(USERS.map(async (user) => {
        const server = await activeSync(gateway, client, user)
        expect(assignment.get(user) ?? server, `${user} moved in round ${round}`).toBe(server)
        assignment.set(user, server)
      }))
    }
    const counts = spread(assignment, ['ex1', 'ex2', 'ex3'])
    expect(Math.min(...counts)).toBeGreaterThan(0)
    expect(Math.max(...counts)).toBeLessThanOrEqual(1.5 * Math.min(...counts))

    const eas = await tuning(gateway, EAS)
    expect(eas.policy).toBe('authorization')
    expect(eas.keysHeld).toBe(60)
    expect(eas.requests).toBe(300)
    expect(eas.servers.map((s) => s.keysHeld)).toEqual(counts)
    expect(eas.servers.map((s) => s.requests)).toEqual(counts.map((n) => n * 5))
    expect(eas.busiestShare).toBeLessThan(0.45)
    expect(eas.imbalance).toBeUndefined()
    // Neither the credentials nor the user names are kept: the admin view has counts only, and
    // the logs never see a password or an Authorization value.
    const everything = JSON.stringify((await admin(gateway, '/affinity')).json)
    expect(everything).not.toMatch(/user\d\d/)
    const logs = gateway.logs.raw.join('')
    expect(logs).not.toContain(passwordOf('user07'))
    expect(logs).not.toContain(basic('user07').slice(6))
  })

  it('keeps NTLM users on one server across connections: the AUTHENTICATE names the user, ActiveSync\'s User= finds it again', async () => {
    const directory = { domain: 'CONTOSO', users: Object.fromEntries(USERS.map((user) => [user, passwordOf(user)])) }
    const servers = await Promise.all(['ex1', 'ex2', 'ex3'].map((name) => new ExchangeEmulator({ name, ntlm: directory }).start()))
    onTestFinished(async () => { await Promise.all(servers.map((s) => s.close())) })
    const gateway = await startLabGateway(offloadLab(servers))
    const pki = await labPki()
    const logOnOnce = async (user: string, path: string): Promise<string> => {
      // A connection of its own each time: NTLM starts over, with a fresh token.
      const connection = new Client(`https://127.0.0.1:${gateway.address.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
      try {
        const response = await logOn(connection, path, user, passwordOf(user), 'CONTOSO')
        const body = await response.body.json() as EchoBody
        expect(body.user).toBe(user)
        return body.server
      } finally {
        await connection.close()
      }
    }
    const assignment = new Map<string, string>()
    for (let batch = 0; batch < USERS.length; batch += 12) {
      await Promise.all(USERS.slice(batch, batch + 12).map(async (user, i) => {
        // Half the devices open with a bare request (as ActiveSync's OPTIONS does): no key until
        // the AUTHENTICATE message; the other half carry User= from the start.
        const first = await logOnOnce(user, i % 2 === 0 ? EAS : `${EAS}?Cmd=FolderSync&User=${user}&DeviceId=D${user}&DeviceType=Android`)
        assignment.set(user, first)
        for (let again = 0; again < 2; again++) {
          expect(await logOnOnce(user, `${EAS}?Cmd=Ping&User=CONTOSO%5C${user}&DeviceId=D${user}&DeviceType=Android`), user).toBe(first)
        }
      }))
    }
    const counts = spread(assignment, ['ex1', 'ex2', 'ex3'])
    expect(Math.min(...counts)).toBeGreaterThan(0)
    expect(Math.max(...counts)).toBeLessThanOrEqual(1.5 * Math.min(...counts))
    const eas = await tuning(gateway, EAS)
    expect(eas.keysHeld).toBe(60)
    expect(eas.servers.map((s) => s.keysHeld)).toEqual(counts)
  })

  it('two gateway instances with the same configuration send each user to the same server; another secret does not', async () => {
    const servers = await startEmulators(3)
    const options = offloadLab(servers)
    const config = await labConfig(options)
    const start = async (configuration: typeof config): Promise<Gateway> => {
      const gateway = await startGateway(configuration, { logger: createLogger({ level: 'silent', pretty: false }, new LogCapture()) })
      onTestFinished(() => gateway.close())
      return gateway
    }
    const first = await start(config)
    const second = await start(config)
    const secretFile = writeFiles(tempDir(), { 'affinity.key': 'a-different-secret-of-at-least-32-characters\n' })['affinity.key']
    const other = await start(await labConfig({ ...options, extra: { ...options.extra, affinity: { secretFile } } }))
    const client = await labClient()
    let disagreements = 0
    for (const user of USERS) {
      const one = await activeSync(first, client, user)
      expect(await activeSync(second, client, user), user).toBe(one)
      if (await activeSync(other, client, user) !== one) disagreements++
    }
    expect(new Set((await tuning(first, EAS)).servers.filter((s) => s.keysHeld > 0).map((s) => s.name)).size).toBe(3)
    // A third of the users would agree by chance; a shared secret is what makes all of them agree.
    expect(disagreements).toBeGreaterThan(10)
  })

  it('instances that see users in different orders disagree only on keys bounded loads moved off their first choice', async () => {
    const servers = await startEmulators(3)
    const config = await labConfig(offloadLab(servers))
    const start = async (): Promise<Gateway> => {
      const gateway = await startGateway(config, { logger: createLogger({ level: 'silent', pretty: false }, new LogCapture()) })
      onTestFinished(() => gateway.close())
      return gateway
    }
    const [first, second] = [await start(), await start()]
    const client = await labClient()
    const one = new Map<string, string>()
    const two = new Map<string, string>()
    for (const user of USERS) one.set(user, await activeSync(first, client, user))
    for (const user of [...USERS].reverse()) two.set(user, await activeSync(second, client, user))
    const disagreements = USERS.filter((user) => one.get(user) !== two.get(user)).length
    const spilled = (await tuning(first, EAS)).spilled + (await tuning(second, EAS)).spilled
    // A key's first choice is the same everywhere: only a spill (in either instance) can differ.
    expect(disagreements).toBeLessThanOrEqual(spilled)
  })

  it('moves a down server\'s users and no others; when it is back they return only as their entries expire', async () => {
    const servers = await startEmulators(3)
    const gateway = await startLabGateway(offloadLab(servers, { affinity: { idleTtlMs: 3000 } }))
    const client = await labClient()
    const users = USERS.slice(0, 30)
    const round = async (): Promise<Map<string, string>> => {
      const placed = new Map<string, string>()
      for (const user of users) placed.set(user, await activeSync(gateway, client, user))
      return placed
    }
    const before = await round()
    const ex2 = new URL(servers[1]!.url).host
    const onEx2 = users.filter((user) => before.get(user) === 'ex2')
    expect(onEx2.length).toBeGreaterThan(0)

    gateway.drain.drain(ex2, EAS, 60_000)
    const during = await round()
    for (const user of users) {
      if (onEx2.includes(user)) expect(during.get(user), user).not.toBe('ex2')
      else expect(during.get(user), user).toBe(before.get(user))
    }
    expect((await tuning(gateway, EAS)).moved).toBe(onEx2.length)

    gateway.drain.enable(ex2, EAS)
    // Back in service: the moved users stay where they are while they keep coming.
    expect(await round()).toEqual(during)
    // Once their entries expire and the sweep has passed, rendezvous hashing places everyone as at first.
    const deadline = Date.now() + 10_000
    while ((await tuning(gateway, EAS)).keysHeld > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200))
    expect((await tuning(gateway, EAS)).keysHeld).toBe(0)
    expect(await round()).toEqual(before)
  })
})

describe('cookie affinity', () => {
  async function cookieLab (extra: Record<string, unknown> = {}) {
    const servers = await startEmulators(3)
    const gateway = await startLabGateway(offloadLab(servers, extra))
    const pki = await labPki()
    const dir = tempDir()
    const root = writeFiles(dir, { 'root.pem': pki.root.certPem })['root.pem']
    const base = `https://mail.contoso.test:${gateway.address.port}`
    const browse = async (jar: string, path: string, follow = false): Promise<{ headers: string, body: EchoBody }> => {
      const headerFile = join(dir, `headers-${Math.random()}`)
      const body = await curl(['--cacert', root, '--resolve', `mail.contoso.test:${gateway.address.port}:127.0.0.1`, '-c', jar, '-b', jar, '-D', headerFile, ...(follow ? ['-L'] : []), `${base}${path}`])
      return { headers: readFileSync(headerFile, 'utf8'), body: JSON.parse(body) as EchoBody }
    }
    return { gateway, dir, browse }
  }

  it('inserts a signed cookie on a redirect, the browser brings it back and stays on one server; a tampered cookie is ignored', async () => {
    const { gateway, dir, browse } = await cookieLab({ vdirs: { '/ecp': { enabled: true } } })
    const homes = new Set<string>()
    for (let browser = 0; browser < 6; browser++) {
      const jar = join(dir, `jar-${browser}`)
      // The logon redirect: casgate's cookie comes with the 302 and the follow-up carries it.
      const { headers, body } = await browse(jar, '/owa/__casgate/redirect?to=/owa/auth/logon.aspx', true)
      const backends = [...headers.matchAll(/^x-backend: (\S+)/gim)].map((m) => m[1])
      expect(backends).toEqual([body.server, body.server])
      expect(headers).toMatch(/^set-cookie: CasgateAffinity-cas=[\w-]+\.[\w-]+; Path=\/; Secure; HttpOnly; SameSite=Lax/im)
      expect(String(body.headers.cookie)).toMatch(/CasgateAffinity-cas=/)
      for (let i = 0; i < 5; i++) expect((await browse(jar, '/owa/')).body.server).toBe(body.server)
      // ECP in the same pool keeps the browser on the same server.
      expect((await browse(jar, '/ecp/')).body.server).toBe(body.server)
      homes.add(body.server)
    }
    expect(homes.size).toBe(3)

    const jar = join(dir, 'jar-0')
    const value = /CasgateAffinity-cas\t(\S+)/.exec(readFileSync(jar, 'utf8'))![1]!
    // The server id kept, the signature broken: not trusted, the request is placed anew.
    writeFileSync(jar, readFileSync(jar, 'utf8').replace(value, `${value.slice(0, -3)}xyz`))
    const tampered = await browse(jar, '/owa/')
    expect(tampered.headers).toMatch(/^HTTP\/1.1 200/)
    expect(tampered.headers).toMatch(/^set-cookie: CasgateAffinity-cas=/im)
    expect(readFileSync(jar, 'utf8')).not.toContain('xyz')
    const owa = await tuning(gateway, '/owa')
    expect(owa.policy).toBe('cookie')
    expect(owa.unkeyedRequests).toBe(7) // six new browsers, one tampered cookie
  })

  it('follows a cookie the backends set: each value stays with the server that set it', async () => {
    const { gateway, dir, browse } = await cookieLab({ vdirs: { '/owa': { affinity: 'cookie', affinityCookie: 'X-OWA-Session' } } })
    const homes = new Set<string>()
    for (let browser = 0; browser < 6; browser++) {
      const jar = join(dir, `jar-${browser}`)
      const { body } = await browse(jar, `/owa/__casgate/cookie?name=X-OWA-Session&value=session${browser}`)
      for (let i = 0; i < 4; i++) expect((await browse(jar, '/owa/')).body.server).toBe(body.server)
      homes.add(body.server)
    }
    expect(homes.size).toBeGreaterThan(1)
    const owa = await tuning(gateway, '/owa')
    expect(owa.keysHeld).toBe(6)
    expect(owa.cookiesIssued).toBeUndefined()
  })
})

describe('source-ip affinity', () => {
  it('puts every client behind one address on one server (the carrier-NAT case, visible in the tuning data) and warns', async () => {
    const servers = await startEmulators(3)
    const gateway = await startLabGateway(offloadLab(servers, { vdirs: { '/EWS': { affinity: 'source-ip' } } }))
    expect(gateway.config.warnings.map((w) => w.path)).toContain('vdirs./EWS.affinity')
    const client = await labClient()
    const seen = new Set<string>()
    for (let i = 0; i < 120; i++) seen.add(String((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client })).headers['x-backend']))
    expect(seen.size).toBe(1)
    const ews = await tuning(gateway, '/EWS')
    expect(ews.busiestShare).toBe(1)
    expect(ews.keysHeld).toBe(1)
    expect(ews.imbalance).toMatch(/takes 100% of \/EWS's requests; an even share is 33%\. clients share addresses/)
    // Balanced vdirs say nothing.
    expect((await tuning(gateway, EAS)).imbalance).toBeUndefined()
  })

  it('keys on the address a trusted proxy names', async () => {
    const servers = await startEmulators(3)
    const gateway = await startLabGateway(offloadLab(servers, { vdirs: { '/EWS': { affinity: 'source-ip' } }, trustProxy: ['127.0.0.1'] }))
    const client = new Agent({ connect: { ca: (await labPki()).root.certPem, servername: 'mail.contoso.test' } })
    onTestFinished(() => client.close())
    const byAddress = new Map<string, Set<string>>()
    for (let i = 0; i < 40; i++) {
      const address = `198.51.100.${i % 20}`
      const served = String((await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, headers: { 'x-forwarded-for': address } })).headers['x-backend'])
      byAddress.set(address, (byAddress.get(address) ?? new Set()).add(served))
    }
    for (const [address, set] of byAddress) expect(set.size, address).toBe(1)
    expect(new Set([...byAddress.values()].flatMap((set) => [...set])).size).toBe(3)
  })
})
