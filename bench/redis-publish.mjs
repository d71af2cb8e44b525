// Shared state on Redis: CPU per published record. Starts its own redis-server on a free loopback
// port (no persistence), one RedisLink (dist/, npm run build first), then measures
//   1. the publish() call alone (what a request that records state pays on its own path),
//   2. publish + sending (XADD batches) + reading the own copy back, for a burst,
//   3. the same for a trickle (one record per event-loop turn: one XADD each, no batching),
//   4. the idle cost of the link (blocking XREAD turns, heartbeat).
//   node bench/redis-publish.mjs [--records 100000]
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { RedisLink } from '../dist/src/state/redis-link.js'

const { values } = parseArgs({ options: { records: { type: 'string', default: '100000' } } })
const N = Number(values.records)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const cpu = (since) => { const used = process.cpuUsage(since); return used.user + used.system }

const port = await new Promise((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)) })
})
const dir = mkdtempSync(join(tmpdir(), 'casgate-bench-redis-'))
const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' })
await sleep(300)

const settings = { target: { kind: 'server', host: '127.0.0.1', port, db: 0 }, where: 'bench', username: undefined, password: undefined, tls: undefined, keyPrefix: 'bench:', historyMs: 3_600_000, timeoutMs: 1_000 }
const link = new RedisLink(settings, { logger: pino({ level: 'silent' }) })
const counter = { got: 0 }
link.onRecord = () => { counter.got++ }
await link.start()
const until = async (count) => { while (counter.got < count) await sleep(5) }
// A lockout failure as the lead's records look (keyed hashes, no secret).
const record = (i) => ({ kind: 'lockout', record: { kind: 'failure', user: 'k1Qz8d7hY2-9aGv0bW3xTq', address: 'Zx81bYv2uQw0aPq7Lm3nRt', device: undefined, at: 1_796_092_329_158 + i } })

for (let i = 0; i < 10_000; i++) link.publish(record(i))
await until(10_000)

counter.got = 0
const start = process.cpuUsage()
const wall = process.hrtime.bigint()
for (let i = 0; i < N; i++) link.publish(record(i))
const call = cpu(start)
console.log(`publish() call: ${(call / N).toFixed(2)} µs CPU each (${(Number(process.hrtime.bigint() - wall) / 1e3 / N).toFixed(2)} µs wall), ${N} records`)
await until(N)
console.log(`burst, publish + XADD batches + own copy read back: ${(cpu(start) / N).toFixed(2)} µs CPU each`)

const M = Math.min(N, 20_000)
counter.got = 0
const trickle = process.cpuUsage()
for (let i = 0; i < M; i++) {
  link.publish(record(i))
  await new Promise((resolve) => setImmediate(resolve))
}
await until(M)
console.log(`trickle (one record per event-loop turn), all in: ${(cpu(trickle) / M).toFixed(2)} µs CPU each, ${M} records`)

const idle = process.cpuUsage()
await sleep(5_000)
console.log(`idle link: ${(cpu(idle) / 5_000).toFixed(3)} ms CPU per second`)

await link.close()
redis.kill('SIGKILL')
rmSync(dir, { recursive: true, force: true })
