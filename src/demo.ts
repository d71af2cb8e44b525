import { randomBytes } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import type { Logger } from 'pino'
import { buildConfig } from './config/load.js'
import { ExchangeEmulator } from './emulator/exchange-server.js'
import { startGateway, type Gateway } from './gateway/gateway.js'
import { hashPassword } from './auth/password-hash.js'
import { createLabPki } from './certificates/lab-ca.js'

/** DemoOptions are the flags of `casgate demo`. */
export interface DemoOptions {
  port: number
  host: string
  /** Where the throwaway CA and certificates are written (never committed). */
  dir: string
  logger?: Logger
}

/** DemoRun is a running demo: the gateway and its emulated backends. */
export interface DemoRun {
  gateway: Gateway
  backends: ExchangeEmulator[]
  rootCaFile: string
  /** The demo's sign-in (a local users file, generated with the certificates). */
  user: { name: string, password: string }
  close: () => Promise<void>
}

const DEMO_NAMES = ['localhost', 'mail.casgate.test', 'autodiscover.casgate.test', '127.0.0.1', '::1']

/**
 * runDemo generates a lab PKI, starts two emulated Client Access servers on loopback and casgate
 * in re-encrypt mode in front of them, serving the same certificate as the backends (what
 * Extended Protection needs).
 */
export async function runDemo (options: DemoOptions): Promise<DemoRun> {
  const dir = resolve(options.dir)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const pki = await createLabPki(DEMO_NAMES, { commonName: 'mail.casgate.test' })
  const files = {
    rootCa: join(dir, 'root-ca.pem'),
    cert: join(dir, 'mail.crt'),
    chain: join(dir, 'chain.pem'),
    key: join(dir, 'mail.key'),
    users: join(dir, 'users.txt')
  }
  // A fresh password each run, printed in the banner: nothing guessable is ever published.
  const user = { name: 'demo', password: randomBytes(9).toString('base64url') }
  writeFileSync(files.users, `# casgate demo users (casgate users add FILE USER)\n${user.name}:${await hashPassword(user.password)}\n`, { mode: 0o600 })
  writeFileSync(files.rootCa, pki.root.certPem)
  writeFileSync(files.cert, pki.server.certPem)
  writeFileSync(files.chain, pki.intermediate.certPem)
  writeFileSync(files.key, pki.server.keyPem, { mode: 0o600 })

  const tls = { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem }
  const backends = await Promise.all(['ex1', 'ex2'].map((name) => new ExchangeEmulator({ name, tls }).start()))
  const config = buildConfig({
    listen: { host: options.host, port: options.port },
    hosts: [{ names: DEMO_NAMES.filter((name) => !name.includes(':') && !/^\d/.test(name)), certificate: { cert: files.cert, key: files.key, chain: files.chain, ca: files.rootCa }, mode: 'reencrypt' }],
    pools: { cas: { servers: backends.map((b) => b.url), ca: files.rootCa, serverName: 'mail.casgate.test' } },
    vdirs: { '/ecp': { enabled: true } },
    // Loopback, a free port: status, drain and affinity tuning data, printed in the banner.
    admin: { host: '127.0.0.1', port: 0 },
    // OWA/ECP get casgate's sign-in form, ActiveSync/EWS Basic, against the local users file.
    preauth: { usersFile: files.users },
    log: { level: 'info', pretty: process.stdout.isTTY === true }
  }, { source: 'demo', baseDir: dir })
  let gateway: Gateway
  try {
    gateway = await startGateway(config, options.logger ? { logger: options.logger } : {})
  } catch (err) {
    await Promise.all(backends.map((b) => b.close()))
    throw err
  }
  return {
    gateway,
    backends,
    rootCaFile: files.rootCa,
    user,
    async close () {
      await gateway.close(5_000)
      await Promise.all(backends.map((b) => b.close()))
    }
  }
}

/** demoBanner is what `casgate demo` prints once it runs. */
export function demoBanner (run: DemoRun): string {
  const port = run.gateway.address.port
  const ca = relative(process.cwd(), run.rootCaFile) || run.rootCaFile
  return [
    '',
    'casgate demo is running: two emulated Exchange servers behind casgate (re-encrypt mode).',
    '',
    `  Browser   https://localhost:${port}/owa/   sign in as ${run.user.name} / ${run.user.password}`,
    `            (the certificate comes from a throwaway CA: ${ca}; trust it or accept the warning)`,
    `  curl      curl --cacert ${ca} https://localhost:${port}/owa/healthcheck.htm`,
    `            curl --cacert ${ca} https://localhost:${port}/Microsoft-Server-ActiveSync -X OPTIONS -i`,
    `            curl --cacert ${ca} -u ${run.user.name}:${run.user.password} https://localhost:${port}/EWS/Exchange.asmx`,
    `  Backends  ${run.backends.map((b) => `${b.name} ${b.url}`).join(', ')}`,
    ...(run.gateway.adminAddress
      ? [
          `  Admin     curl -H 'Authorization: Bearer ${run.gateway.config.admin!.token}' http://127.0.0.1:${run.gateway.adminAddress.port}/status   (and /affinity, /metrics)`,
          `            http://127.0.0.1:${run.gateway.adminAddress.port}/ in a browser: the status page (sign in with that token)`
        ]
      : []),
    '',
    'Ctrl-C stops it.',
    ''
  ].join('\n')
}
