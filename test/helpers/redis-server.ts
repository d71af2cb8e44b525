import { spawn, type ChildProcess } from 'node:child_process'
import { connect } from 'node:net'
import { onTestFinished } from 'vitest'
import type { RedisSettings } from '../../src/config/state-config.js'
import { closedPort } from './ports.js'
import { tempDir } from './tmp.js'

/** RedisServer is a real redis-server (Debian's, installed by .ci/run) on a loopback port. */
export interface RedisServer {
  port: number
  /** settings for a RedisLink (or anything taking RedisSettings) on this server. */
  settings: (overrides?: Partial<RedisSettings>) => RedisSettings
  /** stop kills it (SIGKILL, as a crash: nothing is saved) and waits for the exit. */
  stop: () => Promise<void>
  /** restart starts it again on the same port, empty, as after a crash. */
  restart: () => Promise<void>
  /** pause stops the process (SIGSTOP): connections stay open and nothing answers, a hung Redis. */
  pause: () => void
  /** resume continues a paused process (SIGCONT). */
  resume: () => void
}

/** answersPing says whether something on the port answers PING (any reply: +PONG, or -NOAUTH with a password). */
export function answersPing (port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk: Buffer) => done(/^[+-]/.test(chunk.toString())))
    socket.on('error', () => done(false))
  })
}

/**
 * startRedis runs redis-server on a free loopback port (redis cannot listen on port 0: the port
 * is found by binding and releasing it), without persistence, in a temporary directory. It is
 * killed when the current test ends. `password` sets requirepass; `args` are more redis-server options
 * (a replica's --replicaof).
 */
export async function startRedis (options: { password?: string, args?: string[] } = {}): Promise<RedisServer> {
  const dir = tempDir()
  const port = await closedPort()
  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()
  let output = ''

  const launch = async (): Promise<void> => {
    output = ''
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning']
    if (options.password !== undefined) args.push('--requirepass', options.password)
    if (options.args !== undefined) args.push(...options.args)
    const started = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = started
    started.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    started.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    exited = new Promise((resolve) => started.once('exit', () => resolve()))
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      if (started.exitCode !== null) break
      if (await answersPing(port, 500)) return
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    await stop()
    throw new Error(`redis-server did not answer on port ${port}: ${output}`)
  }

  const stop = async (): Promise<void> => {
    const running = child
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return
    running.kill('SIGKILL')
    await exited
  }

  onTestFinished(stop)
  await launch()
  return {
    port,
    settings: (overrides = {}) => ({
      target: { kind: 'server', host: '127.0.0.1', port, db: 0 },
      where: `redis://127.0.0.1:${port}/0`,
      username: undefined,
      password: options.password,
      tls: undefined,
      keyPrefix: 'casgate-test:',
      historyMs: 60 * 60_000,
      timeoutMs: 300,
      ...overrides
    }),
    stop,
    restart: async () => {
      await stop()
      await launch()
    },
    pause: () => { child?.kill('SIGSTOP') },
    resume: () => { child?.kill('SIGCONT') }
  }
}
