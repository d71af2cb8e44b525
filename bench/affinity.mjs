// Affinity: lookup cost per request and memory per million assignments.
//
// Lookup: VdirAffinity.select over a 3-server pool, for each policy, against the baseline of
// plain least-outstanding selection (what `affinity: none` does) in the same run; prints
// ns/lookup and the ratio. Memory: fills the assignment store with 1,000,000 keys and reports
// V8 heap + external growth per entry. Runs in-process, no network; bounded by count.
//   node --expose-gc bench/affinity.mjs [--lookups 300000] [--entries 1000000]
import { createSecretKey } from 'node:crypto'
import { parseArgs } from 'node:util'
import { Affinity } from '../dist/src/affinity/affinity.js'
import { ServerPool } from '../dist/src/upstream/server-pool.js'

const { values } = parseArgs({ options: { lookups: { type: 'string', default: '300000' }, entries: { type: 'string', default: '1000000' } } })
const LOOKUPS = Number(values.lookups)
const ENTRIES = Number(values.entries)
if (typeof globalThis.gc !== 'function') {
  console.error('run with node --expose-gc bench/affinity.mjs')
  process.exit(2)
}

const pool = new ServerPool({
  name: 'cas',
  servers: ['https://ex1.contoso.local', 'https://ex2.contoso.local', 'https://ex3.contoso.local'].map((u) => new URL(u)),
  scheme: 'https:',
  balance: 'least-outstanding',
  insecureSkipVerify: false,
  connectionsPerServer: 256,
  connectTimeoutMs: 5000
})
const settings = { secret: createSecretKey(Buffer.alloc(32, 9)), secretSource: 'file', maxEntries: Math.max(ENTRIES, 100_000), idleTtlMs: 2 * 3600_000, balanceFactor: 1.1, cookieName: 'CasgateAffinity' }
const vdir = (path, affinity, affinityCookie) => ({ path, pool: 'cas', timeoutMs: 60_000, healthPath: `${path}/healthcheck.htm`, affinity, affinityCookie })

function measure (label, selector, requests) {
  const run = (count) => {
    const started = process.hrtime.bigint()
    for (let i = 0; i < count; i++) {
      if (selector.select(requests[i % requests.length]) === undefined) throw new Error('no backend')
    }
    return Number(process.hrtime.bigint() - started) / count
  }
  run(Math.min(50_000, LOOKUPS)) // warm-up: JIT, and every key placed once
  return { label, ns: Math.min(run(LOOKUPS), run(LOOKUPS)) }
}

const USERS = 10_000
const basic = Array.from({ length: USERS }, (_, i) => ({ url: '/Microsoft-Server-ActiveSync?Cmd=Ping', headers: { authorization: `Basic ${Buffer.from(`CONTOSO\\user${i}:Password-${i}`).toString('base64')}` }, client: '198.51.100.7' }))
const easQuery = Array.from({ length: USERS }, (_, i) => ({ url: `/Microsoft-Server-ActiveSync?Cmd=Ping&User=user${i}&DeviceId=DEV${i}&DeviceType=iPhone`, headers: {}, client: '198.51.100.7' }))
const addresses = Array.from({ length: USERS }, (_, i) => ({ url: '/EWS/Exchange.asmx', headers: {}, client: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }))

const affinity = new Affinity(settings)
const none = affinity.forVdir(vdir('/EWS', 'none'), pool)
const authorization = affinity.forVdir(vdir('/Microsoft-Server-ActiveSync', 'authorization'), pool)
const sourceIp = affinity.forVdir(vdir('/mapi', 'source-ip'), pool)
const cookie = affinity.forVdir(vdir('/owa', 'cookie'), pool)
const followed = affinity.forVdir(vdir('/ecp', 'cookie', 'X-Session'), pool)
// Browsers that already hold casgate's cookie (the steady state), and sessions the backends set.
const withCookie = pool.servers.map((backend) => ({ url: '/owa/', headers: { cookie: `theme=dark; ${/^[^;]+/.exec(cookie.cookieFor(backend))[0]}` }, client: '198.51.100.7' }))
const sessions = Array.from({ length: USERS }, (_, i) => ({ url: '/ecp/', headers: { cookie: `X-Session=s${i}` }, client: '198.51.100.7' }))
for (let i = 0; i < USERS; i++) followed.learnFromResponse(`X-Session=s${i}; Path=/`, pool.servers[i % 3])

const results = [
  measure('none (least-outstanding, the baseline)', none, basic),
  measure('authorization: Basic header', authorization, basic),
  measure('authorization: ActiveSync User= query', authorization, easQuery),
  measure('source-ip', sourceIp, addresses),
  measure('cookie (casgate\'s, signed)', cookie, withCookie),
  measure('cookie (followed backend cookie)', followed, sessions)
]
const baseline = results[0].ns
console.log(`\nAffinity lookup, ${LOOKUPS} lookups per policy over ${USERS} distinct keys (best of 2)\n`)
console.log('| policy | ns/lookup | × baseline |\n| --- | ---: | ---: |')
for (const r of results) console.log(`| ${r.label} | ${r.ns.toFixed(0)} | ${(r.ns / baseline).toFixed(1)}× |`)

// Memory per entry: a store of its own, filled with ENTRIES keyed hashes.
const memory = () => {
  globalThis.gc()
  globalThis.gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.external
}
const before = memory()
const store = new Affinity({ ...settings, maxEntries: ENTRIES })
const eas = store.forVdir(vdir('/Microsoft-Server-ActiveSync', 'authorization'), pool)
const empty = memory()
for (let i = 0; i < ENTRIES; i++) eas.select({ url: `/Microsoft-Server-ActiveSync?Cmd=Ping&DeviceId=D${i}`, headers: {}, client: undefined })
const after = memory()
// Each shard evicts on its own bound, so a full store holds slightly fewer than maxEntries.
const held = store.store.size
if (held < ENTRIES * 0.99) throw new Error(`store holds ${held}, expected about ${ENTRIES}`)
const perEntry = (after - before) / held
const mb = (bytes) => (bytes / 1048576).toFixed(0)
console.log(`\nAssignment store filled with ${ENTRIES} keys (${held} held): ${mb(after - before)} MB in all, ${perEntry.toFixed(0)} bytes per entry (V8 heap + external after GC); of it ${mb(empty - before)} MB are the arrays lru-cache allocates up front for maxEntries`)
