// What shared state on Valkey/Redis (state.redis, issue 16) costs per request. One run starts a
// real redis-server (Debian's, loopback, no persistence), the nginx origin, then, alternating
// which goes first, casgate without state.redis, casgate with it and (part 1) nginx, and drives
// each with wrk over TLS:
//
//   1. requests that need no shared state: anonymous small GET with casgate's OWA cookie (run.mjs's
//      small case), and ActiveSync GETs with an already cached Basic logon and an existing affinity
//      key (one user throughout). casgate's CPU µs per request with and without the link (should
//      be ~1.0×), and against nginx;
//   2. requests that each record one piece of shared state: a new ActiveSync User= every request
//      (a new affinity placement), Basic logons Exchange refuses (/mapi 401: a lockout failure,
//      no scrypt), and wrong Basic passwords checked by casgate (users file: scrypt, a lockout
//      failure). The difference with − without is the cost of one record in casgate; the CPU
//      redis-server used per record (its /proc, records counted by its XADD calls) is added;
//   3. casgate's RSS idle, with and without the link, both started side by side.
//
//   node bench/shared-state.mjs [--duration 6] [--rounds 2] [--connections 32]
//     [--scrypt-connections 4] [--idle 30] [--only anon,basic-cached,new-keys,mapi-401,basic-failures,rss]
//
// Every wrk run is bounded by --duration; redis-server and every proxy are stopped at the end.
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { hashPassword } from '../dist/src/auth/password-hash.js'
import { adminStatus, affinityCookie, childPids, cpuSecondsOf, nginxBin, nginxConf, nginxProxyServer, nginxResumption, ORIGIN_HTTP, ORIGIN_HTTPS, parseWrk, prepareWork, PROXY_PORT, rssOf, start, stop, waitForPort, work } from './lib.mjs'

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '6' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    'scrypt-connections': { type: 'string', default: '4' },
    idle: { type: 'string', default: '30' },
    only: { type: 'string' }
  }
})
const duration = Number(values.duration)
const rounds = Number(values.rounds)
const connections = Number(values.connections)
const idleSeconds = Number(values.idle)
const wanted = (name) => !values.only || values.only.split(',').includes(name)
const ADMIN_PORT = PROXY_PORT + 7
const PASSWORD = 'Correct-Horse-1'

await prepareWork()
// Where bench/mem-probe.mjs (part 3) writes its figures: the children inherit it.
process.env.MEM_PROBE_DIR = work
mkdirSync(join(work, 'www/EWS'), { recursive: true })
writeFileSync(join(work, 'www/EWS/small'), 'ok\n'.repeat(30))
// scrypt at the lowest cost the users file accepts (ln=14), as the tests use.
writeFileSync(join(work, 'users.txt'), `jdoe:${await hashPassword(PASSWORD, 14)}\n`)
writeFileSync(join(work, 'session-secret'), 'bench-session-secret-'.repeat(3) + '\n', { mode: 0o600 })
writeFileSync(join(work, 'affinity-secret'), 'bench-affinity-secret-'.repeat(3) + '\n', { mode: 0o600 })

// redis-server as the tests start it: loopback, a free port, no persistence.
const redisPort = await new Promise((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)) })
})
mkdirSync(join(work, 'redis'), { recursive: true })
const redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', join(work, 'redis'), '--loglevel', 'warning'], { stdio: 'ignore' })
await waitForPort(redisPort)
// The bench's own connection, for INFO: it counts the records that reached Redis (XADD calls).
const admin = new Redis({ host: '127.0.0.1', port: redisPort, maxRetriesPerRequest: 1 })
admin.on('error', () => {})
const redisVersion = (await admin.info('server')).match(/redis_version:(\S+)/)?.[1]
/**
 * commandCounts says how many records reached Redis so far (one XADD each, alone or in a MULTI)
 * and how many commands the link sent in all (XADD, MULTI/EXEC, XREAD…; INFO, the bench's own, left out).
 */
const commandCounts = async () => {
  const stats = await admin.info('commandstats')
  const calls = (name) => Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0)
  const all = [...stats.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].filter(([, name]) => name !== 'info').reduce((sum, [, , n]) => sum + Number(n), 0)
  return { records: calls('xadd'), commands: all }
}

// The origin: nginx's files, plus an ActiveSync endpoint (200) and a /mapi that refuses every logon (401).
const origin = start(nginxBin, ['-c', nginxConf('origin', `
  server {
    listen 127.0.0.1:${ORIGIN_HTTP};
    listen 127.0.0.1:${ORIGIN_HTTPS} ssl;
    ssl_certificate ${work}/mail.crt;
    ssl_certificate_key ${work}/mail.key;
    ${nginxResumption('on')}
    access_log off;
    root ${work}/www;
    location = /Microsoft-Server-ActiveSync { default_type text/plain; return 200 "ok\\n"; }
    location /mapi/emsmdb/ { return 401; }
  }`)], join(work, 'origin/stdout.log'))
await waitForPort(ORIGIN_HTTP)

let prefixes = 0
/**
 * casgateConfig writes an offload configuration (run.mjs's, with an admin listener and the
 * affinity secret from a file): `preauth` adds the users file (lockout thresholds out of reach,
 * so that nothing locks), `shared` adds state.redis under a key prefix of its own (a fresh stream).
 */
function casgateConfig (name, { preauth, shared, port = PROXY_PORT, adminPort = ADMIN_PORT }) {
  const file = join(work, `casgate-${name}.yaml`)
  writeFileSync(file, `
listen: { host: 127.0.0.1, port: ${port} }
hosts:
  - names: [mail.bench.test, localhost]
    certificate: { cert: mail.crt, key: mail.key, ca: root.pem }
    mode: offload
    extendedProtection: false
pools:
  cas:
    servers: [http://127.0.0.1:${ORIGIN_HTTP}]
admin: { host: 127.0.0.1, port: ${adminPort}, tokenFile: admin-token }
affinity: { secretFile: affinity-secret }
${preauth
    ? `preauth:
  usersFile: users.txt
  secretFile: session-secret
  lockout: { userThreshold: 1000000000, addressThreshold: 1000000000 }
`
    : ''}${shared ? `state: { redis: { url: 'redis://127.0.0.1:${redisPort}/0', keyPrefix: 'bench${++prefixes}:', timeoutMs: 1000 } }\n` : ''}`)
  return file
}

// wrk's request() for part 2: a new identity every request (a tag per run keeps runs apart).
const lua = join(work, 'new-identity.lua')
writeFileSync(lua, `
local tag, mode, n = 'x', 'sync', 0
local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function base64 (data)
  return ((data:gsub('.', function (x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function (x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
function init (args) tag = args[1] or tag; mode = args[2] or mode end
function request ()
  n = n + 1
  local user = tag .. 'u' .. n
  if mode == 'sync' then
    return wrk.format('GET', '/Microsoft-Server-ActiveSync?Cmd=Sync&User=' .. user .. '&DeviceId=D' .. n .. '&DeviceType=iPhone', { Host = 'mail.bench.test' })
  end
  local path = mode == 'mapi' and '/mapi/emsmdb/' or '/EWS/small'
  return wrk.format('GET', path, { Host = 'mail.bench.test', Authorization = 'Basic ' .. base64(user .. ':wrong-' .. n) })
end
`)

const basicJdoe = `Authorization: Basic ${Buffer.from(`jdoe:${PASSWORD}`).toString('base64')}`
const SYNC_JDOE = '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=D1&DeviceType=iPhone'
const scenarios = [
  { name: 'anon', part: 1, label: 'anonymous small GET, OWA cookie (run.mjs small offload)', path: '/owa/small', cookie: true, nginx: true },
  { name: 'basic-cached', part: 1, label: 'ActiveSync GET, cached Basic, existing affinity key', path: SYNC_JDOE, headers: [basicJdoe], preauth: true, nginx: true },
  { name: 'new-keys', part: 2, label: 'ActiveSync GET, new User= each (an affinity placement)', script: 'sync', records: 'assignment' },
  { name: 'mapi-401', part: 2, label: '/mapi Basic refused by Exchange (401: a lockout failure)', script: 'mapi', preauth: true, status: 401, records: 'lockout failure' },
  { name: 'basic-failures', part: 2, label: 'EWS wrong Basic password, casgate checks (scrypt, a lockout failure)', script: 'basic', preauth: true, status: 401, records: 'lockout failure', scrypt: true }
].filter((s) => wanted(s.name))

function wrk (scenario, tag, seconds) {
  const conns = scenario.scrypt ? Number(values['scrypt-connections']) : connections
  const args = ['-t', '1', '-c', String(conns), '-d', `${seconds}s`, '--latency', '--timeout', '5s', '-H', 'Host: mail.bench.test',
    ...(scenario.headers ?? []).flatMap((h) => ['-H', h]),
    ...(scenario.script ? ['-s', lua] : []),
    `https://127.0.0.1:${PROXY_PORT}${scenario.script ? '/' : scenario.path}`,
    ...(scenario.script ? ['--', tag, scenario.script] : [])]
  return parseWrk(execFileSync('wrk', args, { timeout: (seconds + 30) * 1000 }).toString())
}

function startProxy (proxy, scenario) {
  if (proxy === 'nginx') {
    return start(nginxBin, ['-c', nginxConf('nginx-proxy', nginxProxyServer('offload', ORIGIN_HTTP, ORIGIN_HTTPS, nginxResumption('on'), 'proxy_buffering on;'))], join(work, 'nginx-proxy/stdout.log'))
  }
  const file = casgateConfig(`${scenario.name}-${proxy}`, { preauth: scenario.preauth, shared: proxy === 'casgate+redis' })
  return start('node', ['dist/src/cli.js', 'start', '-c', file], join(work, `${proxy}-${scenario.name}.log`))
}

const results = []
const idle = []
let runs = 0
try {
  for (const scenario of scenarios) {
    const proxies = [...(scenario.nginx ? ['nginx'] : []), 'casgate', 'casgate+redis']
    const samples = Object.fromEntries(proxies.map((p) => [p, []]))
    for (let round = 0; round < rounds; round++) {
      // Reversed every other round: each goes first, and casgate with and without the link swap places.
      const order = round % 2 === 0 ? proxies : [...proxies].reverse()
      for (const proxy of order) {
        const child = startProxy(proxy, scenario)
        try {
          await waitForPort(PROXY_PORT)
          if (proxy === 'casgate+redis') {
            // Measure the link at work, not a casgate counting locally.
            const state = (await adminStatus(ADMIN_PORT)).sharedState?.state
            if (state !== 'shared') throw new Error(`casgate+redis: shared state is ${state}, not shared; see ${work}`)
          }
          const headers = scenario.cookie ? [`Cookie: ${proxy === 'nginx' ? `CasgateAffinity-cas=${'x'.repeat(33)}` : await affinityCookie(scenario.path)}`] : []
          const run = { ...scenario, headers: [...(scenario.headers ?? []), ...headers] }
          wrk(run, `w${++runs}x`, Math.min(3, duration)) // warm-up (and the Basic cache filled), discarded
          await sleep(300)
          const pids = [child.pid, ...childPids(child.pid)]
          const cpuBefore = cpuSecondsOf(pids)
          const redisBefore = cpuSecondsOf([redis.pid])
          const countsBefore = await commandCounts()
          const result = wrk(run, `m${++runs}x`, duration)
          // What the link queued in the last turns reaches Redis (the same pause without it).
          await sleep(300)
          result.cpuUs = (cpuSecondsOf(pids) - cpuBefore) * 1e6 / result.requests
          result.redisUs = (cpuSecondsOf([redis.pid]) - redisBefore) * 1e6 / result.requests
          const countsAfter = await commandCounts()
          result.records = countsAfter.records - countsBefore.records
          result.commands = countsAfter.commands - countsBefore.commands
          const expected = scenario.status === 401 ? result.requests : 0
          if (result.errors !== expected || result.socketErrors) throw new Error(`${proxy} in ${scenario.name}: ${result.errors} non-2xx/3xx of ${result.requests} (expected ${expected})${result.socketErrors ? `, socket errors ${result.socketErrors}` : ''}; see ${work}`)
          result.rssMb = rssOf(pids)
          samples[proxy].push(result)
          process.stderr.write(`${scenario.name} ${proxy} round ${round + 1}: ${result.requests} requests, ${result.rps.toFixed(0)} req/s, cpu ${result.cpuUs.toFixed(1)} µs/request, redis-server ${result.redisUs.toFixed(2)} µs/request, ${result.records} records in ${result.commands} Redis commands, rss ${result.rssMb.toFixed(0)} MB, load ${loadAverage()}\n`)
        } finally {
          await stop(child)
          await sleep(300)
        }
      }
    }
    const mean = (list, key) => list.reduce((sum, r) => sum + r[key], 0) / list.length
    results.push({
      scenario,
      ...Object.fromEntries(proxies.map((p) => [p, {
        cpuUs: mean(samples[p], 'cpuUs'),
        cpuAll: samples[p].map((r) => r.cpuUs),
        redisUs: mean(samples[p], 'redisUs'),
        recordsPerRequest: samples[p].reduce((sum, r) => sum + r.records, 0) / samples[p].reduce((sum, r) => sum + r.requests, 0),
        commandsPerRecord: samples[p].reduce((sum, r) => sum + r.commands, 0) / Math.max(1, samples[p].reduce((sum, r) => sum + r.records, 0)),
        redisPerRecordUs: samples[p].reduce((sum, r) => sum + r.redisUs * r.requests, 0) / Math.max(1, samples[p].reduce((sum, r) => sum + r.records, 0)),
        commandsPerSecond: samples[p].reduce((sum, r) => sum + r.commands, 0) / (samples[p].length * duration),
        rps: Math.max(...samples[p].map((r) => r.rps)),
        rssMb: mean(samples[p], 'rssMb')
      }]))
    })
  }

  // Part 3: idle RSS, with and without the link, both processes started together, read after --idle s.
  if (wanted('rss')) {
    for (let round = 0; round < rounds; round++) {
      const children = ['casgate', 'casgate+redis'].map((proxy, i) => ({
        proxy,
        child: start('node', ['--expose-gc', '--import', './bench/mem-probe.mjs', 'dist/src/cli.js', 'start', '-c', casgateConfig(`idle-${proxy}`, { shared: proxy === 'casgate+redis', port: PROXY_PORT + 1 + i, adminPort: ADMIN_PORT + 1 + i })], join(work, `${proxy}-idle.log`)),
        adminPort: ADMIN_PORT + 1 + i
      }))
      try {
        for (const { adminPort } of children) await waitForPort(adminPort)
        await sleep(idleSeconds * 1000)
        const row = {}
        for (const { proxy, child, adminPort } of children) {
          const status = await adminStatus(adminPort)
          row[proxy] = { rssMb: rssOf([child.pid]), heapMb: status.process.heapUsedBytes / 1048576, state: status.sharedState?.state ?? 'none' }
        }
        // Then after a full GC (bench/mem-probe.mjs): live memory, whatever V8 had collected by itself.
        for (const { proxy, child } of children) {
          const probed = await probe(child.pid)
          row[proxy].gcRssMb = probed.memory.rss / 1048576
          row[proxy].gcHeapMb = probed.memory.heapUsed / 1048576
        }
        idle.push(row)
        process.stderr.write(`idle round ${round + 1}: ${Object.entries(row).map(([p, r]) => `${p} rss ${r.rssMb.toFixed(1)} MB heap ${r.heapMb.toFixed(1)} MB, after GC ${r.gcRssMb.toFixed(1)} / ${r.gcHeapMb.toFixed(1)} MB (${r.state})`).join(', ')}\n`)
      } finally {
        for (const { child } of children) await stop(child)
      }
    }
  }

  const fmt = (n, digits = 1) => Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
  const spread = (list) => list.map((v) => v.toFixed(0)).join(' / ')
  const lines = [
    `casgate without / with state.redis (redis-server ${redisVersion}, loopback, no persistence), ${spawnSync(nginxBin, ['-v']).stderr.toString().trim().replace('nginx version: ', '')} in part 1`,
    `wrk -t1 -c${connections} (scrypt case -c${values['scrypt-connections']}) -d${duration}s over TLS on loopback, ${rounds} alternating rounds (CPU: mean of the rounds, each round after the slash), node ${process.version}, ${new Date().toISOString().slice(0, 10)}, load average at the end ${loadAverage()}`,
    '',
    '| part | requests | nginx CPU µs/req | casgate CPU µs/req | casgate + redis CPU µs/req | with / without | with − without µs | ×nginx (without / with) | records per request | Redis commands per record (per second) | redis-server CPU µs/req | redis-server µs/record | req/s without / with |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...results.map((r) => {
      const a = r.casgate
      const b = r['casgate+redis']
      const n = r.nginx
      return `| ${r.scenario.part} | ${r.scenario.label} | ${n ? fmt(n.cpuUs) : '—'} | ${fmt(a.cpuUs)} (${spread(a.cpuAll)}) | ${fmt(b.cpuUs)} (${spread(b.cpuAll)}) | **${fmt(b.cpuUs / a.cpuUs, 3)}×** | ${fmt(b.cpuUs - a.cpuUs)} | ${n ? `${fmt(a.cpuUs / n.cpuUs, 2)}× / ${fmt(b.cpuUs / n.cpuUs, 2)}×` : '—'} | ${fmt(b.recordsPerRequest, 3)} | ${b.recordsPerRequest > 0.01 ? fmt(b.commandsPerRecord, 2) : '—'} (${fmt(b.commandsPerSecond, 1)}) | ${fmt(b.redisUs, 2)} | ${b.recordsPerRequest > 0.01 ? fmt(b.redisPerRecordUs, 2) : '—'} | ${fmt(a.rps, 0)} / ${fmt(b.rps, 0)} |`
    }),
    ...(idle.length > 0
      ? ['', '| part 3: idle (after ' + idleSeconds + ' s) | RSS MB, rounds | V8 heap used MB, rounds | after a full GC: RSS MB | after a full GC: V8 heap used MB |', '| --- | ---: | ---: | ---: | ---: |',
          ...['casgate', 'casgate+redis'].map((p) => `| ${p} | ${idle.map((row) => fmt(row[p].rssMb)).join(' / ')} | ${idle.map((row) => fmt(row[p].heapMb)).join(' / ')} | ${idle.map((row) => fmt(row[p].gcRssMb)).join(' / ')} | ${idle.map((row) => fmt(row[p].gcHeapMb, 2)).join(' / ')} |`)]
      : [])
  ]
  console.log(lines.join('\n'))
  writeFileSync('bench/results/shared-state.md', lines.join('\n') + '\n')
} finally {
  await stop(origin)
  admin.disconnect()
  redis.kill('SIGKILL')
}

/** probe asks bench/mem-probe.mjs inside casgate for its memory figures after a full GC. */
async function probe (pid) {
  const before = new Set(readdirSync(work))
  process.kill(pid, 'SIGUSR2')
  for (let i = 0; i < 100; i++) {
    await sleep(50)
    const file = readdirSync(work).find((f) => f.startsWith(`probe-${pid}-`) && f.endsWith('.json') && !before.has(f))
    if (file) return JSON.parse(readFileSync(join(work, file), 'utf8'))
  }
  throw new Error('casgate did not answer the memory probe')
}

function loadAverage () {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
}
