import { describe, expect, it } from 'vitest'
import type { ResolvedPool } from '../src/config/load.js'
import { ServerPool } from '../src/upstream/server-pool.js'

function pool (balance: 'round-robin' | 'least-outstanding', count = 3): ServerPool {
  const servers = Array.from({ length: count }, (_, i) => new URL(`http://10.0.0.${i + 1}`))
  return new ServerPool({ name: 'cas', servers, scheme: 'http:', balance, insecureSkipVerify: false, connectionsPerServer: 8, connectTimeoutMs: 1000 } as ResolvedPool)
}

describe('backend selection', () => {
  it('round robin takes each server in turn', () => {
    const p = pool('round-robin')
    const names = Array.from({ length: 6 }, () => p.select({ vdir: '/owa' })!.name)
    expect(names).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1', '10.0.0.2', '10.0.0.3'])
  })

  it('least outstanding sends new requests to the server with the fewest in flight', () => {
    const p = pool('least-outstanding')
    p.servers[0]!.outstanding = 5
    p.servers[1]!.outstanding = 1
    p.servers[2]!.outstanding = 3
    for (let i = 0; i < 4; i++) expect(p.select({ vdir: '/owa' })!.name).toBe('10.0.0.2')
  })

  it('least outstanding spreads an idle pool instead of piling on the first server', () => {
    const p = pool('least-outstanding')
    const counts = new Map<string, number>()
    for (let i = 0; i < 30; i++) {
      const name = p.select({ vdir: '/owa' })!.name
      counts.set(name, (counts.get(name) ?? 0) + 1)
    }
    expect([...counts.values()]).toEqual([10, 10, 10])
  })
})
