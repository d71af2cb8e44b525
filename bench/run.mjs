// casgate against nginx, side by side: one nginx origin (1 worker), then for each scenario
// nginx as the proxy (1 worker) and casgate (one Node process) in front of that origin,
// alternating runs, driven by wrk over TLS on loopback. Prints CPU per request, req/s, p50/p99,
// RSS and the casgate/nginx ratios, with TLS session resumption on at both (and the origin) and
// off at both.
//
//   node bench/run.mjs [--duration 10] [--rounds 2] [--connections 32] [--only small-offload,...]
//     [--resumption on,off] [--b DIR] [--b-node-options '...'] [--a-node-options '...']
//
// --b DIR adds a second casgate, built in DIR (a worktree of another commit, `npm run build`
// there), to every round: an A/B of two builds (or of Node options) in the same run.
import { spawnSync, execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { affinityCookie, casgateConf, childPids, nginxProxyServer, cpuSecondsOf, nginxBin, nginxConf, nginxResumption, ORIGIN_HTTP, ORIGIN_HTTPS, originConf, parseWrk, prepareWork, PROXY_PORT, rssOf, start, stop, waitForPort, work } from './lib.mjs'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    only: { type: 'string' },
    resumption: { type: 'string', default: 'on,off' },
    b: { type: 'string' },
    'b-node-options': { type: 'string', default: '' },
    'a-node-options': { type: 'string', default: '' },
    // casgate with listen.workers N as well (issue 13 part 6): 1 and 2 by default.
    workers: { type: 'string', default: '1,2' }
  }
})
const duration = Number(values.duration)
const rounds = Number(values.rounds)
const connections = Number(values.connections)
const resumptions = values.resumption.split(',')
await prepareWork()

const streamModule = '/usr/lib/nginx/modules/ngx_stream_module.so'

function proxyConf (mode, resumption) {
  if (mode === 'passthrough') {
    // As casgate and HAProxy do: the ClientHello's server name picks the backend, then bytes flow.
    return nginxConf(`nginx-${mode}`, '', `load_module ${streamModule};
stream {
  map $ssl_preread_server_name $backend { mail.bench.test 127.0.0.1:${ORIGIN_HTTPS}; default 127.0.0.1:${ORIGIN_HTTPS}; }
  server { listen 127.0.0.1:${PROXY_PORT}; ssl_preread on; proxy_pass $backend; }
}`)
  }
  return nginxConf(`nginx-${mode}`, nginxProxyServer(mode, ORIGIN_HTTP, ORIGIN_HTTPS, nginxResumption(resumption), `proxy_ssl_session_reuse ${resumption === 'off' ? 'off' : 'on'};
      proxy_buffering on;`))
}

function wrk (path, extraHeaders = []) {
  const args = ['-t', '1', '-c', String(connections), '-d', `${duration}s`, '--latency', '--timeout', '5s',
    '-H', 'Host: mail.bench.test', ...extraHeaders.flatMap((h) => ['-H', h]), `https://127.0.0.1:${PROXY_PORT}${path}`]
  return parseWrk(execFileSync('wrk', args, { timeout: (duration + 30) * 1000 }).toString())
}

// Targets of issue 13 part 4: casgate's CPU per request at most this many times nginx's.
const scenarios = [
  { name: 'small-offload', mode: 'offload', path: '/owa/small', label: 'small, keep-alive, offload', target: 2.5 },
  { name: 'small-reencrypt', mode: 'reencrypt', path: '/owa/small', label: 'small, keep-alive, re-encrypt', target: 2.5 },
  { name: '64k-offload', mode: 'offload', path: '/owa/64k', label: '64 KiB, keep-alive, offload', target: 1.8 },
  { name: '64k-reencrypt', mode: 'reencrypt', path: '/owa/64k', label: '64 KiB, keep-alive, re-encrypt', target: 1.8 },
  { name: 'small-passthrough', mode: 'passthrough', path: '/owa/small', label: 'small, keep-alive, passthrough', target: 1.3 },
  { name: '64k-passthrough', mode: 'passthrough', path: '/owa/64k', label: '64 KiB, keep-alive, passthrough', target: 1.3 },
  { name: 'handshake-offload', mode: 'offload', path: '/owa/small', headers: ['Connection: close'], label: 'new TLS connection per request, offload' }
].filter((s) => !values.only || values.only.split(',').includes(s.name))

const here = resolve('.')
const workerCounts = values.workers.split(',').map(Number)
const casgates = Object.fromEntries(workerCounts.flatMap((workers) => {
  const suffix = workers === 1 ? '' : ` ${workers} workers`
  return [
    [`casgate${suffix}`, { dir: here, nodeOptions: values['a-node-options'], workers }],
    ...(values.b ? [[`casgate-b${suffix}`, { dir: resolve(values.b), nodeOptions: values['b-node-options'], workers }]] : [])
  ]
}))
const proxies = ['nginx', ...Object.keys(casgates)]

function startProxy (proxy, scenario, resumption) {
  if (proxy === 'nginx') return start(nginxBin, ['-c', proxyConf(scenario.mode, resumption)], join(work, `nginx-${scenario.mode}/stdout.log`))
  const { dir, nodeOptions, workers } = casgates[proxy]
  const flags = [...(nodeOptions ? nodeOptions.split(' ') : []), ...(resumption === 'off' ? ['--import', join(here, 'bench/no-resumption.mjs')] : [])]
  return start('node', [...flags, join(dir, 'dist/src/cli.js'), 'start', '-c', casgateConf(scenario.mode, workers)], join(work, `${proxy}-${scenario.mode}.log`))
}

const results = []
for (const resumption of resumptions) {
  const origin = start(nginxBin, ['-c', originConf(resumption)], join(work, 'origin/stdout.log'))
  await waitForPort(ORIGIN_HTTP)
  try {
    for (const scenario of scenarios) {
      const samples = Object.fromEntries(proxies.map((p) => [p, []]))
      for (let round = 0; round < rounds; round++) {
        // Each proxy goes first in turn.
        const order = proxies.map((_, i) => proxies[(i + round) % proxies.length])
        for (const proxy of order) {
          const child = startProxy(proxy, scenario, resumption)
          try {
            await waitForPort(PROXY_PORT)
            // A browser returns casgate's OWA affinity cookie after its first response: so does wrk
            // (a cookie of the same size goes to nginx), or every request would be a new browser.
            const cookie = proxy !== 'nginx' && scenario.mode !== 'passthrough' ? await affinityCookie(scenario.path) : `CasgateAffinity-cas=${'x'.repeat(33)}`
            const headers = [...(scenario.headers ?? []), `Cookie: ${cookie}`]
            wrk(scenario.path, headers) // warm-up run, discarded
            // nginx's master and worker, casgate's process (or its cluster primary and workers).
            const pids = [child.pid, ...childPids(child.pid)]
            const cpuBefore = cpuSecondsOf(pids)
            const result = wrk(scenario.path, headers)
            // CPU per request: the efficiency figure, independent of how the 2 cores are shared with wrk and the origin.
            result.cpuUs = (cpuSecondsOf(pids) - cpuBefore) * 1e6 / result.requests
            // A run with error answers measures the errors, not the proxy: refuse it.
            if (result.errors > 0) throw new Error(`${proxy} answered ${result.errors} non-2xx responses in ${scenario.name}; see ${work}`)
            result.rssMb = rssOf(pids)
            samples[proxy].push(result)
            process.stderr.write(`${scenario.name} resumption ${resumption} ${proxy} round ${round + 1}: ${result.rps.toFixed(0)} req/s p50 ${result.p50}ms p99 ${result.p99}ms rss ${result.rssMb.toFixed(0)} MB cpu ${result.cpuUs.toFixed(1)} µs/request${result.socketErrors ? ` socket errors ${result.socketErrors}` : ''}\n`)
          } finally {
            await stop(child)
            await sleep(300)
          }
        }
      }
      // CPU per request: the mean of the rounds (its spread is in the log); req/s: the best round.
      const summary = (list) => ({
        ...list.reduce((a, b) => (b.rps > a.rps ? b : a)),
        cpuUs: list.reduce((sum, r) => sum + r.cpuUs, 0) / list.length,
        cpuMin: Math.min(...list.map((r) => r.cpuUs)),
        cpuMax: Math.max(...list.map((r) => r.cpuUs))
      })
      results.push({ scenario, resumption, ...Object.fromEntries(proxies.map((p) => [p, summary(samples[p])])) })
    }
  } finally {
    await stop(origin)
  }
}

const fmt = (n, digits = 0) => Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
const casgateNames = Object.keys(casgates)
const lines = [
  `casgate vs ${spawnSync(nginxBin, ['-v']).stderr.toString().trim().replace('nginx version: ', '')}` +
    (values.b ? ` (casgate: ${here}${values['a-node-options'] ? ` ${values['a-node-options']}` : ''}; casgate-b: ${casgates['casgate-b'].dir}${values['b-node-options'] ? ` ${values['b-node-options']}` : ''})` : ''),
  `wrk -t1 -c${connections} -d${duration}s over TLS on loopback, ${rounds} alternating rounds (CPU: mean of the rounds; req/s: best), node ${process.version}, ${new Date().toISOString().slice(0, 10)}`,
  'resumption: TLS session resumption at the proxy that terminates TLS and at the origin (on: tickets and, for nginx, a session cache; off: neither)',
  '',
  `| scenario | resumption | nginx CPU µs/req | ${casgateNames.map((c) => `${c} CPU µs/req | ×nginx`).join(' | ')} | target | nginx req/s | ${casgateNames.map((c) => `${c} req/s`).join(' | ')} | nginx / ${casgateNames.join(' / ')} p99 ms | nginx / ${casgateNames.join(' / ')} RSS MB |`,
  `| --- | --- | ---: | ${casgateNames.map(() => '---: | ---:').join(' | ')} | ---: | ---: | ${casgateNames.map(() => '---:').join(' | ')} | ---: | ---: |`,
  ...results.map((r) =>
    `| ${r.scenario.label} | ${r.resumption} | ${fmt(r.nginx.cpuUs, 1)} | ${casgateNames.map((c) => `${fmt(r[c].cpuUs, 1)} (${fmt(r[c].cpuMin)}–${fmt(r[c].cpuMax)}) | **${fmt(r[c].cpuUs / r.nginx.cpuUs, 2)}×**`).join(' | ')} | ${r.scenario.target ? `≤ ${r.scenario.target}×` : '—'} | ${fmt(r.nginx.rps)} | ${casgateNames.map((c) => fmt(r[c].rps)).join(' | ')} | ${[r.nginx, ...casgateNames.map((c) => r[c])].map((x) => fmt(x.p99, 2)).join(' / ')} | ${[r.nginx, ...casgateNames.map((c) => r[c])].map((x) => fmt(x.rssMb)).join(' / ')} |`)
]
console.log(lines.join('\n'))
writeFileSync('bench/results/latest.md', lines.join('\n') + '\n')
