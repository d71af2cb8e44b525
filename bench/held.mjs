// Memory per held long poll, casgate against nginx (offload, re-encrypt) and HAProxy (passthrough)
// in front of the same emulated Exchange backend, which holds every ActiveSync Ping. Each Ping is
// its own TLS connection from this process. For each proxy and mode, in turn: start the proxy,
// warm it up with a few short Pings, read its RSS, hold --count Pings, read its RSS again, and
// print KB per held request and the casgate/other ratio. For casgate also the split that
// bench/mem-probe.mjs (preloaded) reports: V8 heap used and committed, external, and the native
// rest; with --snapshot a V8 heap snapshot before and while holding (bench/heap-diff.mjs compares them).
//
// Each held request costs the proxy two descriptors (client and upstream) and the backend one
// (two in this process: client sockets and, in its child, the backend's): --count stays under the
// descriptor limit (`ulimit -n`).
//
//   node bench/held.mjs [--count 3000] [--modes offload,reencrypt,passthrough] [--proxies casgate,other]
//                       [--snapshot] [--node-options "--max-semi-space-size=1"] [--env MALLOC_ARENA_MAX=2] [--label TEXT]
//                       [--cli OTHER_BUILD/dist/src/cli.js] (an A/B against another build)
//                       [--proxies gateway --gateway FILE] (a gateway with ../shared/reference's GW_* environment)
import { spawn } from 'node:child_process'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { connect } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { childPids, haproxyPassthroughConf, nginxBin, nginxConf, nginxProxyServer, prepareWork, PROXY_PORT, rssOf, start, stop, waitForPort, work } from './lib.mjs'

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '3000' },
    modes: { type: 'string', default: 'offload,reencrypt,passthrough' },
    proxies: { type: 'string', default: 'casgate,other' },
    snapshot: { type: 'boolean', default: false },
    'node-options': { type: 'string', default: '' },
    env: { type: 'string', multiple: true, default: [] },
    label: { type: 'string', default: '' },
    cli: { type: 'string', default: 'dist/src/cli.js' },
    gateway: { type: 'string' }
  }
})
const count = Number(values.count)
const modes = values.modes.split(',')
const proxies = values.proxies.split(',')
const ADMIN_PORT = 19090
const HTTP_PORT = 18081
const HTTPS_PORT = 18444
if (values.snapshot) process.stderr.write('--snapshot: writing a heap snapshot costs casgate memory of its own; the RSS figures of this run are not the ones to quote\n')
const limit = Number(readFileSync('/proc/self/limits', 'utf8').match(/Max open files\s+(\d+)/)?.[1] ?? 1024)
if (count * 2 + 200 > limit) throw new Error(`--count ${count} needs ${count * 2 + 200} descriptors in a process; the limit is ${limit} (ulimit -n)`)
await prepareWork()
const ca = readFileSync(join(work, 'root.pem'))

// The backend: one emulator over HTTP (offload) and one over HTTPS with the proxies' own leaf
// (re-encrypt, passthrough), in a child process that tells how many Pings it holds.
const backend = spawn('node', ['--input-type=module', '-e', `
  import { readFileSync } from 'node:fs'
  import { ExchangeEmulator } from '${resolve('dist/src/emulator/exchange-server.js')}'
  const tls = { certPem: readFileSync('${work}/mail.crt', 'utf8'), keyPem: readFileSync('${work}/mail.key', 'utf8') }
  let held = 0
  for (const options of [{ name: 'ex1', port: ${HTTP_PORT} }, { name: 'ex2', port: ${HTTPS_PORT}, tls }]) {
    const emulator = await new ExchangeEmulator(options).start()
    emulator.server.on('request', (req, res) => {
      if (!req.url.includes('__casgate/hold')) return
      held++
      res.once('close', () => held--)
    })
  }
  process.on('message', () => process.send(held))
`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
const heldAtBackend = () => new Promise((resolve) => { backend.once('message', resolve); backend.send('count') })

function casgateConfig (mode) {
  const file = join(work, `casgate-held-${mode}.yaml`)
  const server = mode === 'offload' ? `http://127.0.0.1:${HTTP_PORT}` : `https://127.0.0.1:${HTTPS_PORT}`
  writeFileSync(file, mode === 'passthrough'
    ? `
listen: { host: 127.0.0.1, port: ${PROXY_PORT} }
hosts:
  - names: [mail.bench.test]
    mode: passthrough
    pool: cas
pools:
  cas: { servers: [${server}], ca: root.pem, serverName: mail.bench.test }
admin: { host: 127.0.0.1, port: ${ADMIN_PORT}, tokenFile: admin-token }
log: { level: warn }
`
    : `
listen: { host: 127.0.0.1, port: ${PROXY_PORT} }
hosts:
  - names: [mail.bench.test]
    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }
    mode: ${mode}
    extendedProtection: ${mode === 'reencrypt'}
pools:
  cas:
    servers: [${server}]
    ${mode === 'reencrypt' ? 'ca: root.pem\n    serverName: mail.bench.test' : ''}
admin: { host: 127.0.0.1, port: ${ADMIN_PORT}, tokenFile: admin-token }
log: { level: warn }
`)
  return file
}

/** The comparison: nginx (1 worker) for offload and re-encrypt, HAProxy mode tcp for passthrough. */
function otherProxy (mode) {
  if (mode === 'passthrough') {
    const file = haproxyPassthroughConf('haproxy-held', HTTPS_PORT, count + 1000)
    return { name: 'HAProxy', child: start('haproxy', ['-f', file], join(work, 'haproxy-held.log')) }
  }
  const conf = nginxConf(`nginx-held-${mode}`, nginxProxyServer(mode, HTTP_PORT, HTTPS_PORT, '', `proxy_read_timeout 1h;
      proxy_ssl_session_reuse on;`))
  // As many connections as the held Pings need (nginxConf's 4096 would make nginx reuse them).
  writeFileSync(conf, readFileSync(conf, 'utf8').replace('worker_processes 1;', `worker_processes 1;\nworker_rlimit_nofile ${limit};`).replace('worker_connections 4096', `worker_connections ${count * 4}`))
  return { name: 'nginx', child: start(nginxBin, ['-c', conf], join(work, `nginx-held-${mode}/stdout.log`)) }
}

/** hold opens n TLS connections to the proxy, 100 at a time, each sending one Ping held for ms. */
async function hold (n, ms) {
  const sockets = []
  const open = () => new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: PROXY_PORT, servername: 'mail.bench.test', ca }, () => {
      socket.write(`POST /Microsoft-Server-ActiveSync/__casgate/hold?ms=${ms}&Cmd=Ping&User=u${sockets.length}&DeviceId=d${sockets.length}&DeviceType=iPhone HTTP/1.1\r\nHost: mail.bench.test\r\nContent-Length: 0\r\n\r\n`)
      resolve()
    })
    socket.on('error', () => resolve())
    socket.resume()
    sockets.push(socket)
  })
  for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, open))
  return sockets
}

/** probe asks bench/mem-probe.mjs inside casgate for its memory figures (and a heap snapshot with --snapshot). */
async function probe (pid) {
  const before = new Set(readdirSync(work))
  process.kill(pid, 'SIGUSR2')
  for (let i = 0; i < 1200; i++) {
    await sleep(250)
    const file = readdirSync(work).find((f) => f.startsWith(`probe-${pid}-`) && f.endsWith('.json') && !before.has(f))
    if (file) return JSON.parse(readFileSync(join(work, file), 'utf8'))
  }
  throw new Error('casgate did not answer the memory probe')
}

async function measure (proxy, mode) {
  const env = { ...process.env, ...Object.fromEntries(values.env.map((kv) => kv.split(/=(.*)/s).slice(0, 2))) }
  let run
  if (proxy === 'casgate') {
    const nodeArgs = [...values['node-options'].split(' ').filter(Boolean), '--expose-gc', '--import', resolve('bench/mem-probe.mjs')]
    const child = spawn('node', [...nodeArgs, resolve(values.cli), 'start', '-c', casgateConfig(mode)],
      { cwd: work, env: { ...env, MEM_PROBE_DIR: work, MEM_PROBE_SNAPSHOT: values.snapshot ? '1' : '0' }, stdio: ['ignore', 'inherit', 'inherit'] })
    run = { name: 'casgate', child }
  } else if (proxy === 'gateway') {
    // A reference gateway with the GW_* environment of ../shared/reference (a floor: bare node:https + undici).
    const child = spawn('node', ['--expose-gc', '--import', resolve('bench/mem-probe.mjs'), resolve(values.gateway)], {
      cwd: work,
      env: { ...env, MEM_PROBE_DIR: work, GW_MODE: mode, GW_LISTEN_HOST: '127.0.0.1', GW_LISTEN_PORT: String(PROXY_PORT), GW_TLS_CERT: join(work, 'mail.crt'), GW_TLS_KEY: join(work, 'mail.key'), GW_BACKEND_URL: mode === 'offload' ? `http://127.0.0.1:${HTTP_PORT}` : `https://127.0.0.1:${HTTPS_PORT}`, GW_CA_CERT: join(work, 'root.pem'), GW_BACKEND_SNI: 'mail.bench.test' },
      stdio: ['ignore', 'ignore', 'inherit']
    })
    run = { name: 'gateway', child }
  } else {
    run = otherProxy(mode)
  }
  const pids = () => [run.child.pid, ...childPids(run.child.pid)]
  try {
    await waitForPort(PROXY_PORT)
    await sleep(1000)
    const freshMb = rssOf(pids())
    // Warm-up: the first requests build what every later one shares (TLS contexts, code, pools).
    const warm = await hold(100, 300)
    await sleep(1500)
    for (const socket of warm) socket.destroy()
    await sleep(1500)
    // casgate's figures after a full GC (the probe runs one), nginx's as they are.
    const idleProbe = run.name !== 'nginx' && run.name !== 'HAProxy' ? await probe(run.child.pid) : undefined
    const idleMb = rssOf(pids())
    const started = Date.now()
    const sockets = await hold(count, 3_600_000)
    let held = 0
    for (let i = 0; i < 240 && held < count; i++) {
      await sleep(500)
      held = await heldAtBackend()
    }
    const rampS = (Date.now() - started) / 1000
    await sleep(2000)
    const heldProbe = run.name !== 'nginx' && run.name !== 'HAProxy' ? await probe(run.child.pid) : undefined
    const heldMb = rssOf(pids())
    for (const socket of sockets) socket.destroy()
    for (let i = 0; i < 60 && (await heldAtBackend()) > 0; i++) await sleep(500)
    await sleep(3000)
    const releasedMb = rssOf(pids())
    const result = { proxy: run.name, mode, held, rampS, freshMb, idleMb, heldMb, releasedMb, kb: (heldMb - idleMb) * 1024 / held }
    if (idleProbe && heldProbe) {
      // V8's heap as used by objects, as committed by V8 (young generation, free space of old
      // pages), memory outside the heap V8 knows of (array buffers, external strings), and the
      // rest of RSS: native memory V8 does not see (OpenSSL, llhttp, libuv, malloc slack).
      const per = (f) => (f(heldProbe) - f(idleProbe)) / 1024 / held
      result.split = {
        heapUsed: per((p) => p.heap.used_heap_size),
        heapSlack: per((p) => p.heap.total_physical_size - p.heap.used_heap_size),
        newSpace: per((p) => p.spaces.new_space.physical),
        external: per((p) => p.memory.external),
        arrayBuffers: per((p) => p.memory.arrayBuffers)
      }
      result.split.native = result.kb - result.split.heapUsed - result.split.heapSlack - result.split.external
      result.idleProbe = idleProbe
      result.heldProbe = heldProbe
      if (values.snapshot) result.snapshots = [idleProbe.snapshot, heldProbe.snapshot]
    }
    process.stderr.write(`${mode} ${run.name}: ${held} held, RSS fresh ${freshMb.toFixed(0)} MB, warm ${idleMb.toFixed(0)} MB, held ${heldMb.toFixed(0)} MB, released ${releasedMb.toFixed(0)} MB: ${result.kb.toFixed(1)} KB per held request${result.split ? ` (V8 heap used ${result.split.heapUsed.toFixed(1)}, V8 heap committed but free ${result.split.heapSlack.toFixed(1)} (new space ${result.split.newSpace.toFixed(1)}), external ${result.split.external.toFixed(1)} of which array buffers ${result.split.arrayBuffers.toFixed(1)}, native rest ${result.split.native.toFixed(1)})` : ''}${result.snapshots ? `\n  heap snapshots: ${result.snapshots.join(' ')}` : ''}\n`)
    return result
  } finally {
    await stop(run.child)
    await sleep(500)
  }
}

const results = []
try {
  await waitForPort(HTTP_PORT)
  await waitForPort(HTTPS_PORT)
  for (const mode of modes) {
    for (const proxy of proxies) results.push(await measure(proxy, mode))
  }
} finally {
  await stop(backend)
}

const f = (n, d = 1) => Number.isFinite(n) ? n.toFixed(d) : 'n/a'
const lines = [
  `held ActiveSync Pings (each its own TLS connection), ${count} a run, node ${process.version}, ${new Date().toISOString().slice(0, 10)}${values.label ? `, ${values.label}` : ''}`,
  '',
  '| mode | proxy | held | ramp-up s | RSS fresh / warm MB | RSS held MB | KB per held request | × other | casgate KB: V8 heap used / V8 free / external / native |',
  '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...results.map((r) => {
    const other = results.find((o) => o.mode === r.mode && o.proxy !== 'casgate')
    return `| ${r.mode} | ${r.proxy} | ${r.held} | ${f(r.rampS)} | ${f(r.freshMb, 0)} / ${f(r.idleMb, 0)} | ${f(r.heldMb, 0)} | ${f(r.kb)} | ${r.proxy === 'casgate' && other ? `**${f(r.kb / other.kb, 2)}×**` : ''} | ${r.split ? `${f(r.split.heapUsed)} / ${f(r.split.heapSlack)} / ${f(r.split.external)} / ${f(r.split.native)}` : ''} |`
  })
]
console.log(lines.join('\n'))
writeFileSync('bench/results/held.md', lines.join('\n') + '\n')
writeFileSync('bench/results/held.json', JSON.stringify(results, null, 2))
