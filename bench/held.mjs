// Memory per held long poll: N ActiveSync Pings held open through casgate (offload) by an
// emulated backend, casgate's RSS read before and while they are held. Each held request costs
// casgate two descriptors (client and upstream), so N stays under the box's descriptor limit.
//
//   node bench/held.mjs [--count 9000]
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { prepareWork, PROXY_PORT, rssOf, stop, waitForPort, work } from './lib.mjs'

const { values } = parseArgs({ options: { count: { type: 'string', default: '9000' } } })
const count = Number(values.count)
const ADMIN_PORT = 19090
const BACKEND_PORT = 18081
await prepareWork()

const backend = spawn('node', ['--input-type=module', '-e', `
  import { ExchangeEmulator } from '${process.cwd()}/dist/src/emulator/exchange-server.js'
  await new ExchangeEmulator({ name: 'ex1', port: ${BACKEND_PORT} }).start()
`], { stdio: 'inherit' })
writeFileSync(join(work, 'casgate-held.yaml'), `
listen: { host: 127.0.0.1, port: ${PROXY_PORT} }
hosts:
  - names: [mail.bench.test]
    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }
    mode: offload
    extendedProtection: false
pools:
  cas: { servers: [http://127.0.0.1:${BACKEND_PORT}], connectionsPerServer: ${count + 100} }
admin: { host: 127.0.0.1, port: ${ADMIN_PORT} }
log: { level: warn }
`)
const casgate = spawn('node', ['dist/src/cli.js', 'start', '-c', join(work, 'casgate-held.yaml')], { stdio: 'inherit' })
const sockets = []
try {
  await waitForPort(BACKEND_PORT)
  await waitForPort(PROXY_PORT)
  await sleep(500)
  const idleMb = rssOf([casgate.pid])
  const idleProcess = (await (await fetch(`http://127.0.0.1:${ADMIN_PORT}/status`)).json()).process
  const ca = (await import('node:fs')).readFileSync(join(work, 'root.pem'))
  const open = () => new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: PROXY_PORT, servername: 'mail.bench.test', ca }, () => {
      socket.write(`POST /Microsoft-Server-ActiveSync/__casgate/hold?ms=600000&Cmd=Ping&User=u${sockets.length} HTTP/1.1\r\nHost: mail.bench.test\r\nContent-Length: 0\r\n\r\n`)
      resolve()
    })
    socket.on('error', () => resolve())
    sockets.push(socket)
  })
  const started = Date.now()
  for (let i = 0; i < count; i += 100) await Promise.all(Array.from({ length: Math.min(100, count - i) }, open))
  let held = 0
  let status
  for (let i = 0; i < 120 && held < count; i++) {
    await sleep(500)
    status = await (await fetch(`http://127.0.0.1:${ADMIN_PORT}/status`)).json()
    held = status.pools.cas.servers[0].outstandingRequests
  }
  await sleep(1000)
  const heldMb = rssOf([casgate.pid])
  status = await (await fetch(`http://127.0.0.1:${ADMIN_PORT}/status`)).json()
  const kb = (bytes) => (bytes / 1024 / held).toFixed(1)
  process.stderr.write(`per held request: V8 heap ${kb(status.process.heapUsedBytes - idleProcess.heapUsedBytes)} KB, external ${kb(status.process.externalBytes - idleProcess.externalBytes)} KB, rest of RSS (TLS, sockets, allocator) ${(((heldMb - idleMb) * 1024 * 1024 - (status.process.heapUsedBytes - idleProcess.heapUsedBytes) - (status.process.externalBytes - idleProcess.externalBytes)) / 1024 / held).toFixed(1)} KB\n`)
  const perConnectionKb = ((heldMb - idleMb) * 1024) / held
  const lines = [
    `held ActiveSync Pings through casgate (offload, TLS from the client), node ${process.version}, ${new Date().toISOString().slice(0, 10)}`,
    '',
    '| held requests | ramp-up s | casgate RSS idle MB | RSS held MB | KB per held request | projected RSS at 10,000 MB |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${held} | ${((Date.now() - started) / 1000).toFixed(1)} | ${idleMb.toFixed(0)} | ${heldMb.toFixed(0)} | ${perConnectionKb.toFixed(1)} | ${(idleMb + perConnectionKb * 10_000 / 1024).toFixed(0)} |`
  ]
  console.log(lines.join('\n'))
  writeFileSync('bench/results/held.md', lines.join('\n') + '\n')
} finally {
  for (const socket of sockets) socket.destroy()
  await stop(casgate)
  await stop(backend)
}
