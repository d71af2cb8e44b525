// casgate against nginx, side by side: one nginx origin (1 worker), then for each scenario
// nginx as the proxy (1 worker) and casgate (one Node process) in front of that origin,
// alternating runs, driven by wrk over TLS on loopback. Prints req/s, p50/p99, RSS and ratios.
//
//   node bench/run.mjs [--duration 10] [--rounds 2] [--connections 32] [--only small-offload,...]
import { spawnSync, execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { casgateConf, childPids, cpuSecondsOf, nginxBin, nginxConf, ORIGIN_HTTP, ORIGIN_HTTPS, originConf, parseWrk, prepareWork, PROXY_PORT, rssOf, start, stop, waitForPort, work } from './lib.mjs'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    only: { type: 'string' }
  }
})
const duration = Number(values.duration)
const rounds = Number(values.rounds)
const connections = Number(values.connections)
await prepareWork()

function proxyConf (mode) {
  const upstream = mode === 'offload' ? `http://127.0.0.1:${ORIGIN_HTTP}` : 'https://origin_tls'
  return nginxConf(`nginx-${mode}`, `
  upstream origin_plain { server 127.0.0.1:${ORIGIN_HTTP}; keepalive 64; }
  upstream origin_tls { server 127.0.0.1:${ORIGIN_HTTPS}; keepalive 64; }
  server {
    listen 127.0.0.1:${PROXY_PORT} ssl;
    ssl_certificate ${work}/mail.crt;
    ssl_certificate_key ${work}/mail.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass ${mode === 'offload' ? 'http://origin_plain' : upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_ssl_server_name on;
      proxy_ssl_name mail.bench.test;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate ${work}/root.pem;
      proxy_ssl_session_reuse on;
      proxy_buffering on;
    }
  }`)
}

function wrk (path, extraHeaders = []) {
  const args = ['-t', '1', '-c', String(connections), '-d', `${duration}s`, '--latency', '--timeout', '5s',
    '-H', 'Host: mail.bench.test', ...extraHeaders.flatMap((h) => ['-H', h]), `https://127.0.0.1:${PROXY_PORT}${path}`]
  return parseWrk(execFileSync('wrk', args, { timeout: (duration + 30) * 1000 }).toString())
}

/** affinityCookie asks casgate once, as a browser's first request would, for its affinity cookie. */
async function affinityCookie (path) {
  const { request } = await import('node:https')
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port: PROXY_PORT, path, rejectUnauthorized: false, headers: { host: 'mail.bench.test' } }, (res) => {
      res.resume()
      const cookie = [res.headers['set-cookie'] ?? []].flat().find((c) => c.startsWith('CasgateAffinity-'))
      resolve(cookie ? cookie.split(';')[0] : 'none=1')
    }).on('error', reject).end()
  })
}

const scenarios = [
  { name: 'small-offload', mode: 'offload', path: '/owa/small', label: 'small responses, keep-alive, offload' },
  { name: 'small-reencrypt', mode: 'reencrypt', path: '/owa/small', label: 'small responses, keep-alive, re-encrypt' },
  { name: '64k-offload', mode: 'offload', path: '/owa/64k', label: '64 KiB responses, keep-alive, offload' },
  { name: '64k-reencrypt', mode: 'reencrypt', path: '/owa/64k', label: '64 KiB responses, keep-alive, re-encrypt' },
  { name: 'handshake-offload', mode: 'offload', path: '/owa/small', headers: ['Connection: close'], label: 'new TLS handshake per request, offload' }
].filter((s) => !values.only || values.only.split(',').includes(s.name))

const origin = start(nginxBin, ['-c', originConf()], join(work, 'origin/stdout.log'))
await waitForPort(ORIGIN_HTTP)
const results = []
try {
  for (const scenario of scenarios) {
    const samples = { nginx: [], casgate: [] }
    for (let round = 0; round < rounds; round++) {
      for (const proxy of round % 2 === 0 ? ['nginx', 'casgate'] : ['casgate', 'nginx']) {
        const child = proxy === 'nginx'
          ? start(nginxBin, ['-c', proxyConf(scenario.mode)], join(work, `nginx-${scenario.mode}/stdout.log`))
          : start('node', ['dist/src/cli.js', 'start', '-c', casgateConf(scenario.mode)], join(work, `casgate-${scenario.mode}.log`))
        try {
          await waitForPort(PROXY_PORT)
          // A browser returns casgate's OWA affinity cookie after its first response: so does wrk
          // (a cookie of the same size goes to nginx), or every request would be a new browser.
          const headers = [...(scenario.headers ?? []), `Cookie: ${proxy === 'casgate' ? await affinityCookie(scenario.path) : `CasgateAffinity-cas=${'x'.repeat(33)}`}`]
          wrk(scenario.path, headers) // warm-up run, discarded
          const pids = proxy === 'nginx' ? [child.pid, ...childPids(child.pid)] : [child.pid]
          const cpuBefore = cpuSecondsOf(pids)
          const result = wrk(scenario.path, headers)
          // CPU per request: the efficiency figure, independent of how the 2 cores are shared with wrk and the origin.
          result.cpuUs = (cpuSecondsOf(pids) - cpuBefore) * 1e6 / result.requests
          // A run with error answers measures the errors, not the proxy: refuse it.
          if (result.errors > 0) throw new Error(`${proxy} answered ${result.errors} non-2xx responses in ${scenario.name}; see ${work}`)
          result.rssMb = rssOf(pids)
          samples[proxy].push(result)
          process.stderr.write(`${scenario.name} ${proxy} round ${round + 1}: ${result.rps.toFixed(0)} req/s p50 ${result.p50}ms p99 ${result.p99}ms rss ${result.rssMb.toFixed(0)} MB cpu ${result.cpuUs.toFixed(0)} µs/request${result.errors ? ` non-2xx ${result.errors}` : ''}${result.socketErrors ? ` socket errors ${result.socketErrors}` : ''}\n`)
        } finally {
          await stop(child)
          await sleep(300)
        }
      }
    }
    const best = (list) => list.reduce((a, b) => (b.rps > a.rps ? b : a))
    results.push({ scenario, nginx: best(samples.nginx), casgate: best(samples.casgate) })
  }
} finally {
  await stop(origin)
}

const fmt = (n, digits = 0) => Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
const lines = [
  `casgate vs ${spawnSync(nginxBin, ['-v']).stderr.toString().trim().replace('nginx version: ', '')}`,
  `wrk -t1 -c${connections} -d${duration}s over TLS on loopback, best of ${rounds} alternating runs, node ${process.version}, ${new Date().toISOString().slice(0, 10)}`,
  '',
  '| scenario | nginx req/s | casgate req/s | ratio | nginx / casgate CPU µs per request | nginx p50/p99 ms | casgate p50/p99 ms | nginx RSS MB | casgate RSS MB |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...results.map(({ scenario, nginx, casgate }) =>
    `| ${scenario.label} | ${fmt(nginx.rps)} | ${fmt(casgate.rps)} | **${fmt(casgate.rps / nginx.rps, 2)}×** | ${fmt(nginx.cpuUs)} / ${fmt(casgate.cpuUs)} | ${fmt(nginx.p50, 2)} / ${fmt(nginx.p99, 2)} | ${fmt(casgate.p50, 2)} / ${fmt(casgate.p99, 2)} | ${fmt(nginx.rssMb)} | ${fmt(casgate.rssMb)} |`)
]
console.log(lines.join('\n'))
writeFileSync('bench/results/latest.md', lines.join('\n') + '\n')
