import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { Agent } from 'undici'
import { normalizeUser } from '../src/auth/user-name.js'
import { basicCredentials } from '../src/auth/basic.js'
import { labPki, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { usersFile } from './helpers/users.js'

// Smart lockout over real sockets: each party connects from its own loopback address
// (127.0.0.0/8 is all local on Linux), so casgate sees a phone, a sprayer and a carrier NAT apart.

type LabGateway = Awaited<ReturnType<typeof startLabGateway>>
const PASSWORDS: Record<string, string> = { jdoe: 'Correct-Horse-1', asmith: 'Battery-Staple-2', bwayne: 'Not-Batman-3' }
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
const eas = (device: string, user = 'jdoe'): string => `/Microsoft-Server-ActiveSync?Cmd=Sync&User=${user}&DeviceId=${device}&DeviceType=iPhone`
const PHONE = '127.0.0.2'
const SPRAYER = '127.0.0.3'
const NEW_NAT = '127.0.0.4'
const CARRIER_NAT = '127.0.0.5'
const ELSEWHERE = '127.0.0.6'

function users (): Promise<string> {
  return usersFile(PASSWORDS)
}

async function lockoutLab (servers?: string[], preauth: Record<string, unknown> = {}): Promise<LabGateway> {
  return startLabGateway({
    mode: 'offload',
    servers: servers ?? (await startEmulators(1)).map((s) => s.url),
    extra: { health: { enabled: false }, preauth: { usersFile: await users(), ...preauth } }
  })
}

/** from is a client whose connections come from `address`. */
async function from (address: string): Promise<Agent> {
  const pki = await labPki()
  const agent = new Agent({ localAddress: address, connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
  onTestFinished(() => agent.close())
  return agent
}

type Answer = { status: number, text: string, challenge: unknown }
async function attempt (gateway: LabGateway, client: Agent, path: string, authorization?: string, method: 'GET' | 'POST' | 'OPTIONS' = 'POST'): Promise<Answer> {
  const response = await send(gateway, path, { dispatcher: client, method, headers: authorization === undefined ? {} : { authorization }, ...(method === 'POST' ? { body: 'x' } : {}) })
  return { status: response.status, text: response.text, challenge: response.headers['www-authenticate'] }
}

function expectNoSecrets (gateway: LabGateway, ...more: string[]): void {
  const raw = gateway.logs.raw.join('')
  for (const text of [...Object.values(PASSWORDS), ...more]) expect(raw).not.toContain(text)
  for (const [user, password] of Object.entries(PASSWORDS)) expect(raw).not.toContain(basic(user, password).slice(6))
}

/**
 * startBasicExchange is a Client Access server that checks Basic itself, as IIS does on the paths
 * casgate never preauthenticates: 401 with its challenges to a wrong password, NTLM or nothing.
 */
async function startBasicExchange (): Promise<{ url: string, seen: string[] }> {
  const seen: string[] = []
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const credentials = basicCredentials(req.headers.authorization)
      seen.push(`${req.method} ${req.url} ${credentials?.user ?? req.headers.authorization?.split(' ')[0] ?? '-'}`)
      if (credentials !== undefined && PASSWORDS[normalizeUser(credentials.user)] === credentials.password) {
        res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello ${credentials.user}`)
        return
      }
      res.writeHead(401, { 'www-authenticate': ['Basic realm="mail.contoso.test"', 'Negotiate', 'NTLM'], 'content-length': '0' }).end()
    })
  })
  server.keepAliveTimeout = 120_000 // as IIS: a pinned (NTLM-offered) connection outlives the test
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

describe('smart lockout (issue 12, item 6: lockout as a weapon)', () => {
  it('five bad passwords from a sprayer do not lock the user\'s working phone, at home or behind a new NAT address; the sprayer is locked', async () => {
    const gateway = await lockoutLab()
    const [phone, sprayer, newNat] = await Promise.all([from(PHONE), from(SPRAYER), from(NEW_NAT)])
    expect((await attempt(gateway, phone, eas('ApplF17D'), basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    const wrong = await attempt(gateway, sprayer, '/EWS/Exchange.asmx', basic('jdoe', 'guess-0'))
    expect(wrong.status).toBe(401)
    for (let i = 1; i < 5; i++) expect((await attempt(gateway, sprayer, '/EWS/Exchange.asmx', basic('jdoe', `guess-${i}`))).status).toBe(401)
    // Locked for the sprayer: the right password is answered exactly like a wrong one.
    expect(await attempt(gateway, sprayer, '/EWS/Exchange.asmx', basic('jdoe', PASSWORDS.jdoe!))).toEqual(wrong)
    expect(await attempt(gateway, sprayer, eas('Invented1'), basic('jdoe', PASSWORDS.jdoe!))).toMatchObject({ status: 401, text: wrong.text })
    // The phone keeps syncing; its device is known behind a new NAT address too.
    expect((await attempt(gateway, phone, eas('ApplF17D'), basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    expect((await attempt(gateway, phone, '/EWS/Exchange.asmx', basic('CONTOSO\\jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    expect((await attempt(gateway, newNat, eas('ApplF17D'), basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    // Without the device, the new address is a stranger like the sprayer.
    expect(await attempt(gateway, newNat, '/EWS/Exchange.asmx', basic('jdoe', PASSWORDS.jdoe!))).toEqual(wrong)
    const lockouts = gateway.logs.lines.filter((line) => line.event === 'preauth-lockout')
    expect(lockouts).toEqual([expect.objectContaining({ scope: 'user', user: 'jdoe', client: SPRAYER, lockedForMs: 15 * 60_000 })])
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-locked-out').map((line) => line.client)).toEqual([SPRAYER, SPRAYER, NEW_NAT])
    expectNoSecrets(gateway, 'guess-')
  })

  it('a burst of parallel guesses meets the lock as soon as it lands: five reach the directory, not thirty', async () => {
    const gateway = await lockoutLab()
    const sprayer = await from(SPRAYER)
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => attempt(gateway, sprayer, '/EWS/Exchange.asmx', basic('jdoe', `guess-${i}`))))
    expect(answers.every((answer) => answer.status === 401)).toBe(true)
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-failed')).toHaveLength(5)
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-locked-out')).toHaveLength(25)
  })

  it('twenty failures from one carrier NAT address lock unfamiliar users there, not those who signed in from it recently', async () => {
    const gateway = await lockoutLab()
    const [nat, elsewhere] = await Promise.all([from(CARRIER_NAT), from(ELSEWHERE)])
    expect((await attempt(gateway, nat, '/EWS/Exchange.asmx', basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    expect((await attempt(gateway, nat, eas('BwayneIpad', 'bwayne'), basic('bwayne', PASSWORDS.bwayne!))).status).toBe(200)
    const wrong = await attempt(gateway, nat, '/EWS/Exchange.asmx', basic('user0', 'spray'))
    for (let i = 1; i < 20; i++) await attempt(gateway, nat, '/EWS/Exchange.asmx', basic(`user${i}`, 'spray'))
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-lockout')).toEqual([expect.objectContaining({ scope: 'address', client: CARRIER_NAT })])
    expect((await attempt(gateway, nat, '/EWS/Exchange.asmx', basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    expect((await attempt(gateway, nat, eas('BwayneIpad', 'bwayne'), basic('bwayne', PASSWORDS.bwayne!))).status).toBe(200)
    expect(await attempt(gateway, nat, '/EWS/Exchange.asmx', basic('asmith', PASSWORDS.asmith!))).toEqual(wrong)
    expect((await attempt(gateway, elsewhere, '/EWS/Exchange.asmx', basic('asmith', PASSWORDS.asmith!))).status).toBe(200)
    expectNoSecrets(gateway)
  })

  it('a phone still holding the old password locks only itself, not the user\'s tablet, browser or new places', async () => {
    const gateway = await lockoutLab(undefined, { basicCacheTtlMs: 0 })
    const [home, hotel] = await Promise.all([from(PHONE), from(ELSEWHERE)])
    for (const device of ['OldPhone', 'Tablet']) expect((await attempt(gateway, home, eas(device), basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    // The password changed; the old phone keeps trying the old one.
    for (let i = 0; i < 5; i++) expect((await attempt(gateway, home, eas('OldPhone'), basic('jdoe', 'Old-Password-0'))).status).toBe(401)
    expect((await attempt(gateway, home, eas('OldPhone'), basic('jdoe', PASSWORDS.jdoe!))).status).toBe(401)
    expect((await attempt(gateway, home, eas('Tablet'), basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    expect((await attempt(gateway, home, '/EWS/Exchange.asmx', basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    expect((await attempt(gateway, hotel, '/EWS/Exchange.asmx', basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-lockout')).toEqual([expect.objectContaining({ scope: 'device', user: 'jdoe', client: PHONE })])
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-failed').every((line) => line.familiar === 'device')).toBe(true)
    expectNoSecrets(gateway, 'Old-Password-0')
  })
})

describe('Exchange\'s 401s count (issue 12, item 4: guessing around the lockout)', () => {
  it('forty wrong passwords on never-preauthenticated paths lock the user after five; NTLM handshakes count nothing', async () => {
    const exchange = await startBasicExchange()
    const gateway = await lockoutLab([exchange.url])
    const [phone, sprayer, ntlm] = await Promise.all([from(PHONE), from(SPRAYER), from(NEW_NAT)])
    expect((await attempt(gateway, phone, eas('ApplF17D'), basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)
    const before = exchange.seen.length
    const answers: Answer[] = []
    for (let i = 0; i < 40; i++) answers.push(await attempt(gateway, sprayer, '/EWS/mrsproxy.svc', basic('jdoe', `guess-${i}`)))
    expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 401))
    // Five reached Exchange and were refused there; casgate answered the other 35 itself.
    expect(exchange.seen.slice(before)).toEqual(Array.from({ length: 5 }, () => 'POST /EWS/mrsproxy.svc jdoe'))
    const failed = gateway.logs.lines.filter((line) => line.event === 'preauth-failed')
    expect(failed).toHaveLength(5)
    expect(failed.every((line) => line.via === 'exchange' && line.user === 'jdoe' && line.client === SPRAYER)).toBe(true)
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-lockout')).toEqual([expect.objectContaining({ scope: 'user', user: 'jdoe', client: SPRAYER })])
    // Locked there and on checked vdirs, the right password as well, answered like casgate's wrong password.
    const wrong = await attempt(gateway, sprayer, '/EWS/Exchange.asmx', basic('asmith', 'not-it'))
    expect(await attempt(gateway, sprayer, '/EWS/mrsproxy.svc', basic('jdoe', PASSWORDS.jdoe!))).toEqual(wrong)
    expect(await attempt(gateway, sprayer, '/EWS/Exchange.asmx', basic('jdoe', PASSWORDS.jdoe!))).toEqual(wrong)
    expect(exchange.seen.slice(before)).toHaveLength(5)
    // The user's phone is not the sprayer.
    expect((await attempt(gateway, phone, '/EWS/mrsproxy.svc', basic('jdoe', PASSWORDS.jdoe!))).status).toBe(200)

    // OPTIONS (excluded) and MAPI (preauth none) count too.
    for (let i = 0; i < 3; i++) expect((await attempt(gateway, sprayer, '/Microsoft-Server-ActiveSync', basic('bwayne', `g${i}`), 'OPTIONS')).status).toBe(401)
    for (let i = 3; i < 5; i++) expect((await attempt(gateway, sprayer, '/mapi/emsmdb/', basic('bwayne', `g${i}`))).status).toBe(401)
    const reached = exchange.seen.length
    expect((await attempt(gateway, sprayer, '/mapi/emsmdb/', basic('bwayne', PASSWORDS.bwayne!))).status).toBe(401)
    expect(exchange.seen.length).toBe(reached)

    // NTLM and anonymous requests get Exchange's 401 as the first step of a handshake: not failures.
    const failures = gateway.logs.lines.filter((line) => line.event === 'preauth-failed').length
    for (let i = 0; i < 10; i++) {
      expect((await attempt(gateway, ntlm, '/EWS/mrsproxy.svc', 'NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==')).status).toBe(401)
      expect((await attempt(gateway, ntlm, '/mapi/emsmdb/')).status).toBe(401)
    }
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-failed')).toHaveLength(failures)
    expectNoSecrets(gateway, 'guess-')
  })
})
