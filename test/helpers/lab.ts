import { Writable } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import { onTestFinished } from 'vitest'
import { Agent, type Dispatcher } from 'undici'
import { buildConfig, type GatewayConfig } from '../../src/config/load.js'
import { ExchangeEmulator, type EmulatorTls } from '../../src/emulator/exchange-server.js'
import { startGateway, type Gateway } from '../../src/gateway/gateway.js'
import { createLogger } from '../../src/observe/logger.js'
import { createLabPki, type LabPki } from '../../src/certificates/lab-ca.js'
import { tempDir, writeFiles } from './tmp.js'

/** LAB_NAMES are the names the lab server certificate covers. */
export const LAB_NAMES = ['mail.contoso.test', 'autodiscover.contoso.test', 'localhost', '127.0.0.1']

let shared: Promise<LabPki> | undefined
/** labPki is one root → intermediate → server PKI per test file (keys take time to make). */
export function labPki (): Promise<LabPki> {
  shared ??= createLabPki(LAB_NAMES)
  return shared
}

/** startEmulators starts `count` emulated Client Access servers, closed after the test. */
export async function startEmulators (count: number, tls?: EmulatorTls): Promise<ExchangeEmulator[]> {
  const servers = await Promise.all(Array.from({ length: count }, (_, i) =>
    new ExchangeEmulator({ name: `ex${i + 1}`, ...(tls ? { tls } : {}) }).start()))
  onTestFinished(async () => { await Promise.all(servers.map((s) => s.close())) })
  return servers
}

/** LogCapture collects the gateway's JSON log lines. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = []
  readonly raw: string[] = []
  override _write (chunk: Buffer, _encoding: string, done: () => void): void {
    const text = chunk.toString()
    this.raw.push(text)
    for (const line of text.split('\n')) if (line.trim()) this.lines.push(JSON.parse(line))
    done()
  }
}

/** LabGatewayOptions describe a gateway in front of emulators. */
export interface LabGatewayOptions {
  mode: 'offload' | 'reencrypt'
  servers: string[]
  vdirs?: Record<string, unknown>
  pool?: Record<string, unknown>
  listen?: Record<string, unknown>
  /** Default: on for reencrypt (lab backends serve casgate's certificate), off for offload. */
  extendedProtection?: boolean
  extra?: Record<string, unknown>
}

/** labConfig builds a validated configuration with the lab certificate written to disk. */
export async function labConfig (options: LabGatewayOptions, build: { writeState?: boolean } = {}): Promise<GatewayConfig> {
  const pki = await labPki()
  const dir = tempDir()
  const files = writeFiles(dir, {
    'mail.crt': pki.server.certPem,
    'mail.key': pki.server.keyPem,
    'chain.pem': pki.intermediate.certPem,
    'root.pem': pki.root.certPem
  })
  const { hostsExtra = [], ...extra } = (options.extra ?? {}) as { hostsExtra?: unknown[] } & Record<string, unknown>
  return buildConfig({
    listen: { host: '127.0.0.1', port: 0, ...options.listen },
    hosts: [{ names: LAB_NAMES.filter((n) => n !== '127.0.0.1'), certificate: { cert: files['mail.crt'], key: files['mail.key'], chain: files['chain.pem'], ca: files['root.pem'] }, mode: options.mode, extendedProtection: options.extendedProtection ?? options.mode === 'reencrypt' }, ...hostsExtra],
    pools: { cas: { servers: options.servers, ...(options.mode === 'reencrypt' ? { ca: files['root.pem'] } : {}), ...options.pool } },
    vdirs: options.vdirs ?? {},
    ...extra
  }, { source: 'test', baseDir: dir, ...build })
}

/** startLabGateway starts casgate on port 0 in front of the given servers; logs go to `logs`. */
export async function startLabGateway (options: LabGatewayOptions, logs = new LogCapture()): Promise<Gateway & { logs: LogCapture }> {
  const config = await labConfig(options)
  const gateway = await startGateway(config, { logger: createLogger({ level: 'info', pretty: false }, logs) })
  onTestFinished(() => gateway.close())
  return Object.assign(gateway, { logs })
}

/** labClient is an undici agent that trusts the lab root and sends `servername` as SNI. */
export async function labClient (servername = 'mail.contoso.test', options: Agent.Options = {}): Promise<Agent> {
  const pki = await labPki()
  const agent = new Agent({ connect: { ca: pki.root.certPem, servername }, ...options })
  onTestFinished(() => agent.close())
  return agent
}

/** get sends one request through the gateway and reads the whole body as text. */
export async function send (gateway: Gateway, path: string, options: { dispatcher: Dispatcher, method?: Dispatcher.HttpMethod, headers?: Record<string, string>, body?: string | Buffer }): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, text: string }> {
  // dispatcher.request sends the path as written; a URL would normalise %2e%2e away.
  const response = await options.dispatcher.request({
    origin: `https://127.0.0.1:${gateway.address.port}`,
    path,
    method: options.method ?? 'GET',
    headers: { host: 'mail.contoso.test', ...options.headers },
    ...(options.body !== undefined ? { body: options.body } : {})
  })
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() }
}

/** rawExchange writes bytes over TLS to the gateway exactly as given and returns all it answers. */
export async function rawExchange (gateway: Gateway, text: string | Buffer, servername = 'mail.contoso.test'): Promise<string> {
  const pki = await labPki()
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: gateway.address.port, servername, ca: pki.root.certPem }, () => socket.write(text))
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.setTimeout(5_000, () => socket.destroy(new Error('raw exchange timed out')))
  })
}
