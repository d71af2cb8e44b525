// Readiness for systemd without sd_notify: deploy/casgate.service runs this as ExecStartPost=.
// It ends (status 0) once casgate accepts TCP connections on listen.host:listen.port, read from
// the same configuration file as casgate (defaults 0.0.0.0 and 443, as in src/config/schema.ts),
// so the unit stays "activating" until then. It fails (status 1) when casgate's main process
// ($MAINPID, set by systemd) exits first, or after --timeout-ms (default: none; systemd's
// TimeoutStartSec stops it).
//
// A TCP connection opened and closed at once, before any TLS byte, is what a port scanner does:
// casgate closes its side and logs nothing. With listen.workers the port accepts as soon as the
// first worker listens (node:cluster shares the primary's socket).
//
//   node deploy/wait-listening.mjs -c /etc/casgate/casgate.yaml [--host H] [--port N] [--timeout-ms N]
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { parse } from 'yaml'

const { values } = parseArgs({
  options: {
    config: { type: 'string', short: 'c' },
    host: { type: 'string' },
    port: { type: 'string' },
    'timeout-ms': { type: 'string', default: '0' },
    'interval-ms': { type: 'string', default: '200' }
  }
})

const listen = values.config === undefined ? {} : (parse(readFileSync(values.config, 'utf8'))?.listen ?? {})
const port = Number(values.port ?? listen.port ?? 443)
const bound = String(values.host ?? listen.host ?? '0.0.0.0')
// A wildcard address is reached on loopback.
const host = bound === '0.0.0.0' ? '127.0.0.1' : bound === '::' ? '::1' : bound
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  process.stderr.write(`wait-listening: listen.port ${JSON.stringify(port)} cannot be waited for; set a fixed port\n`)
  process.exit(1)
}

const mainPid = process.env.MAINPID ? Number(process.env.MAINPID) : undefined
const timeoutMs = Number(values['timeout-ms'])
const intervalMs = Number(values['interval-ms'])
const started = Date.now()

function accepts () {
  return new Promise((resolve) => {
    const socket = connect({ host, port })
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false) })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

function alive (pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists, as another user.
    return err.code === 'EPERM'
  }
}

for (;;) {
  if (await accepts()) {
    process.stdout.write(`casgate accepts connections on ${host}:${port} after ${Date.now() - started} ms\n`)
    process.exit(0)
  }
  if (mainPid !== undefined && !alive(mainPid)) {
    process.stderr.write(`wait-listening: casgate (pid ${mainPid}) exited before it listened on ${host}:${port}\n`)
    process.exit(1)
  }
  if (timeoutMs > 0 && Date.now() - started > timeoutMs) {
    process.stderr.write(`wait-listening: nothing accepts connections on ${host}:${port} after ${timeoutMs} ms\n`)
    process.exit(1)
  }
  await sleep(intervalMs)
}
