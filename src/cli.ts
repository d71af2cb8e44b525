#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { loadConfigFile, type GatewayConfig } from './config/load.js'
import { exchangeProfile } from './config/exchange-profile.js'
import { demoBanner, runDemo } from './demo.js'
import { CasgateError, ConfigError } from './errors.js'
import { startGateway } from './gateway.js'

const usage: Record<string, string> = {
  main: `casgate — edge reverse proxy and load balancer for Microsoft Exchange

Usage: casgate <command> [options]

Commands:
  start   run the gateway from a configuration file
  check   validate a configuration and its certificates without opening a port
  demo    run a self-contained demo: generated certificates, two emulated Exchange servers
          and casgate in front of them (what \`npm start\` does)

Run \`casgate <command> --help\` for the options of a command.`,
  start: `Usage: casgate start [--config FILE] [--grace-ms N]

Runs the gateway. The configuration is checked first; any problem is reported with its key
path and casgate exits with status 2 before opening a port.

  -c, --config FILE   configuration file (default: $CASGATE_CONFIG or ./casgate.yaml)
      --grace-ms N    on SIGTERM/SIGINT, let requests in flight finish for up to N ms
                      (default: listen.shutdownGraceMs, 30000)`,
  check: `Usage: casgate check [--config FILE]

Validates the configuration and loads its certificates, then prints what would be published.
Exit status: 0 all good, 1 warnings, 2 errors.

  -c, --config FILE   configuration file (default: $CASGATE_CONFIG or ./casgate.yaml)`,
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

/** checkReport renders what a configuration publishes, for `casgate check`. */
export function checkReport (config: GatewayConfig): string {
  const lines: string[] = [`configuration ${config.source} is valid`]
  for (const host of config.hosts) {
    if (host.mode === 'passthrough') {
      lines.push(`  host ${host.names.join(', ')} (passthrough to pool ${host.pool}, ${host.balance}, idle ${Math.round(host.idleTimeoutMs / 60_000)} min)`)
      continue
    }
    const leaf = host.certificate.leaf
    lines.push(`  host ${host.names.join(', ')} (${host.mode})`)
    lines.push(`    certificate ${leaf.subject.replace(/\n/g, ', ')}; expires ${new Date(leaf.validTo).toISOString().slice(0, 10)}; chain ${host.certificate.chain.length} intermediate(s)`)
  }
  for (const pool of config.pools.values()) {
    lines.push(`  pool ${pool.name}: ${pool.servers.map((url) => url.origin).join(', ')} (${pool.balance})`)
  }
  for (const vdir of config.vdirs) {
    const profile = exchangeProfile.find((p) => p.path === vdir.path)
    lines.push(`  vdir ${vdir.path} -> pool ${vdir.pool}, timeout ${Math.round(vdir.timeoutMs / 1000)} s${profile ? ` (${profile.note})` : ''}`)
  }
  for (const warning of config.warnings) lines.push(`  warning ${warning.path}: ${warning.message}.${warning.fix ? ` Fix: ${warning.fix}` : ''}`)
  return lines.join('\n')
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
  try {
    values = parseArgs({
      args: argv.slice(1),
      options: {
        help: { type: 'boolean', short: 'h' },
        config: { type: 'string', short: 'c' },
        'grace-ms': { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        dir: { type: 'string' }
      },
      strict: true
    }).values
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
        const config = loadConfigFile(configPath(values.config as string | undefined))
        process.stdout.write(checkReport(config) + '\n')
        return config.warnings.length > 0 ? 1 : 0
      }
      case 'start': {
        const config = loadConfigFile(configPath(values.config as string | undefined))
        const gateway = await startGateway(config)
        const graceMs = values['grace-ms'] !== undefined ? Number(values['grace-ms']) : config.listen.shutdownGraceMs
        stopOnSignals(() => gateway.close(graceMs))
        return undefined
      }
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
