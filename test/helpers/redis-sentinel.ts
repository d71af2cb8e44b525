import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { onTestFinished } from 'vitest'
import type { RedisSettings } from '../../src/config/state-config.js'
import { closedPort } from './ports.js'
import { answersPing, startRedis, type RedisServer } from './redis-server.js'
import { tempDir } from './tmp.js'
import { until } from './until.js'

/** SentinelSite is a master, one replica of it and one Sentinel watching them, on loopback ports. */
export interface SentinelSite {
  /** The master's name as the Sentinel knows it (sentinel monitor <name> …). */
  name: string
  master: RedisServer
  replica: RedisServer
  sentinelPort: number
  /** settings for a RedisLink that finds the master through the Sentinel. */
  settings: (overrides?: Partial<RedisSettings>) => RedisSettings
  /** masterPort asks the Sentinel which port it names as the master now. */
  masterPort: () => Promise<number>
  /** client opens a plain connection to one of the servers (closed when the test ends). */
  client: (server: RedisServer) => Redis
  /** The Sentinel's log so far (notice level: +sdown, +odown, +switch-master), for failure messages. */
  log: () => string
}

const WAIT_MS = 15_000

/** waitFor is until() for probes of servers that may not answer yet (a refused connection is 'not yet'). */
function waitFor (what: string, predicate: () => Promise<boolean>, timeoutMs: number, detail: () => string): Promise<void> {
  return until(what, () => predicate().catch(() => false), timeoutMs, detail)
}

/**
 * startSentinelSite starts a master, a replica of it (--replicaof) and one Sentinel (quorum 1, the
 * master down after 500 ms without an answer, failover-timeout 2 s), without persistence, and waits
 * until the replica is in sync and the Sentinel knows it, so that a failover can promote it.
 * Everything is killed (SIGKILL) when the current test ends; every wait is bounded.
 */
export async function startSentinelSite (): Promise<SentinelSite> {
  const name = 'casgate-test'
  // No delay before a diskless full sync (Redis 7 waits 5 s for more replicas by default).
  const replication = ['--repl-diskless-sync-delay', '0']
  const master = await startRedis({ args: replication })
  const replica = await startRedis({ args: [...replication, '--replicaof', '127.0.0.1', String(master.port)] })

  const clients: Redis[] = []
  const connect = (port: number, lazyConnect = true): Redis => {
    const redis = new Redis({ host: '127.0.0.1', port, lazyConnect, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1_000, commandTimeout: 1_000 })
    redis.on('error', () => {})
    clients.push(redis)
    return redis
  }
  onTestFinished(() => { for (const redis of clients) redis.disconnect() })
  const ask = async <T>(port: number, command: string, ...args: Array<string | number>): Promise<T> => {
    const redis = connect(port)
    try {
      await redis.connect()
      return await redis.call(command, ...args) as T
    } finally {
      redis.disconnect()
    }
  }

  let output = ''
  await waitFor('the replica in sync', async () => /master_link_status:up/.test(await ask<string>(replica.port, 'INFO', 'replication')), WAIT_MS, () => '')

  const dir = tempDir()
  const sentinelPort = await closedPort()
  const conf = join(dir, 'sentinel.conf')
  // The Sentinel rewrites its file (known replicas, epochs): it lives in the test's directory.
  writeFileSync(conf, [
    `port ${sentinelPort}`,
    'bind 127.0.0.1',
    'daemonize no',
    `dir ${dir}`,
    'loglevel notice',
    `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
    `sentinel down-after-milliseconds ${name} 500`,
    `sentinel failover-timeout ${name} 2000`,
    ''
  ].join('\n'))
  const child: ChildProcess = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  onTestFinished(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGKILL')
    await exited
  })
  const deadline = Date.now() + 10_000
  while (!(await answersPing(sentinelPort, 500))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the Sentinel did not answer on port ${sentinelPort}: ${output}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  // The Sentinel learns of the replica from the master's INFO, then connects to it: a replica it
  // does not know, or knows as down, would not be promoted.
  await waitFor('the Sentinel to know the replica', async () => {
    const replicas = await ask<string[][]>(sentinelPort, 'SENTINEL', 'REPLICAS', name)
    return replicas.some((fields) => {
      const info = new Map<string, string>()
      for (let i = 0; i + 1 < fields.length; i += 2) info.set(fields[i]!, fields[i + 1]!)
      return info.get('port') === String(replica.port) && info.get('flags') === 'slave' && info.get('master-link-status') === 'ok'
    })
  }, WAIT_MS, () => output)

  return {
    name,
    master,
    replica,
    sentinelPort,
    settings: (overrides = {}) => ({
      ...master.settings(),
      target: { kind: 'sentinels', sentinels: [{ host: '127.0.0.1', port: sentinelPort }], name },
      where: `sentinels 127.0.0.1:${sentinelPort} (master ${name})`,
      ...overrides
    }),
    masterPort: async () => {
      const [, port] = await ask<[string, string]>(sentinelPort, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)
      return Number(port)
    },
    client: (server) => connect(server.port, false),
    log: () => output
  }
}
