import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { resolve } from 'node:path'
import { connect } from 'node:tls'
import { describe, expect, it } from 'vitest'
import { labPki } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'
import { watchCasgate } from './helpers/casgate-process.js'

// deploy/casgate.service is checked by systemd's own parser (systemd-analyze verify, and its
// offline security assessment), then run the way it tells systemd to run casgate — there is no
// systemd as PID 1 here, so setpriv stands in for the sandbox's identity: an unprivileged user
// (DynamicUser=) with CAP_NET_BIND_SERVICE as its only capability (AmbientCapabilities=,
// CapabilityBoundingSet=), $STATE_DIRECTORY as StateDirectory= sets it, ExecStartPost= for
// readiness, ExecReload= for SIGHUP (the whole configuration, with workers) and SIGTERM to the whole process group (KillMode=control-group).

const UNIT = resolve('deploy/casgate.service')
const NOBODY = 65534

/** renderUnit writes the unit with this checkout's paths, as an admin installing it would, and returns its [Service] keys. */
function renderUnit (dir: string, configFile: string): { file: string, service: Map<string, string[]> } {
  const text = readFileSync(UNIT, 'utf8')
    .replaceAll('/opt/casgate', process.cwd())
    .replaceAll('/usr/bin/node', process.execPath)
    .replaceAll('/etc/casgate/casgate.yaml', configFile)
  // The unit's name comes from the file's.
  const file = `${dir}/casgate.service`
  writeFileSync(file, text)
  const service = new Map<string, string[]>()
  let section = ''
  for (const line of text.split('\n')) {
    if (line.startsWith('[')) section = line
    const match = /^(\w+)=(.*)$/.exec(line)
    if (section === '[Service]' && match) service.set(match[1]!, [...service.get(match[1]!) ?? [], match[2]!])
  }
  return { file, service }
}

/** lowPort finds a free loopback port under 1024, where binding takes CAP_NET_BIND_SERVICE. */
async function lowPort (): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 600 + Math.floor(Math.random() * 400)
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer().once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error('no free port under 1024')
}

/**
 * serviceUser is who runs the unit's commands here: uid/gid 65534 (a dynamic user is some such
 * unprivileged id) with no groups. Where that user cannot read the checkout or run this Node (a
 * clone under /root), uid 0 without root's powers stands in: securebits keep exec from granting
 * it capabilities.
 */
let user: { uid: number, identity: string[] } | undefined
function serviceUser (): { uid: number, identity: string[] } {
  if (user !== undefined) return user
  const as = ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups']
  const readable = spawnSync('setpriv', [...as, 'test', '-r', resolve('dist/src/cli.js')]).status === 0 &&
    spawnSync('setpriv', [...as, 'test', '-x', process.execPath]).status === 0
  user = readable
    ? { uid: NOBODY, identity: as }
    : { uid: 0, identity: ['--securebits', '+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked'] }
  return user
}

/** asServiceUser is the setpriv prefix that gives a command the unit's identity and CAP_NET_BIND_SERVICE alone (or nothing). */
function asServiceUser (capabilities: '+net_bind_service' | ''): string[] {
  const caps = capabilities === ''
    ? ['--inh-caps', '-all', '--bounding-set', '-all']
    : ['--inh-caps', `-all,${capabilities}`, '--ambient-caps', capabilities, '--bounding-set', `-all,${capabilities}`]
  return ['setpriv', ...serviceUser().identity, ...caps, '--no-new-privs']
}

interface Service {
  child: ChildProcess
  lines: Array<Record<string, unknown>>
  stderr: () => string
  exited: Promise<number | null>
}

/** startService runs the unit's ExecStart= with the unit's identity, in a process group of its own. */
function startService (command: string[], stateDir: string, capabilities: '+net_bind_service' | ''): Service {
  const [program, ...args] = [...asServiceUser(capabilities), ...command]
  const child = spawn(program!, args, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, STATE_DIRECTORY: stateDir }
  })
  const watched = watchCasgate(child, () => {
    try { process.kill(-child.pid!, 'SIGKILL') } catch {}
  })
  return { child, ...watched }
}

/** run runs one of the unit's other commands (ExecStartPost=) to its end, as systemd does, with $MAINPID. */
async function run (command: string[], mainPid: number, capabilities: '+net_bind_service' | ''): Promise<{ status: number | null, stdout: string, stderr: string }> {
  const [program, ...args] = [...asServiceUser(capabilities), ...command]
  const child = spawn(program!, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH, MAINPID: String(mainPid) } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const status = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { status, stdout, stderr }
}

/** setup writes a configuration readable by the service user and a state directory as systemd makes it (0700, the user's). */
async function setup (port: number): Promise<{ dir: string, configFile: string, stateDir: string }> {
  const pki = await labPki()
  const dir = tempDir()
  chmodSync(dir, 0o755)
  const files = writeFiles(dir, { 'mail.crt': pki.server.certPem, 'mail.key': pki.server.keyPem, 'chain.pem': pki.intermediate.certPem, 'root.pem': pki.root.certPem })
  const config = {
    listen: { host: '127.0.0.1', port, workers: 2, shutdownGraceMs: 3_000 },
    hosts: [{ names: ['mail.contoso.test'], certificate: { cert: files['mail.crt'], key: files['mail.key'], chain: files['chain.pem'], ca: files['root.pem'] }, mode: 'offload', extendedProtection: false }],
    // A port nothing listens on: health probes fail, which does not keep casgate from serving its port.
    pools: { cas: { servers: ['http://127.0.0.1:9'] } },
    admin: { host: '127.0.0.1', port: 0 },
    log: { level: 'info' }
  }
  const configFile = `${dir}/casgate.yaml`
  writeFileSync(configFile, JSON.stringify(config))
  const stateDir = `${dir}/state`
  mkdirSync(stateDir, { mode: 0o700 })
  chownSync(stateDir, serviceUser().uid, serviceUser().uid)
  return { dir, configFile, stateDir }
}

describe('the systemd unit (deploy/casgate.service)', () => {
  it('passes systemd-analyze verify and its offline security assessment, with the sandbox the issue asks for', async () => {
    const { dir, configFile } = await setup(443)
    const { file, service } = renderUnit(dir, configFile)
    // verify exits 0 on unknown keys and bad values, only warning: nothing printed is the pass.
    const verify = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' })
    expect({ status: verify.status, output: verify.stdout + verify.stderr }).toEqual({ status: 0, output: '' })
    // 2.0 of 10 at most ("OK"); what keeps it from lower: the network (a proxy needs it) and V8's JIT.
    const security = spawnSync('systemd-analyze', ['security', '--offline=true', '--threshold=20', file], { encoding: 'utf8' })
    expect(security.status, security.stdout + security.stderr).toBe(0)
    expect(security.stdout).toMatch(/Overall exposure level for casgate\.service: [01]\.\d OK/)

    expect(service.get('DynamicUser')).toEqual(['yes'])
    expect(service.get('AmbientCapabilities')).toEqual(['CAP_NET_BIND_SERVICE'])
    expect(service.get('CapabilityBoundingSet')).toEqual(['CAP_NET_BIND_SERVICE'])
    expect(service.get('ProtectSystem')).toEqual(['strict'])
    expect(service.get('StateDirectory')).toEqual(['casgate'])
    expect(service.has('ReadWritePaths')).toBe(false)
    expect(service.get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID'])
    expect(service.get('Type')).toEqual(['exec'])
    expect(service.get('ExecStartPost')![0]).toContain('deploy/wait-listening.mjs')
  })

  it('runs as an unprivileged user with CAP_NET_BIND_SERVICE alone: binds a port under 1024, keeps its secrets in $STATE_DIRECTORY, is ready for ExecStartPost, reloads on SIGHUP, stops on SIGTERM', async () => {
    const port = await lowPort()
    const { dir, configFile, stateDir } = await setup(port)
    const { service } = renderUnit(dir, configFile)
    const casgate = startService(service.get('ExecStart')![0]!.split(' '), stateDir, '+net_bind_service')

    const ready = await run([...service.get('ExecStartPost')![0]!.split(' '), '--timeout-ms', '30000'], casgate.child.pid!, '+net_bind_service')
    expect(ready, casgate.stderr()).toMatchObject({ status: 0, stdout: expect.stringContaining(`accepts connections on 127.0.0.1:${port}`) })

    // It serves TLS on the low port with the configured chain.
    const pki = await labPki()
    const authorized = await new Promise<boolean>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'mail.contoso.test', ca: pki.root.certPem }, () => { resolve(socket.authorized); socket.end() })
      socket.once('error', reject)
    })
    expect(authorized).toBe(true)
    await expect.poll(() => casgate.lines.some((line) => line.msg === 'casgate listening' && line.role === 'primary'), { timeout: 20_000 }).toBe(true)

    // The admin token was generated where systemd's StateDirectory= puts state, the service user's alone.
    const token = statSync(`${stateDir}/admin-token`)
    expect({ mode: token.mode & 0o777, uid: token.uid }).toEqual({ mode: 0o600, uid: serviceUser().uid })

    // ExecReload=: SIGHUP to the main process reloads the whole configuration: two new workers
    // (binding the low port with the same capability) take over, the two previous ones finish.
    const reload = service.get('ExecReload')![0]!.replace('$MAINPID', String(casgate.child.pid)).split(' ')
    expect(spawnSync(reload[0]!, reload.slice(1)).status).toBe(0)
    await expect.poll(() => casgate.lines.some((line) => line.msg === 'configuration reloaded'), { timeout: 20_000 }).toBe(true)
    await expect.poll(() => casgate.lines.filter((line) => line.msg === 'worker of the previous configuration finished').length, { timeout: 10_000 }).toBe(2)

    // The readiness probe's connection, opened and closed before TLS, left no warning or error.
    expect(casgate.lines.filter((line) => Number(line.level) >= 40 && line.component !== 'health')).toEqual([])

    // KillMode=control-group: SIGTERM reaches the primary and every worker at once; all exit cleanly.
    process.kill(-casgate.child.pid!, 'SIGTERM')
    expect(await casgate.exited).toBe(0)
    await expect.poll(() => {
      try {
        process.kill(-casgate.child.pid!, 0)
        return 'still running'
      } catch (err) {
        return (err as NodeJS.ErrnoException).code
      }
    }, { timeout: 10_000 }).toBe('ESRCH')
  })

  it('without CAP_NET_BIND_SERVICE casgate cannot bind the port, and ExecStartPost fails rather than wait', async () => {
    const port = await lowPort()
    const { dir, configFile, stateDir } = await setup(port)
    const { service } = renderUnit(dir, configFile)
    const casgate = startService(service.get('ExecStart')![0]!.split(' '), stateDir, '')
    const ready = await run([...service.get('ExecStartPost')![0]!.split(' '), '--timeout-ms', '30000'], casgate.child.pid!, '')
    expect(ready.status).toBe(1)
    expect(ready.stderr).toContain('exited before it listened')
    // Each worker exits 2 (what RestartPreventExitStatus= names); the primary of a cluster, 1 so far.
    expect(await casgate.exited).not.toBe(0)
    expect(casgate.stderr()).toContain('cannot listen: bind EACCES')
  })
})
