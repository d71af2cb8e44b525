import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { Dispatcher } from 'undici'
import type { ResolvedPool } from '../src/config/load.js'
import { createLogger } from '../src/observe/logger.js'
import { ServerPool } from '../src/upstream/server-pool.js'
import { HealthMonitor } from '../src/upstream/health-monitor.js'
import { LogCapture } from './helpers/lab.js'

// The state machine under fake timers. The network is stood in for by a dispatcher that answers
// from a table: the probes over real sockets are in health-per-vdir.test.ts.
function fakeUpstreams (answers: Map<string, number>, seen?: (key: string) => void): Dispatcher {
  return {
    async request (options: { origin: string, path: string }) {
      seen?.(`${options.origin}${options.path}`)
      const status = answers.get(`${options.origin}${options.path}`) ?? 200
      return { statusCode: status, body: [Buffer.from(status === 200 ? '200 OK<br/>EX1' : 'not found')] }
    }
  } as unknown as Dispatcher
}

describe('health monitor timing (fake timers)', () => {
  beforeEach(() => { vi.useFakeTimers() })
  afterEach(() => { vi.useRealTimers() })

  function setup (rise: number, fall: number, seen?: (key: string) => void) {
    const pool = new ServerPool({ name: 'cas', servers: [new URL('http://ex1.test'), new URL('http://ex2.test')], scheme: 'http:', balance: 'round-robin' } as ResolvedPool)
    const answers = new Map<string, number>()
    const logs = new LogCapture()
    const monitor = new HealthMonitor({ enabled: true, intervalMs: 10_000, timeoutMs: 1_000, rise, fall, expectBody: '200 OK' }, fakeUpstreams(answers, seen), createLogger({ level: 'info', pretty: false }, logs))
    for (const backend of pool.servers) for (const vdir of ['/owa', '/EWS']) monitor.watch(backend, vdir, `${vdir}/healthcheck.htm`, 'mail.contoso.test')
    return { pool, answers, monitor, logs, ex1: pool.servers[0]! }
  }

  it('needs `fall` failed probes to take a server out and `rise` good ones to bring it back, one interval apart', async () => {
    const { answers, monitor, ex1 } = setup(2, 3)
    monitor.start()
    await vi.advanceTimersByTimeAsync(300) // first probes, jittered within 250 ms
    expect(ex1.down.size).toBe(0)
    answers.set('http://ex1.test/owa/healthcheck.htm', 404)
    await vi.advanceTimersByTimeAsync(11_000) // one probe: 1 of 3
    await vi.advanceTimersByTimeAsync(11_000) // 2 of 3
    expect(ex1.down.has('/owa')).toBe(false)
    await vi.advanceTimersByTimeAsync(11_000) // 3 of 3
    expect(ex1.down.has('/owa')).toBe(true)
    expect(ex1.down.has('/EWS')).toBe(false)
    answers.delete('http://ex1.test/owa/healthcheck.htm')
    await vi.advanceTimersByTimeAsync(11_000)
    expect(ex1.down.has('/owa')).toBe(true)
    await vi.advanceTimersByTimeAsync(11_000)
    expect(ex1.down.has('/owa')).toBe(false)
    monitor.stop()
  })

  it('spreads probes of different pairs (jitter) and keeps each pair about one interval apart', async () => {
    const probes = new Map<string, number[]>()
    const start = Date.now()
    const { monitor } = setup(1, 1, (key) => probes.set(key, [...(probes.get(key) ?? []), Date.now() - start]))
    monitor.start()
    await vi.advanceTimersByTimeAsync(45_000)
    monitor.stop()
    expect(probes.size).toBe(4)
    const firsts = [...probes.values()].map((times) => times[0]!)
    expect(new Set(firsts).size).toBeGreaterThan(1)
    for (const times of probes.values()) {
      expect(times[0]!).toBeLessThanOrEqual(250)
      for (let i = 1; i < times.length; i++) {
        expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(9_000)
        expect(times[i]! - times[i - 1]!).toBeLessThanOrEqual(11_000)
      }
    }
  })

  it('reads a server-wide offline (every page 404) as maintenance, said once', async () => {
    const { answers, monitor, logs } = setup(1, 1)
    for (const vdir of ['/owa', '/EWS']) answers.set(`http://ex1.test${vdir}/healthcheck.htm`, 404)
    monitor.start()
    await vi.advanceTimersByTimeAsync(300)
    const lines = logs.lines.filter((line) => line.backend === 'ex1.test')
    expect(lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual(['backend is offline for maintenance (every health page answers 404)'])
    expect(lines.filter((line) => line.msg === 'backend health changed' && line.level === 30)).toHaveLength(2)
    monitor.stop()
  })
})
