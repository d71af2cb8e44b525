import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { Client } from 'undici'
import { expect } from 'vitest'
import type { ExchangeEmulator } from '../../src/emulator/exchange-server.js'
import { labPki } from './lab.js'
import { tempDir, writeFiles } from './tmp.js'
import { watchCasgate } from './casgate-process.js'
import { signInByForm } from './forms-sign-in.js'

// The real CLI (`casgate start`, from dist/) in front of emulated Exchange servers, with one
// process or several workers, for tests that need what only the CLI does: signals, workers, reload.

export interface Cluster {
  child: ChildProcess
  port: number
  admin: number
  dir: string
  files: Record<string, string>
  /** Every JSON log line printed so far, primary and workers. */
  lines: Array<Record<string, unknown>>
  exited: Promise<number | null>
}

/** startCasgate writes a configuration and runs `casgate start` with it until the test ends. */
export async function startCasgate (servers: ExchangeEmulator[], extra: Record<string, unknown> = {}, workers = 2): Promise<Cluster> {
  const pki = await labPki()
  const dir = tempDir()
  const files = writeFiles(dir, { 'mail.crt': pki.server.certPem, 'mail.key': pki.server.keyPem, 'chain.pem': pki.intermediate.certPem, 'root.pem': pki.root.certPem })
  const config = {
    listen: { host: '127.0.0.1', port: 0, workers, shutdownGraceMs: 5_000 },
    hosts: [{ names: ['mail.contoso.test'], certificate: { cert: files['mail.crt'], key: files['mail.key'], chain: files['chain.pem'], ca: files['root.pem'] }, mode: 'offload', extendedProtection: false }],
    pools: { cas: { servers: servers.map((s) => s.url) } },
    admin: { host: '127.0.0.1', port: 0 },
    log: { level: 'info' },
    stateDir: dir,
    ...extra
  }
  writeFileSync(`${dir}/casgate.yaml`, JSON.stringify(config))
  const child = spawn(process.execPath, ['dist/src/cli.js', 'start', '-c', `${dir}/casgate.yaml`], { stdio: ['ignore', 'pipe', 'pipe'] })
  const { lines, stderr, exited } = watchCasgate(child, () => child.kill('SIGTERM'))
  // With workers, the primary says when they all listen; one process says it itself.
  const listening = (line: Record<string, unknown>): boolean => line.msg === 'casgate listening' && (workers === 1 || line.role === 'primary')
  await expect.poll(() => lines.some(listening) || child.exitCode !== null, { timeout: 20_000, interval: 100 }).toBe(true)
  if (child.exitCode !== null) throw new Error(`casgate exited ${child.exitCode}: ${stderr()}`)
  const port = Number(lines.find(listening)!.port)
  const admin = Number(lines.find((line) => line.msg === 'admin listener on')!.port)
  return { child, port, admin, dir, files, lines, exited }
}

/** fresh sends one request on a connection of its own (so it may land on either worker). */
export async function fresh (cluster: Cluster, path: string, headers: Record<string, string> = {}, post?: string): Promise<{ status: number, backend: string, text: string, headers: Record<string, string | string[] | undefined> }> {
  const pki = await labPki()
  const client = new Client(`https://127.0.0.1:${cluster.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
  try {
    const response = await client.request({ path, method: post === undefined ? 'GET' : 'POST', headers: { host: 'mail.contoso.test', ...headers }, ...(post === undefined ? {} : { body: post }) })
    return { status: response.statusCode, backend: String(response.headers['x-backend']), text: await response.body.text(), headers: response.headers }
  } finally {
    await client.close()
  }
}

/** adminJson asks the primary's admin listener with the token it generated in the state directory. */
export async function adminJson (cluster: Cluster, path: string, body?: object): Promise<Record<string, unknown>> {
  const token = readFileSync(`${cluster.dir}/admin-token`, 'utf8').trim()
  const response = await fetch(`http://127.0.0.1:${cluster.admin}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  return { status: response.status, ...await response.json() as Record<string, unknown> }
}

/** formsSession signs in through casgate's form (each request on a new connection); resolves with the Cookie header of the session. */
export function formsSession (cluster: Cluster, user: string, password: string): Promise<string> {
  return signInByForm((path, headers, body) => fresh(cluster, path, headers, body), user, password)
}
