#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { certsCommand, CERTS_USAGE } from './cli-certs.js'
import { usersCommand, USERS_USAGE } from './cli-users.js'
import { loadConfigFile, readConfigText } from './config/load.js'
import { checkReport } from './check-report.js'
import { demoBanner, runDemo } from './demo.js'
import { CasgateError, ConfigError } from './errors/errors.js'
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { runPrimary } from './cluster/primary.js'
import { runWorker } from './cluster/worker.js'
import { startGateway } from './gateway/gateway.js'
import { checkExtendedProtection } from './tls/extended-protection.js'

const usage: Record<string, string> = {
  main: `casgate — edge reverse proxy and load balancer for Microsoft Exchange

Usage: casgate <command> [options]

Commands:
  start   run the gateway from a configuration file
  check   validate a configuration and its certificates without opening a port
  certs   show a certificate chain, convert PFX to PEM, generate a lab CA
  users   add a user to a local users file (preauthentication without a directory)
  demo    run a self-contained demo: generated certificates, two emulated Exchange servers
          and casgate in front of them (what \`npm start\` does)

Run \`casgate <command> --help\` for the options of a command.`,
  start: `Usage: casgate start [--config FILE] [--grace-ms N] [--ignore-extended-protection]

Runs the gateway. The configuration is checked first; any problem is reported with its key
path and casgate exits with status 2 before opening a port. SIGHUP (or POST /reload on the
admin listener) re-reads the whole configuration file: a file with problems is refused (they
are logged) and the running configuration stays; a good one takes the new connections, while
open ones (held long polls, Outlook Anywhere tunnels, pinned NTLM connections) finish on the
configuration they started with.

  -c, --config FILE   configuration file (default: $CASGATE_CONFIG or ./casgate.yaml)
      --grace-ms N    on SIGTERM/SIGINT, let requests in flight finish for up to N ms
                      (default: listen.shutdownGraceMs, 30000)
      --ignore-extended-protection
                      start even when a re-encrypting host serves another certificate than its
                      backends while Extended Protection is on (each mismatch is logged as an error)`,
  check: `Usage: casgate check [--config FILE] [--json]

Validates the configuration, loads its certificates and checks them (chain up to a trusted root,
names covered by subjectAltName, expiry, key strength, SHA-1), then prints what would be
published, one line per finding with its fix. Exit status: 0 all good, 1 warnings, 2 errors.

  -c, --config FILE   configuration file (default: $CASGATE_CONFIG or ./casgate.yaml)
      --json          print the result as JSON instead`,
  certs: CERTS_USAGE,
  users: USERS_USAGE,
  demo: `Usage: casgate demo [--port N] [--host ADDRESS] [--dir DIR]

Generates a throwaway CA and certificates, starts two emulated Exchange servers on loopback
and casgate in front of them, and prints where to point a browser and curl.

  --port N        client port (default 8443; 0 picks a free one)
  --host ADDRESS  address to listen on (default 127.0.0.1)
  --dir DIR       where the generated certificates go (default .casgate-demo)`
}

function fail (err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(`casgate: ${err.message}\n`)
    return 2
  }
  if (err instanceof CasgateError) {
    process.stderr.write(`casgate: ${err.message} [${err.code}]\n`)
    return 2
  }
  // A cluster worker that could not start: the instance exits as the worker did (2: the fix is the admin's).
  const exitStatus = (err as { exitStatus?: unknown })?.exitStatus
  if (typeof exitStatus === 'number') {
    process.stderr.write(`casgate: ${(err as Error).message}\n`)
    return exitStatus
  }
  const code = (err as NodeJS.ErrnoException)?.code
  if (code === 'EADDRINUSE' || code === 'EACCES') {
    process.stderr.write(`casgate: cannot listen: ${(err as Error).message}. Fix: choose another port (listen.port, or --port for the demo), or stop what holds it.\n`)
    return 2
  }
  process.stderr.write(`casgate: ${(err as Error)?.stack ?? String(err)}\n`)
  return 1
}

function configPath (value: string | undefined): string {
  return value ?? process.env.CASGATE_CONFIG ?? 'casgate.yaml'
}

function stopOnSignals (stop: () => Promise<void>): void {
  let stopping = false
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(130)
    stopping = true
    process.stderr.write(`casgate: ${signal}, stopping\n`)
    stop().then(() => process.exit(0), (err) => { fail(err); process.exit(1) })
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
}

/** checkJson is `casgate check --json`: the verdict, every finding, and the exit status. */
async function checkJson (file: string): Promise<number> {
  try {
    const config = loadConfigFile(file, { writeState: false })
    const ep = await checkExtendedProtection(config)
    if (ep.errors.length > 0) throw new ConfigError(file, ep.errors)
    config.warnings.push(...ep.warnings)
    process.stdout.write(JSON.stringify({ source: file, valid: true, errors: [], warnings: config.warnings }, null, 2) + '\n')
    return config.warnings.length > 0 ? 1 : 0
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stdout.write(JSON.stringify({ source: file, valid: false, errors: err.issues, warnings: [] }, null, 2) + '\n')
    return 2
  }
}

/** main runs the CLI; it resolves with the exit status for commands that end. */
export async function main (argv: string[]): Promise<number | undefined> {
  const command = argv[0]
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(usage.main + '\n')
    return command === undefined ? 1 : 0
  }
  if (!(command in usage) || command === 'main') {
    process.stderr.write(`casgate: unknown command ${JSON.stringify(command)}\n\n${usage.main}\n`)
    return 1
  }
  let values: Record<string, string | boolean | undefined>
  let positionals: string[]
  try {
    ({ values, positionals } = parseArgs({
      args: argv.slice(1),
      options: {
        help: { type: 'boolean', short: 'h' },
        json: { type: 'boolean' },
        'ignore-extended-protection': { type: 'boolean' },
        'passphrase-env': { type: 'string' },
        'passphrase-file': { type: 'string' },
        'password-env': { type: 'string' },
        out: { type: 'string' },
        names: { type: 'string' },
        config: { type: 'string', short: 'c' },
        'grace-ms': { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        dir: { type: 'string' }
      },
      strict: true,
      allowPositionals: command === 'certs' || command === 'users'
    }))
  } catch (err) {
    process.stderr.write(`casgate ${command}: ${(err as Error).message}\n\n${usage[command]}\n`)
    return 1
  }
  if (values.help) {
    process.stdout.write(usage[command] + '\n')
    return 0
  }
  try {
    switch (command) {
      case 'check': {
        const file = configPath(values.config as string | undefined)
        if (values.json) return await checkJson(file)
        const config = loadConfigFile(file, { writeState: false })
        const ep = await checkExtendedProtection(config)
        if (ep.errors.length > 0) throw new ConfigError(file, ep.errors)
        config.warnings.push(...ep.warnings)
        process.stdout.write(checkReport(config) + '\n')
        return config.warnings.length > 0 ? 1 : 0
      }
      case 'start': {
        const file = configPath(values.config as string | undefined)
        // A worker forked by the primary below: it serves until the primary stops it.
        if (cluster.isWorker) {
          runWorker(file, Number(process.env.CASGATE_WORKERS)).catch((err: unknown) => process.exit(fail(err)))
          return undefined
        }
        const text = readConfigText(file)
        const config = loadConfigFile(file, { text })
        const workers = config.listen.workers === 'auto' ? availableParallelism() : config.listen.workers
        if (workers > 1) {
          const primary = await runPrimary(config, {
            file,
            text,
            workers,
            graceMs: values['grace-ms'] !== undefined ? Number(values['grace-ms']) : config.listen.shutdownGraceMs,
            extendedProtection: values['ignore-extended-protection'] ? 'warn' : 'enforce'
          })
          stopOnSignals(() => primary.stop())
          return undefined
        }
        const gateway = await startGateway(config, { configFile: file, extendedProtection: values['ignore-extended-protection'] ? 'warn' : 'enforce' })
        const graceMs = values['grace-ms'] !== undefined ? Number(values['grace-ms']) : config.listen.shutdownGraceMs
        stopOnSignals(() => gateway.close(graceMs))
        process.on('SIGHUP', () => {
          gateway.logger.info('SIGHUP: reloading the configuration')
          gateway.reload().catch((err: unknown) => gateway.logger.error({ err }, 'configuration reload failed'))
        })
        return undefined
      }
      case 'certs':
        return await certsCommand(positionals, values)
      case 'users':
        return await usersCommand(positionals, values)
      case 'demo': {
        const run = await runDemo({
          port: Number(values.port ?? 8443),
          host: String(values.host ?? '127.0.0.1'),
          dir: String(values.dir ?? '.casgate-demo')
        })
        process.stdout.write(demoBanner(run))
        stopOnSignals(() => run.close())
        return undefined
      }
    }
  } catch (err) {
    return fail(err)
  }
  return 1
}

// Run only when executed, not when imported by tests.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main(process.argv.slice(2)).then((status) => {
    if (status !== undefined) process.exitCode = status
  }, (err) => { process.exitCode = fail(err) })
}
