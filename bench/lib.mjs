// Shared by the benchmarks: a work directory, a lab certificate, an nginx origin, and process helpers.
import { spawn, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { createLabPki } from '../dist/src/certificates/lab-ca.js'

export const work = resolve('bench/results/work')
// BENCH_PORT_OFFSET moves every port, so that two benches on one box (two worktrees) do not meet.
const offset = Number(process.env.BENCH_PORT_OFFSET ?? 0)
export const ORIGIN_HTTP = 18080 + offset
export const ORIGIN_HTTPS = 18443 + offset
export const PROXY_PORT = 19443 + offset
export const nginxBin = ['/usr/sbin/nginx', 'nginx'].find((bin) => { try { execFileSync(bin, ['-v'], { stdio: 'ignore' }); return true } catch { return false } })

/** ADMIN_TOKEN is the benches' admin token, written to <work>/admin-token by prepareWork. */
export const ADMIN_TOKEN = randomBytes(24).toString('hex')

/** adminStatus reads casgate's GET /status on the admin listener at `port`. */
export async function adminStatus (port) {
  return (await fetch(`http://127.0.0.1:${port}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()
}

/** prepareWork makes a fresh work directory with a lab certificate and the origin's files. */
export async function prepareWork (files = {}) {
  rmSync(work, { recursive: true, force: true })
  mkdirSync(join(work, 'www/owa'), { recursive: true })
  // The origin and the proxies serve the same leaf (as Extended Protection wants).
  const pki = await createLabPki(['mail.bench.test', 'localhost', '127.0.0.1'])
  writeFileSync(join(work, 'mail.crt'), pki.server.certPem + pki.intermediate.certPem)
  writeFileSync(join(work, 'mail.key'), pki.server.keyPem)
  writeFileSync(join(work, 'root.pem'), pki.root.certPem)
  // The admin listener wants a token (admin.tokenFile: admin-token in the benches' configurations).
  writeFileSync(join(work, 'admin-token'), ADMIN_TOKEN, { mode: 0o600 })
  writeFileSync(join(work, 'www/owa/64k'), Buffer.alloc(64 * 1024, 'x'))
  writeFileSync(join(work, 'www/owa/small'), 'ok\n'.repeat(30))
  // Managed Availability's health pages, or casgate's monitors take the origin out.
  for (const vdir of ['owa', 'ecp', 'Microsoft-Server-ActiveSync', 'EWS', 'autodiscover', 'mapi', 'rpc', 'oab', 'powershell']) {
    mkdirSync(join(work, 'www', vdir), { recursive: true })
    writeFileSync(join(work, 'www', vdir, 'healthcheck.htm'), '200 OK<br/>ORIGIN')
  }
  for (const [name, size] of Object.entries(files)) {
    execFileSync('truncate', ['-s', String(size), join(work, 'www/owa', name)])
  }
}

/** nginxConf writes an nginx.conf of one worker: `body` goes in the http block, `main` before it (load_module, stream). */
export function nginxConf (name, body, main = '') {
  const dir = join(work, name)
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'nginx.conf'), `${main}
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log ${dir}/access.log;
  keepalive_requests 100000;
  ${body}
}`)
  return join(dir, 'nginx.conf')
}

/**
 * nginxResumption is how an nginx that terminates TLS treats session resumption: 'on' resumes
 * by ticket and by session ID (as Node's TLS server resumes by ticket), 'off' refuses both.
 * nginx 1.22's defaults (tickets on, no session cache) resume by ticket.
 */
export function nginxResumption (resumption = 'on') {
  return resumption === 'off'
    ? 'ssl_session_cache off; ssl_session_tickets off;'
    : 'ssl_session_cache shared:SSL:10m; ssl_session_tickets on;'
}

/** originConf is an nginx origin (1 worker) serving work/www over HTTP and HTTPS. */
export function originConf (resumption = 'on') {
  return nginxConf('origin', `
  server {
    listen 127.0.0.1:${ORIGIN_HTTP};
    listen 127.0.0.1:${ORIGIN_HTTPS} ssl;
    ssl_certificate ${work}/mail.crt;
    ssl_certificate_key ${work}/mail.key;
    ${nginxResumption(resumption)}
    access_log off;
    root ${work}/www;
  }`)
}

export async function waitForPort (port) {
  for (let i = 0; i < 100; i++) {
    try {
      execFileSync('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`], { stdio: 'ignore' })
      return
    } catch { await sleep(100) }
  }
  throw new Error(`port ${port} did not open`)
}

export function start (command, args, logFile) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const chunks = []
  child.stdout.on('data', (c) => chunks.push(c))
  child.stderr.on('data', (c) => chunks.push(c))
  child.on('exit', () => writeFileSync(logFile, Buffer.concat(chunks)))
  return child
}

export async function stop (child) {
  if (child.exitCode !== null) return
  child.kill('SIGTERM')
  await Promise.race([new Promise((resolve) => child.once('exit', resolve)), sleep(5000)])
  if (child.exitCode === null) child.kill('SIGKILL')
}

export function rssOf (pids) {
  let kb = 0
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8')
      kb += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
    } catch {}
  }
  return kb / 1024
}

export function childPids (pid) {
  try { return execFileSync('pgrep', ['-P', String(pid)]).toString().trim().split('\n').filter(Boolean).map(Number) } catch { return [] }
}

/** cpuSecondsOf sums user + system CPU time of the processes (clock ticks are 1/100 s on Linux). */
export function cpuSecondsOf (pids) {
  let ticks = 0
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {}
  }
  return ticks / 100
}

export function parseWrk (text) {
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? NaN)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN)
  const toMs = (v, unit) => Number(v) * ({ us: 0.001, ms: 1, s: 1000 }[unit] ?? NaN)
  const p = (q) => { const m = new RegExp(`\\s${q}%\\s+([\\d.]+)(us|ms|s)`).exec(text); return m ? toMs(m[1], m[2]) : NaN }
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? '0'
  const socketErrors = /Socket errors: (.*)/.exec(text)?.[1]
  return { rps, requests, p50: p(50), p99: p(99), errors: Number(errors), socketErrors }
}

/**
 * casgateConf writes the casgate configuration the benchmarks compare with nginx (one pool on the
 * origin), the Exchange profile's defaults otherwise: OWA cookie affinity, health monitors, the
 * access log at info (passthrough: one line per connection).
 */
export function casgateConf (mode, workers = 1) {
  const file = join(work, `casgate-${mode}-${workers}.yaml`)
  if (mode === 'passthrough') {
    writeFileSync(file, `
listen: { host: 127.0.0.1, port: ${PROXY_PORT}, workers: ${workers} }
hosts:
  - names: [mail.bench.test]
    mode: passthrough
    pool: origin
pools:
  origin: { servers: [https://127.0.0.1:${ORIGIN_HTTPS}], ca: root.pem, serverName: mail.bench.test }
`)
    return file
  }
  writeFileSync(file, `
listen: { host: 127.0.0.1, port: ${PROXY_PORT}, workers: ${workers} }
hosts:
  - names: [mail.bench.test, localhost]
    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }
    mode: ${mode}
    extendedProtection: ${mode === 'reencrypt'}
pools:
  cas:
    servers: [${mode === 'offload' ? `http://127.0.0.1:${ORIGIN_HTTP}` : `https://127.0.0.1:${ORIGIN_HTTPS}`}]
    ${mode === 'reencrypt' ? 'ca: root.pem\n    serverName: mail.bench.test' : ''}
`)
  return file
}

/**
 * haproxyPassthroughConf writes the HAProxy configuration the benches compare passthrough with:
 * mode tcp, the ClientHello's server name picks the backend (as casgate does), one thread.
 */
export function haproxyPassthroughConf (name, backendPort, maxconn = 8000) {
  const file = join(work, `${name}.cfg`)
  writeFileSync(file, `
global
  nbthread 1
  maxconn ${maxconn}
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend fe
  bind 127.0.0.1:${PROXY_PORT}
  maxconn ${maxconn}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend be if { req_ssl_sni -i mail.bench.test }
  default_backend be
backend be
  server origin 127.0.0.1:${backendPort}
`)
  return file
}

/**
 * nginxProxyLocation is the nginx location the benches compare offload and re-encrypt with:
 * upstream keep-alive, the forwarding headers, the backend verified against the lab root.
 * `extra` adds directives (a resumption setting, a long read timeout for held requests).
 */
export function nginxProxyServer (mode, plainPort, tlsPort, extra = '', locationExtra = '') {
  return `
  upstream origin_plain { server 127.0.0.1:${plainPort}; keepalive 64; }
  upstream origin_tls { server 127.0.0.1:${tlsPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${PROXY_PORT} ssl;
    ssl_certificate ${work}/mail.crt;
    ssl_certificate_key ${work}/mail.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ${extra}
    location / {
      proxy_pass ${mode === 'offload' ? 'http://origin_plain' : 'https://origin_tls'};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_ssl_server_name on;
      proxy_ssl_name mail.bench.test;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate ${work}/root.pem;
      ${locationExtra}
    }
  }`
}

/** affinityCookie asks casgate once, as a browser's first request would, for its affinity cookie. */
export async function affinityCookie (path) {
  const { request } = await import('node:https')
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port: PROXY_PORT, path, rejectUnauthorized: false, headers: { host: 'mail.bench.test' } }, (res) => {
      res.resume()
      const cookie = [res.headers['set-cookie'] ?? []].flat().find((c) => c.startsWith('CasgateAffinity-'))
      resolve(cookie ? cookie.split(';')[0] : 'none=1')
    }).on('error', reject).end()
  })
}
