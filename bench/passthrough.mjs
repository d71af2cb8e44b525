// Passthrough: casgate (SNI peek, then a byte pipe) against HAProxy `mode tcp` with an SNI rule
// (1 thread) and a direct connection to the origin, alternating. Two figures: throughput of a
// large HTTPS download, and the rate of new connections (one TLS handshake, at the origin, per
// request). Prints the ratios.
//
//   node bench/passthrough.mjs [--size-mb 512] [--duration 10] [--rounds 2]
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { haproxyPassthroughConf, nginxBin, ORIGIN_HTTPS, originConf, parseWrk, prepareWork, PROXY_PORT, rssOf, start, stop, waitForPort, work } from './lib.mjs'

const { values } = parseArgs({ options: { 'size-mb': { type: 'string', default: '512' }, duration: { type: 'string', default: '10' }, rounds: { type: 'string', default: '2' } } })
const sizeMb = Number(values['size-mb'])
const duration = Number(values.duration)
const rounds = Number(values.rounds)
await prepareWork({ large: sizeMb * 1024 * 1024 })

function haproxyConf () {
  return haproxyPassthroughConf('haproxy', ORIGIN_HTTPS)
}

function casgateConf () {
  const file = join(work, 'casgate-passthrough.yaml')
  writeFileSync(file, `
listen: { host: 127.0.0.1, port: ${PROXY_PORT} }
hosts:
  - names: [mail.bench.test]
    mode: passthrough
    pool: origin
pools:
  # The health monitors verify the origin's certificate, or they take it out.
  origin: { servers: [https://127.0.0.1:${ORIGIN_HTTPS}], ca: root.pem, serverName: mail.bench.test }
log: { level: warn }
`)
  return file
}

const paths = {
  direct: { port: ORIGIN_HTTPS, start: () => undefined },
  haproxy: { port: PROXY_PORT, start: () => start('haproxy', ['-f', haproxyConf()], join(work, 'haproxy.log')) },
  casgate: { port: PROXY_PORT, start: () => start('node', ['dist/src/cli.js', 'start', '-c', casgateConf()], join(work, 'casgate-passthrough.log')) }
}

function download (port) {
  const out = execFileSync('curl', ['-sS', '-o', '/dev/null', '-w', '%{speed_download}', '--cacert', join(work, 'root.pem'),
    '--resolve', `mail.bench.test:${port}:127.0.0.1`, `https://mail.bench.test:${port}/owa/large`], { timeout: 300_000 }).toString()
  return Number(out) / (1024 * 1024)
}

function connectionRate (port) {
  return parseWrk(execFileSync('wrk', ['-t', '1', '-c', '32', '-d', `${duration}s`, '--latency', '-H', 'Connection: close', '-H', 'Host: mail.bench.test',
    `https://127.0.0.1:${port}/owa/small`], { timeout: (duration + 30) * 1000 }).toString())
}

const origin = start(nginxBin, ['-c', originConf()], join(work, 'origin/stdout.log'))
await waitForPort(ORIGIN_HTTPS)
const best = { direct: { mbps: 0, cps: 0, rss: 0 }, haproxy: { mbps: 0, cps: 0, rss: 0 }, casgate: { mbps: 0, cps: 0, rss: 0 } }
try {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? ['direct', 'haproxy', 'casgate'] : ['casgate', 'haproxy', 'direct']
    for (const name of order) {
      const path = paths[name]
      const child = path.start()
      try {
        await waitForPort(path.port)
        download(path.port) // warm-up
        const mbps = download(path.port)
        const rate = connectionRate(path.port)
        const rss = child ? rssOf([child.pid]) : 0
        process.stderr.write(`${name} round ${round + 1}: ${mbps.toFixed(0)} MB/s, ${rate.rps.toFixed(0)} connections/s${rate.socketErrors ? ` (socket errors ${rate.socketErrors})` : ''}, rss ${rss.toFixed(0)} MB\n`)
        best[name].mbps = Math.max(best[name].mbps, mbps)
        best[name].cps = Math.max(best[name].cps, rate.rps)
        best[name].rss = Math.max(best[name].rss, rss)
      } finally {
        if (child) await stop(child)
        await sleep(300)
      }
    }
  }
} finally {
  await stop(origin)
}

const lines = [
  `passthrough: casgate vs HAProxy mode tcp (1 thread) vs direct; ${sizeMb} MB download (curl), new connection per request (wrk -c32 -d${duration}s); best of ${rounds}`,
  '',
  '| path | download MB/s | vs direct | new connections/s | vs HAProxy | RSS MB |',
  '| --- | ---: | ---: | ---: | ---: | ---: |',
  ...['direct', 'haproxy', 'casgate'].map((name) => `| ${name} | ${best[name].mbps.toFixed(0)} | ${(best[name].mbps / best.direct.mbps).toFixed(2)}× | ${best[name].cps.toFixed(0)} | ${name === 'direct' ? '—' : (best[name].cps / best.haproxy.cps).toFixed(2) + '×'} | ${name === 'direct' ? '—' : best[name].rss.toFixed(0)} |`)
]
console.log(lines.join('\n'))
writeFileSync('bench/results/passthrough.md', lines.join('\n') + '\n')
