// Where casgate's CPU goes per request: casgate under `node --cpu-prof` in front of the nginx origin,
// driven by wrk as run.mjs drives it, then the profile's samples from the measured run only, grouped
// by stage (TLS/socket, Node HTTP, Fastify, guard, preauth/affinity, headers, undici, relay, logging, GC)
// and divided by the requests wrk counted. Loopback only, bounded by --duration; `npm run build` first.
//
//   node bench/profile.mjs [--mode offload|reencrypt] [--path /owa/small] [--duration 6] [--warmup 3]
//                          [--connections 32] [--interval 500] [--build DIR --label NAME]
//   (--build: profile the casgate built in another worktree; --label: suffix of the output files)
//   node bench/profile.mjs --perf   (no --cpu-prof: `perf record` of the measured run, CPU by library and kernel)
//   node bench/profile.mjs --analyse file.cpuprofile --requests N [--from µs --to µs]   (re-read a profile)
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    mode: { type: 'string', default: 'offload' },
    path: { type: 'string', default: '/owa/small' },
    duration: { type: 'string', default: '6' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    interval: { type: 'string', default: '500' },
    perf: { type: 'boolean', default: false },
    dir: { type: 'string', default: '/tmp/casgate-prof' },
    build: { type: 'string', default: '.' },
    label: { type: 'string', default: '' },
    analyse: { type: 'string' },
    requests: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' }
  }
})

// Stages, by the script a frame belongs to. A sample goes to the innermost frame of its stack that
// has a stage (native frames and Node's stream/event glue have none: they go to their caller).
const stages = [
  ['gc', 'GC', (f) => f.functionName === '(garbage collector)'],
  ['idle', 'idle', (f) => f.functionName === '(idle)'],
  ['program', '(program): native outside JS (libuv, TLS decryption on read, syscalls)', (f) => f.functionName === '(program)'],
  ['tls', 'TLS (_tls_wrap, tls, crypto JS)', (f) => /^node:(_tls_|tls$|internal\/tls|crypto$|internal\/crypto)/.test(f.url)],
  ['socket', 'socket I/O (net, stream_base_commons)', (f) => /^node:(net$|internal\/stream_base_commons)/.test(f.url)],
  ['http', 'Node HTTP server (_http_*, llhttp)', (f) => /^node:(_http_|internal\/http)/.test(f.url)],
  ['fastify', 'Fastify routing/hooks', (f) => /node_modules\/(fastify|find-my-way|avvio|@fastify|toad-cache|fast-querystring|fast-decode-uri|light-my-request|fast-json-stringify|process-warning)/.test(f.url)],
  ['guard', 'casgate guard (guard, routing, rules)', (f) => /\/src\/(guard|routing|rules)\//.test(f.url)],
  ['preauth', 'preauth / affinity', (f) => /\/src\/(preauth|affinity)\//.test(f.url)],
  ['headers', 'headers (src/proxy/headers.ts)', (f) => /\/src\/proxy\/headers\.js/.test(f.url)],
  ['undici', 'upstream dispatch (undici)', (f) => /node_modules\/undici\//.test(f.url)],
  ['relay', 'upstream exchange / relay (upstream-exchange.ts)', (f) => /\/src\/proxy\/upstream-exchange\.js/.test(f.url)],
  ['logging', 'logging (pino, sonic-boom, src/observe)', (f) => /node_modules\/(pino|sonic-boom|@pinojs|fast-redact|quick-format|atomic-sleep|thread-stream|fast-safe-stringify)|\/src\/observe\//.test(f.url)],
  ['casgate', 'casgate other (proxy plugin, pool, front, util)', (f) => /\/dist\/src\//.test(f.url)],
  ['glue', 'Node glue (streams, events, timers, ticks) with no staged caller', () => false]
]
const stageOf = (frame) => stages.find(([, , test]) => test(frame))?.[0]

/** analyse reads a .cpuprofile and returns µs per request by stage, function and file within [from, to]. */
function analyse (file, requests, from = -Infinity, to = Infinity) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const name = (f) => `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/').replace(/^file:\/\//, '')}:${f.lineNumber + 1}`
  const fileOf = (f) => f.url ? f.url.replace(/^.*\/(dist|node_modules)\//, '$1/').replace(/^(node_modules\/(@[^/]+\/)?[^/]+)\/.*/, '$1') : `(native/VM: ${f.functionName})`
  const self = new Map(); const total = new Map(); const fileSelf = new Map(); const fileTotal = new Map(); const byStage = new Map()
  const add = (map, key, us) => map.set(key, (map.get(key) ?? 0) + us)
  let t = profile.startTime; let windowUs = 0
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]
    // A sample stands for the time until the next one.
    const us = profile.timeDeltas[i + 1] ?? 0
    if (t < from || t > to) continue
    windowUs += us
    const stack = []
    for (let id = profile.samples[i]; id !== undefined; id = parent.get(id)) stack.push(nodes.get(id).callFrame)
    stack.pop() // (root)
    const leaf = stack[0]
    add(self, name(leaf), us)
    add(fileSelf, fileOf(leaf), us)
    for (const key of new Set(stack.map(name))) add(total, key, us)
    for (const key of new Set(stack.map(fileOf))) add(fileTotal, key, us)
    const staged = stack.map(stageOf)
    let k = staged.findIndex(Boolean)
    let stage = k < 0 ? 'glue' : staged[k]
    if (stage === 'socket') {
      // Which socket: the client's TLS socket (encryption happens in the native write) or undici's.
      while (k < staged.length && (!staged[k] || staged[k] === 'socket')) k++
      stage = staged[k] === 'undici' ? 'socket upstream' : 'socket client'
    }
    add(byStage, stage, us)
  }
  const busyUs = windowUs - (byStage.get('idle') ?? 0)
  const perReq = (us) => us / requests
  const sorted = (map) => [...map].sort((a, b) => b[1] - a[1])
  return { windowUs, busyUs, requests, byStage: sorted(byStage), self: sorted(self), total: sorted(total), fileSelf: sorted(fileSelf), fileTotal: sorted(fileTotal), perReq, samples: profile.samples.length }
}

function report (a, extra = '') {
  const label = (key) => stages.find(([k]) => k === key)?.[1] ??
    { 'socket client': 'client socket I/O (net/stream_base → native TLS write: encryption + write(2))', 'socket upstream': 'upstream socket I/O (net/stream_base under undici)' }[key] ?? key
  const f = (us) => a.perReq(us).toFixed(1)
  const pct = (us) => (100 * us / a.busyUs).toFixed(1)
  const lines = [
    `window ${(a.windowUs / 1e6).toFixed(2)} s, busy (not idle) ${(a.busyUs / 1e6).toFixed(2)} s, ${a.requests} requests → ${f(a.busyUs)} µs busy per request${extra}`,
    '', '| stage | µs / request | % of busy |', '| --- | ---: | ---: |',
    ...a.byStage.filter(([k]) => k !== 'idle').map(([k, us]) => `| ${label(k)} | ${f(us)} | ${pct(us)} |`),
    '', '| top self time | µs / request | % |', '| --- | ---: | ---: |',
    ...a.self.filter(([k]) => !k.startsWith('(idle)')).slice(0, 25).map(([k, us]) => `| \`${k}\` | ${f(us)} | ${pct(us)} |`),
    '', '| file | self µs / req | total µs / req |', '| --- | ---: | ---: |',
    ...a.fileTotal.filter(([k]) => !k.includes('(idle)') && !k.includes('(root)')).slice(0, 40).map(([k, us]) => `| ${k} | ${f(a.fileSelf.find(([x]) => x === k)?.[1] ?? 0)} | ${f(us)} |`),
    '', '| top total (inclusive) | µs / request | % |', '| --- | ---: | ---: |',
    ...a.total.filter(([k]) => !k.startsWith('(')).slice(0, 40).map(([k, us]) => `| \`${k}\` | ${f(us)} | ${pct(us)} |`)
  ]
  return lines.join('\n')
}

if (values.analyse) {
  const a = analyse(values.analyse, Number(values.requests), Number(values.from ?? -Infinity), Number(values.to ?? Infinity))
  console.log(report(a))
  process.exit(0)
}

const { casgateConf, cpuSecondsOf, nginxBin, ORIGIN_HTTP, originConf, parseWrk, prepareWork, PROXY_PORT, start, stop, waitForPort, work } = await import('./lib.mjs')
const mode = values.mode
await prepareWork()
const config = casgateConf(mode)

/** wrk runs asynchronously, so this process keeps reading casgate's stdout (its access log) meanwhile. */
function wrk (seconds, headers) {
  const args = ['-t', '1', '-c', values.connections, '-d', `${seconds}s`, '--latency', '--timeout', '5s',
    '-H', 'Host: mail.bench.test', ...headers.flatMap((h) => ['-H', h]), `https://127.0.0.1:${PROXY_PORT}${values.path}`]
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'inherit'] })
    const out = []
    child.stdout.on('data', (c) => out.push(c))
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 30) * 1000)
    child.on('exit', (code) => { clearTimeout(timer); code === 0 ? resolve(parseWrk(Buffer.concat(out).toString())) : reject(new Error(`wrk exited ${code}`)) })
  })
}

async function affinityCookie () {
  const { request } = await import('node:https')
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port: PROXY_PORT, path: values.path, rejectUnauthorized: false, headers: { host: 'mail.bench.test' } }, (res) => {
      res.resume()
      const cookie = [res.headers['set-cookie'] ?? []].flat().find((c) => c.startsWith('CasgateAffinity-'))
      resolve(cookie ? cookie.split(';')[0] : 'none=1')
    }).on('error', reject).end()
  })
}

/** threadTicks is user and system CPU (1/100 s ticks) of a process's main thread and of its other threads, from /proc. */
function threadTicks (pid) {
  const out = {}
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const name = tid === String(pid) ? 'main thread' : 'other threads (GC helpers, libuv pool, profiler)'
      const fields = stat.replace(/^.*\) /, '').split(' ')
      const t = out[name] ??= { user: 0, sys: 0 }
      t.user += Number(fields[11]); t.sys += Number(fields[12])
    } catch {}
  }
  return out
}

function threadReport (before, after, requests) {
  return Object.entries(after).map(([name, t]) => {
    const b = before[name] ?? { user: 0, sys: 0 }
    return `${name}: user ${((t.user - b.user) * 1e4 / requests).toFixed(1)} + sys ${((t.sys - b.sys) * 1e4 / requests).toFixed(1)} µs/request`
  }).join('; ')
}

rmSync(values.dir, { recursive: true, force: true })
mkdirSync(values.dir, { recursive: true })
const origin = start(nginxBin, ['-c', originConf()], join(work, 'origin/stdout.log'))
let casgate
try {
  await waitForPort(ORIGIN_HTTP)
  const profiler = values.perf ? ['--perf-basic-prof'] : ['--cpu-prof', `--cpu-prof-dir=${values.dir}`, `--cpu-prof-interval=${values.interval}`]
  casgate = start('node', [...profiler, join(values.build, 'dist/src/cli.js'), 'start', '-c', config], join(work, `casgate-${mode}-profiled.log`))
  await waitForPort(PROXY_PORT)
  const headers = [`Cookie: ${await affinityCookie()}`]
  await wrk(Number(values.warmup), headers) // warm-up, outside the analysed window
  const cpuBefore = cpuSecondsOf([casgate.pid])
  const threadsBefore = threadTicks(casgate.pid)
  const perf = values.perf && spawn('perf', ['record', '-q', '-F', '1999', '-g', '-p', String(casgate.pid), '-o', join(values.dir, 'perf.data')], { stdio: 'ignore' })
  // V8's profile timestamps and process.hrtime are both CLOCK_MONOTONIC (µs and ns).
  const from = Number(process.hrtime.bigint() / 1000n)
  const result = await wrk(Number(values.duration), headers)
  const to = Number(process.hrtime.bigint() / 1000n)
  const cpuUs = (cpuSecondsOf([casgate.pid]) - cpuBefore) * 1e6 / result.requests
  const threads = threadReport(threadsBefore, threadTicks(casgate.pid), result.requests)
  if (perf) {
    if (perf.exitCode === null) {
      perf.kill('SIGINT')
      await Promise.race([new Promise((resolve) => perf.once('exit', resolve)), sleep(10000)])
    }
    const text = `${result.requests} requests, ${result.rps.toFixed(0)} req/s; process CPU ${cpuUs.toFixed(1)} µs/request; threads: ${threads}\n` +
      execFileSync('perf', ['report', '-i', join(values.dir, 'perf.data'), '--no-children', '--sort', 'dso', '--stdio', '-g', 'none'], { maxBuffer: 1 << 26 }).toString()
    console.log(text)
    writeFileSync(`bench/results/perf-${mode}${values.label}.txt`, text)
  } else {
    await profileReport(result, cpuUs, threads, from, to)
  }
} finally {
  if (casgate) await stop(casgate)
  await stop(origin)
}

async function profileReport (result, cpuUs, threads, from, to) {
  if (result.errors > 0) throw new Error(`casgate answered ${result.errors} non-2xx responses; see ${work}`)
  // SIGINT: casgate drains and exits normally, and Node writes the profile at exit.
  casgate.kill('SIGINT')
  await Promise.race([new Promise((resolve) => casgate.once('exit', resolve)), sleep(15000)])
  const file = readdirSync(values.dir).find((name) => name.endsWith('.cpuprofile'))
  if (!file) throw new Error(`no profile written in ${values.dir}`)
  const a = analyse(join(values.dir, file), result.requests, from, to)
  const text = `casgate ${mode} ${values.path}, wrk -t1 -c${values.connections} -d${values.duration}s, --cpu-prof-interval=${values.interval} µs, node ${process.version}\n` +
    `${result.requests} requests, ${result.rps.toFixed(0)} req/s, p50 ${result.p50} ms; process CPU (user+sys, /proc) ${cpuUs.toFixed(1)} µs/request\n` +
    `threads: ${threads}\n` +
    `profile: ${join(values.dir, file)} --from ${from} --to ${to}\n\n` + report(a)
  console.log(text)
  writeFileSync(`bench/results/profile-${mode}${values.label}.md`, text + '\n')
}
