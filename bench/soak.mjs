// Mixed-load soak (issue 13, part 5): N clients, each on one keep-alive TLS connection renewed
// every 7 requests, mixing OWA page loads with cookies, ActiveSync Sync and 5 s Pings, 64 KiB
// downloads and 256 KiB uploads, through casgate (offload) and/or nginx in front of the same
// emulated Exchange servers. Reports every failed request by kind, by error and by the request
// that preceded it on the same connection, latency, the proxy's RSS every 10 s, and what
// casgate logged (upstream errors, passive health taking a server out). Bounded by --duration
// and --requests; not part of the tests.
//
//   node bench/soak.mjs [--proxy casgate|nginx|both] [--duration 120] [--clients 16] [--backends 2]
//                       [--requests 200000] [--renew 7] [--mix owa=25,sync=20,ping=10,download=25,upload=20]
//                       [--seed 1]
//
// Each client is a node:https Agent with keepAlive and maxSockets 1: like a browser tab or a
// phone on HTTP/1.1, one request at a time on one connection (no pipelining), the next request
// only after the previous response was read to the end, the upload body streamed in 64 KiB
// writes as a browser reads a file, and socket errors seen as the client sees them.
import { spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { Agent, request } from 'node:https'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { adminStatus, childPids, nginxBin, nginxConf, prepareWork, PROXY_PORT, rssOf, stop, waitForPort, work } from './lib.mjs'

const { values } = parseArgs({
  options: {
    proxy: { type: 'string', default: 'casgate' },
    duration: { type: 'string', default: '120' },
    clients: { type: 'string', default: '16' },
    backends: { type: 'string', default: '2' },
    requests: { type: 'string', default: '200000' },
    renew: { type: 'string', default: '7' },
    mix: { type: 'string', default: 'owa=25,sync=20,ping=10,download=25,upload=20' },
    seed: { type: 'string', default: '1' }
  }
})
const durationS = Number(values.duration)
const clientCount = Number(values.clients)
const backendCount = Number(values.backends)
const maxRequests = Number(values.requests)
const renewEvery = Number(values.renew)
const proxies = values.proxy === 'both' ? ['casgate', 'nginx'] : [values.proxy]
if (!proxies.every((p) => p === 'casgate' || p === 'nginx')) throw new Error('--proxy casgate|nginx|both')
if (proxies.includes('nginx') && !nginxBin) throw new Error('nginx is not installed')
const mix = Object.fromEntries(values.mix.split(',').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]))
const ADMIN_PORT = 19090
const BACKEND_PORT = 18081
const SAMPLE_MS = 10_000
const TIMEOUT_MS = 30_000
const UPLOAD_BYTES = 256 * 1024
const DOWNLOAD_BYTES = 64 * 1024
const HOST = 'mail.bench.test'

// A small deterministic generator (mulberry32), so that two runs send the same sequence per client.
function random (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** requestFor builds the next request of a kind for one client (a user with a browser and a phone). */
function requestFor (kind, client, rnd) {
  const user = `user${client.id}`
  const eas = (cmd) => `/Microsoft-Server-ActiveSync?Cmd=${cmd}&User=${user}&DeviceId=DEV${client.id}&DeviceType=iPhone`
  const easHeaders = {
    authorization: `Basic ${Buffer.from(`CONTOSO\\${user}:pw`).toString('base64')}`,
    'ms-asprotocolversion': '16.1',
    'content-type': 'application/vnd.ms-sync.wbxml',
    'user-agent': 'Apple-iPhone15C2/2008.100'
  }
  const browser = { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) soak', accept: '*/*' }
  switch (kind) {
    case 'owa': return rnd() < 0.5
      ? { method: 'GET', path: '/owa/', headers: { ...browser, accept: 'text/html' } }
      : { method: 'GET', path: `/owa/service.svc?action=GetItem&n=${client.sent}`, headers: browser }
    case 'sync': return { method: 'POST', path: eas('Sync'), headers: easHeaders, body: Buffer.alloc(180, 3) }
    case 'ping': return { method: 'POST', path: eas('Ping').replace('?', '/__casgate/hold?ms=5000&'), headers: easHeaders, body: Buffer.alloc(60, 3) }
    case 'download': return { method: 'GET', path: `/owa/__casgate/bytes?n=${DOWNLOAD_BYTES}`, headers: browser }
    case 'upload': return {
      method: 'POST',
      path: rnd() < 0.5 ? '/ecp/DDI/DDIService.svc/upload' : '/owa/service.svc?action=CreateAttachmentFromLocalFile',
      headers: { ...browser, 'content-type': 'application/octet-stream' },
      body: Buffer.alloc(UPLOAD_BYTES, 'u')
    }
  }
  throw new Error(`unknown kind ${kind}`)
}

/** Cookie jar of one browser: name=value with the Path they were set for. */
function cookieHeader (jar, path) {
  return [...jar.values()].filter((c) => path.startsWith(c.path)).map((c) => `${c.name}=${c.value}`).join('; ')
}
function keepCookies (jar, setCookie) {
  for (const line of [setCookie ?? []].flat()) {
    const [pair, ...attributes] = line.split(';')
    const eq = pair.indexOf('=')
    const path = attributes.map((a) => a.trim()).find((a) => /^path=/i.test(a))?.slice(5) || '/'
    jar.set(pair.slice(0, eq).trim(), { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), path })
  }
}

/** Processes started here (backends, the proxy under test), killed if the soak is interrupted. */
const children = new Set()
const sockets = new WeakMap()
let socketIds = 0

/** send runs one request on the client's connection and says how it ended. */
function send (client, kind, spec, ca) {
  return new Promise((resolve) => {
    const started = performance.now()
    const outcome = { kind, path: spec.path, started, ms: 0, status: 0, error: undefined, connection: 0, position: 0, previous: undefined, reused: false }
    let settled = false
    const finish = (error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      outcome.ms = performance.now() - started
      outcome.error = error
      if (state) state.last = { kind, endedAt: performance.now(), error }
      resolve(outcome)
    }
    const cookie = cookieHeader(client.jar, spec.path)
    const headers = { host: HOST, ...spec.headers, ...(cookie ? { cookie } : {}), ...(spec.body ? { 'content-length': String(spec.body.length) } : {}) }
    const req = request({ agent: client.agent, host: '127.0.0.1', port: PROXY_PORT, servername: HOST, ca, method: spec.method, path: spec.path, headers })
    let state
    // How far the request got, for a timeout: queued, connected, sent, answered.
    let phase = 'queued'
    const timer = setTimeout(() => {
      finish(`TIMEOUT (${phase})`)
      req.destroy()
    }, TIMEOUT_MS)
    req.on('finish', () => { if (phase === 'connected') phase = 'sent' })
    req.on('socket', (socket) => {
      phase = 'connected'
      state = sockets.get(socket)
      if (!state) sockets.set(socket, state = { id: ++socketIds, served: 0, last: undefined })
      outcome.connection = state.id
      outcome.position = ++state.served
      outcome.reused = state.served > 1
      outcome.previous = state.last && { kind: state.last.kind, gapMs: performance.now() - state.last.endedAt, failed: state.last.error !== undefined }
    })
    req.on('error', (err) => finish(err.code ?? err.message))
    req.on('response', (res) => {
      phase = 'answered'
      outcome.status = res.statusCode
      keepCookies(client.jar, res.headers['set-cookie'])
      let bytes = 0
      const chunks = []
      res.on('data', (chunk) => { bytes += chunk.length; if (kind !== 'download') chunks.push(chunk) })
      res.on('error', (err) => finish(err.code ?? err.message))
      res.on('aborted', () => finish('ECONNRESET (response cut)'))
      res.on('end', () => {
        if (res.statusCode < 200 || res.statusCode >= 400) return finish(`status ${res.statusCode}`)
        if (kind === 'download' && bytes !== DOWNLOAD_BYTES) return finish(`short body ${bytes}`)
        if (kind === 'upload') {
          // The emulator echoes how many body bytes reached it: an upload must arrive whole.
          let echoed
          try { echoed = JSON.parse(Buffer.concat(chunks).toString()).bodyBytes } catch {}
          if (echoed !== UPLOAD_BYTES) return finish(`backend got ${echoed} of ${UPLOAD_BYTES} bytes`)
        }
        finish(undefined)
      })
    })
    if (!spec.body) return req.end()
    // In 64 KiB writes as a browser reads a file. No wait for 'drain' between them: 256 KiB is
    // nothing to buffer, and a 'drain' that never came once held a client's only socket for good
    // (response complete, request never ended; not seen against a bare node:https server).
    for (let offset = 0; offset < spec.body.length; offset += 64 * 1024) req.write(spec.body.subarray(offset, offset + 64 * 1024))
    req.end()
  })
}

/** runClient sends requests until the deadline, renewing its connection every `renewEvery` requests. */
async function runClient (id, deadline, budget, results, ca) {
  const rnd = random(Number(values.seed) * 1000 + id)
  const kinds = Object.keys(mix)
  const total = kinds.reduce((s, k) => s + mix[k], 0)
  const client = { id, sent: 0, jar: new Map(), agent: undefined }
  const renew = () => {
    client.agent?.destroy()
    client.agent = new Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 })
  }
  renew()
  while (performance.now() < deadline && budget.left-- > 0) {
    let pick = rnd() * total
    const kind = kinds.find((k) => (pick -= mix[k]) < 0) ?? kinds[0]
    const outcome = await send(client, kind, requestFor(kind, client, rnd), ca)
    outcome.client = id
    results.push(outcome)
    if (++client.sent % renewEvery === 0) renew()
  }
  client.agent.destroy()
}

function nginxProxyConf () {
  const servers = Array.from({ length: backendCount }, (_, i) => `server 127.0.0.1:${BACKEND_PORT + i};`).join(' ')
  return nginxConf('nginx-soak', `
  client_body_temp_path ${work}/nginx-soak/body;
  proxy_temp_path ${work}/nginx-soak/proxy;
  upstream cas { ${servers} keepalive 64; }
  server {
    listen 127.0.0.1:${PROXY_PORT} ssl;
    ssl_certificate ${work}/mail.crt;
    ssl_certificate_key ${work}/mail.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 10m;
    location / {
      proxy_pass http://cas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_read_timeout 120s;
    }
  }`)
}

function casgateConf () {
  const file = join(work, 'casgate-soak.yaml')
  const servers = Array.from({ length: backendCount }, (_, i) => `http://127.0.0.1:${BACKEND_PORT + i}`).join(', ')
  writeFileSync(file, `
listen: { host: 127.0.0.1, port: ${PROXY_PORT} }
hosts:
  - names: [${HOST}]
    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }
    mode: offload
    extendedProtection: false
pools:
  cas: { servers: [${servers}] }
vdirs:
  /ecp: { enabled: true }
admin: { host: 127.0.0.1, port: ${ADMIN_PORT}, tokenFile: admin-token }
log: { level: warn }
`)
  return file
}

/** casgateLogCounts reads casgate's JSON log: upstream failures by code, passive health changes. */
function casgateLogCounts (file) {
  const counts = { upstream: {}, down: [], other: {} }
  let text = ''
  try { text = readFileSync(file, 'utf8') } catch { return counts }
  for (const line of text.split('\n')) {
    let entry
    try { entry = JSON.parse(line) } catch { continue }
    if (entry.msg === 'upstream request failed') {
      const key = `${entry.code} (${entry.err?.code ?? entry.err?.type ?? '?'}: ${entry.err?.message ?? ''})`
      counts.upstream[key] = (counts.upstream[key] ?? 0) + 1
    } else if (entry.msg === 'backend health changed' && entry.to === 'down') {
      counts.down.push(`${entry.backend} ${entry.vdir} marked down (${entry.reason})`)
    } else if (entry.msg) {
      counts.other[entry.msg] = (counts.other[entry.msg] ?? 0) + 1
    }
  }
  return counts
}

const pairOf = (list, before, kind) => list.filter((r) => r.kind === kind && r.previous?.kind === before)
const quantile = (sorted, q) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN
const tally = (list, key) => list.reduce((m, x) => m.set(key(x), (m.get(key(x)) ?? 0) + 1), new Map())
const rows = (map) => [...map.entries()].sort((a, b) => b[1] - a[1])

async function soak (proxy, ca) {
  const logFile = join(work, `${proxy}-soak.log`)
  // Straight to the file (not collected until exit as lib.mjs start() does): casgate may take
  // longer than stop()'s 5 s to shut down, and the log is read right after.
  const log = openSync(logFile, 'w')
  const child = proxy === 'nginx'
    ? spawn(nginxBin, ['-c', nginxProxyConf()], { stdio: ['ignore', log, log] })
    : spawn('node', ['dist/src/cli.js', 'start', '-c', casgateConf()], { stdio: ['ignore', log, log] })
  closeSync(log)
  children.add(child)
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const pids = () => proxy === 'nginx' ? [child.pid, ...childPids(child.pid)] : [child.pid]
  const rss = []
  const results = []
  try {
    await waitForPort(PROXY_PORT)
    await sleep(1000) // casgate's first health probes
    const begin = performance.now()
    const sample = async () => {
      const point = { t: Math.round((performance.now() - begin) / 1000), rssMb: rssOf(pids()), heapMb: undefined, requests: results.length }
      if (proxy === 'casgate') {
        try { point.heapMb = (await adminStatus(ADMIN_PORT)).process.heapUsedBytes / 1048576 } catch {}
      }
      rss.push(point)
      process.stderr.write(`${proxy} t=${point.t}s requests=${point.requests} failed=${results.filter((r) => r.error).length} rss=${point.rssMb.toFixed(0)} MB\n`)
    }
    await sample()
    const sampler = setInterval(sample, SAMPLE_MS)
    const budget = { left: maxRequests }
    const deadline = begin + durationS * 1000
    await Promise.race([
      Promise.all(Array.from({ length: clientCount }, (_, i) => runClient(i + 1, deadline, budget, results, ca))),
      exited.then(() => { throw new Error(`${proxy} exited during the soak; see ${logFile}`) })
    ])
    clearInterval(sampler)
    await sample()
  } finally {
    await stop(child)
    await Promise.race([exited, sleep(10_000)])
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    children.delete(child)
  }
  const elapsedS = results.length ? (Math.max(...results.map((r) => r.started + r.ms)) - results[0].started) / 1000 : 0
  return { proxy, results, rss, elapsedS, log: proxy === 'casgate' ? casgateLogCounts(logFile) : undefined }
}

function report ({ proxy, results, rss, elapsedS, log }) {
  const failures = results.filter((r) => r.error !== undefined)
  const fmt = (n, d = 1) => Number.isFinite(n) ? n.toFixed(d) : 'n/a'
  const lines = [
    `soak through ${proxy} (offload): ${clientCount} clients, connection renewed every ${renewEvery} requests, ${backendCount} emulated backend(s), mix ${values.mix}, ${durationS} s, node ${process.version}, ${new Date().toISOString().slice(0, 10)}`,
    '',
    `**${failures.length} of ${results.length} requests failed** (${fmt(results.length / elapsedS, 0)} requests/s over ${fmt(elapsedS, 0)} s). ` +
      `Uploads sent right after a 64 KiB download on the same connection: ${pairOf(results, 'download', 'upload').length}, failed ${pairOf(failures, 'download', 'upload').length}.`,
    '',
    '| kind | requests | failed | p50 ms | p99 ms |',
    '| --- | ---: | ---: | ---: | ---: |'
  ]
  for (const kind of Object.keys(mix)) {
    const all = results.filter((r) => r.kind === kind)
    const ok = all.filter((r) => !r.error).map((r) => r.ms).sort((a, b) => a - b)
    lines.push(`| ${kind} | ${all.length} | ${all.length - ok.length} | ${fmt(quantile(ok, 0.5))} | ${fmt(quantile(ok, 0.99))} |`)
  }
  const short = results.filter((r) => !r.error && r.kind !== 'ping').map((r) => r.ms).sort((a, b) => a - b)
  lines.push(`| all but ping | ${results.filter((r) => r.kind !== 'ping').length} | ${failures.filter((r) => r.kind !== 'ping').length} | ${fmt(quantile(short, 0.5))} | ${fmt(quantile(short, 0.99))} |`)
  if (failures.length > 0) {
    lines.push('', '| failed kind | error | count |', '| --- | --- | ---: |')
    for (const [key, n] of rows(tally(failures, (r) => `${r.kind} | ${r.error}`))) lines.push(`| ${key} | ${n} |`)
    lines.push('', '| previous request on the same connection → failed request | count |', '| --- | ---: |')
    for (const [key, n] of rows(tally(failures, (r) => `${r.previous ? `${r.previous.kind}${r.previous.failed ? ' (failed)' : ''}` : '(none: new connection)'} → ${r.kind}`))) lines.push(`| ${key} | ${n} |`)
    // How often each pair fails: the denominator is every request that followed the same kind.
    lines.push('', '| pair | seen | failed | rate |', '| --- | ---: | ---: | ---: |')
    const pairs = tally(results, (r) => `${r.previous?.kind ?? '(new)'} → ${r.kind}`)
    const failedPairs = tally(failures, (r) => `${r.previous?.kind ?? '(new)'} → ${r.kind}`)
    for (const [key, n] of rows(failedPairs)) lines.push(`| ${key} | ${pairs.get(key)} | ${n} | ${fmt(100 * n / pairs.get(key))}% |`)
    const times = failures.map((r) => r.ms).sort((a, b) => a - b)
    lines.push('', `Time to failure: min ${fmt(times[0])} ms, p50 ${fmt(quantile(times, 0.5))} ms, max ${fmt(times.at(-1))} ms; gap after the previous response: p50 ${fmt(quantile(failures.filter((r) => r.previous).map((r) => r.previous.gapMs).sort((a, b) => a - b), 0.5), 2)} ms.`)
    lines.push('', 'First failures (t s, client, connection #, position on it, previous request and the gap after it, ms to failure, error):', '')
    for (const r of failures.slice(0, 15)) {
      lines.push(`- ${fmt((r.started - results[0].started) / 1000)} s, client ${r.client}, conn ${r.connection} #${r.position}, after ${r.previous ? `${r.previous.kind} (+${fmt(r.previous.gapMs, 2)} ms)` : 'nothing'}: ${r.kind} ${r.path.split('?')[0]} failed in ${fmt(r.ms)} ms: ${r.error}`)
    }
  }
  lines.push('', `${proxy} RSS every ${SAMPLE_MS / 1000} s:`, '', '| t s | requests | RSS MB | V8 heap MB |', '| ---: | ---: | ---: | ---: |')
  for (const p of rss) lines.push(`| ${p.t} | ${p.requests} | ${fmt(p.rssMb, 0)} | ${p.heapMb === undefined ? '—' : fmt(p.heapMb, 0)} |`)
  if (rss.length >= 4) {
    const half = Math.floor(rss.length / 2)
    const max = (list) => Math.max(...list.map((p) => p.rssMb))
    lines.push('', `RSS peak in the first half ${fmt(max(rss.slice(0, half)), 0)} MB, in the second half ${fmt(max(rss.slice(half)), 0)} MB.`)
  }
  if (log) {
    lines.push('', `casgate log: ${Object.values(log.upstream).reduce((a, b) => a + b, 0)} upstream failures, ${log.down.length} passive/active health "marked down".`, '')
    for (const [key, n] of rows(new Map(Object.entries(log.upstream)))) lines.push(`- ${n} × upstream request failed: ${key}`)
    for (const line of log.down) lines.push(`- ${line}`)
    for (const [key, n] of rows(new Map(Object.entries(log.other)))) lines.push(`- ${n} × ${key}`)
  }
  return lines.join('\n')
}

await prepareWork()
const ca = readFileSync(join(work, 'root.pem'))
const backends = spawn('node', ['--input-type=module', '-e', `
  import { ExchangeEmulator } from '${process.cwd()}/dist/src/emulator/exchange-server.js'
  for (let i = 0; i < ${backendCount}; i++) await new ExchangeEmulator({ name: 'ex' + (i + 1), port: ${BACKEND_PORT} + i }).start()
`], { stdio: 'inherit' })
children.add(backends)
// Interrupted: nothing started here outlives the soak.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of children) child.kill('SIGKILL')
    process.exit(130)
  })
}
try {
  for (let i = 0; i < backendCount; i++) await waitForPort(BACKEND_PORT + i)
  for (const proxy of proxies) {
    const text = report(await soak(proxy, ca))
    console.log(text + '\n')
    writeFileSync(`bench/results/soak-${proxy}.md`, text + '\n')
  }
} finally {
  await stop(backends)
}
