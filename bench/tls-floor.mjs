// The floor under casgate's memory per held request: what bare Node (no casgate, no Fastify,
// no undici) costs per idle connection, in a child process whose RSS is read before and after
// --count connections are open. Kinds:
//   tcp          a net server holding plain TCP connections
//   tls-server   a tls server holding TLS connections after their handshake (casgate's client side)
//   tls-client   tls.connect clients sharing one secure context, idle after the handshake (re-encrypt's upstream side)
//   https-held   node:https server holding each request unanswered (a held Ping on the client side)
//
//   node bench/tls-floor.mjs [--count 3000] [--kinds tcp,tls-server,tls-client,https-held] [--max-version TLSv1.2]
//                            [--node-options ...] [--env MALLOC_ARENA_MAX=2]
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { connect, createServer } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { prepareWork, rssOf, stop, work } from './lib.mjs'

const { values } = parseArgs({ options: { count: { type: 'string', default: '3000' }, kinds: { type: 'string', default: 'tcp,tls-server,tls-client,https-held' }, 'node-options': { type: 'string', default: '' }, env: { type: 'string', multiple: true, default: [] }, 'max-version': { type: 'string' } } })
const count = Number(values.count)
const PORT = 19555
await prepareWork()
const cert = readFileSync(join(work, 'mail.crt'))
const key = readFileSync(join(work, 'mail.key'))
const ca = readFileSync(join(work, 'root.pem'))

const childCode = (kind) => `
  import { readFileSync } from 'node:fs'
  const work = ${JSON.stringify(work)}
  const cert = readFileSync(work + '/mail.crt'), key = readFileSync(work + '/mail.key'), ca = readFileSync(work + '/root.pem')
  const kind = ${JSON.stringify(kind)}
  const maxVersion = ${JSON.stringify(values['max-version'] ?? 'TLSv1.3')}
  const keep = []
  if (kind === 'tcp') (await import('node:net')).createServer((s) => keep.push(s)).listen(${PORT})
  if (kind === 'tls-server') (await import('node:tls')).createServer({ cert, key, maxVersion }, (s) => keep.push(s)).listen(${PORT})
  if (kind === 'https-held') (await import('node:https')).createServer({ cert, key, maxVersion }, (req, res) => keep.push(res)).listen(${PORT})
  if (kind === 'tls-client') {
    const tls = await import('node:tls')
    const secureContext = tls.createSecureContext({ ca, minVersion: 'TLSv1.2' })
    process.on('message', async (n) => {
      if (typeof n !== 'number') return
      for (let i = 0; i < n; i += 100) {
        await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => new Promise((resolve) => {
          const s = tls.connect({ port: ${PORT}, host: '127.0.0.1', servername: 'mail.bench.test', secureContext, ALPNProtocols: ['http/1.1'] }, resolve)
          s.on('error', resolve)
          keep.push(s)
        })))
      }
      process.send('done')
    })
  }
  process.on('message', (m) => { if (m === 'gc') { globalThis.gc?.(); process.send({ heapUsed: process.memoryUsage().heapUsed, heapTotal: process.memoryUsage().heapTotal }) } })
  process.send?.('ready')
`

async function measure (kind) {
  const child = spawn('node', [...values['node-options'].split(' ').filter(Boolean), '--expose-gc', '--input-type=module', '-e', childCode(kind)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...Object.fromEntries(values.env.map((kv) => kv.split(/=(.*)/s).slice(0, 2))) } })
  const message = () => new Promise((resolve) => child.once('message', resolve))
  const heap = async () => { child.send('gc'); return message() }
  await message()
  const keep = []
  let server
  try {
    if (kind === 'tls-client') {
      server = createServer({ cert, key }, (s) => keep.push(s)).listen(PORT)
    }
    await sleep(500)
    const open = () => new Promise((resolve) => {
      const s = kind === 'tcp'
        ? netConnect({ port: PORT, host: '127.0.0.1' }, resolve)
        : connect({ port: PORT, host: '127.0.0.1', servername: 'mail.bench.test', ca }, () => {
          if (kind === 'https-held') s.write('POST /Microsoft-Server-ActiveSync?Cmd=Ping HTTP/1.1\r\nHost: mail.bench.test\r\nContent-Length: 0\r\n\r\n')
          resolve()
        })
      s.on('error', resolve)
      keep.push(s)
    })
    const load = async (n) => {
      if (kind === 'tls-client') { child.send(n); await message() } else {
        for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, open))
      }
      await sleep(1500)
    }
    await load(100) // warm-up: code, contexts, first allocations
    const before = { rss: rssOf([child.pid]), ...(await heap()) }
    await load(count)
    const after = { rss: rssOf([child.pid]), ...(await heap()) }
    const kb = (after.rss - before.rss) * 1024 / count
    const heapKb = (after.heapUsed - before.heapUsed) / 1024 / count
    const totalKb = (after.heapTotal - before.heapTotal) / 1024 / count
    console.log(`| ${kind} | ${count} | ${kb.toFixed(1)} | ${heapKb.toFixed(1)} | ${(totalKb - heapKb).toFixed(1)} | ${(kb - totalKb).toFixed(1)} |`)
  } finally {
    for (const s of keep) s.destroy()
    server?.close()
    await stop(child)
  }
}

console.log(`bare Node ${process.version} per idle connection, ${count} connections (after gc)${[values['node-options'], ...values.env, values['max-version']].filter(Boolean).map((o) => `, ${o}`).join('')}`)
console.log('| kind | connections | KB RSS each | V8 heap used | V8 heap committed, free | native (RSS − heap committed) |')
console.log('| --- | ---: | ---: | ---: | ---: | ---: |')
for (const kind of values.kinds.split(',')) await measure(kind)
