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

describe('server weights', () => {
  it('smooth weighted round robin spreads 5:1:1 without bursts, and weight 0 takes nothing', () => {
    const p = pool('round-robin')
    const [a, b, c] = p.servers
    a!.weight = 5
    const picks = Array.from({ length: 7 }, () => p.select({ vdir: '/owa' })!.name)
    expect(picks).toEqual([a, a, b, a, c, a, a].map((s) => s!.name))
    c!.weight = 0
    expect(new Set(Array.from({ length: 12 }, () => p.select({ vdir: '/owa' })!.name)).has(c!.name)).toBe(false)
  })

  it('least outstanding counts load per unit of weight', () => {
    const p = pool('least-outstanding', 2)
    const [a, b] = p.servers
    a!.weight = 2
    a!.outstanding = 3
    b!.outstanding = 1
    // (3 + 1) / 2 = 2 = (1 + 1) / 1: a tie; one more on a and b is less loaded per weight.
    a!.outstanding = 4
    expect(p.select({ vdir: '/owa' })).toBe(b)
    a!.outstanding = 2
    expect(p.select({ vdir: '/owa' })).toBe(a)
    a!.weight = 0
    a!.outstanding = 0
    expect(p.select({ vdir: '/owa' })).toBe(b)
  })

  it('places new affinity keys by weight, and equal weights place exactly as before', async () => {
    const { placeKey } = await import('../src/affinity/placement.js')
    const names = ['ex1', 'ex2', 'ex3']
    const plain = names.map((name, index) => ({ name, index }))
    const equal = names.map((name, index) => ({ name, index, weight: 1 }))
    const heavy = names.map((name, index) => ({ name, index, weight: index === 0 ? 2 : 1 }))
    const heldPlain = new Int32Array(3)
    const heldEqual = new Int32Array(3)
    const heldHeavy = new Int32Array(3)
    for (let i = 0; i < 4000; i++) {
      const key = `user${i}`
      const first = placeKey(key, plain, heldPlain, 1.1)!
      const second = placeKey(key, equal, heldEqual, 1.1)!
      expect(second.index).toBe(first.index)
      heldPlain[first.index]!++
      heldEqual[second.index]!++
      heldHeavy[placeKey(key, heavy, heldHeavy, 1.1)!.index]!++
    }
    // Weight 2 of 4: half the keys, within the bound.
    expect(heldHeavy[0]! / 4000).toBeGreaterThan(0.45)
    expect(heldHeavy[0]! / 4000).toBeLessThan(0.56)
    const none = names.map((name, index) => ({ name, index, weight: index === 2 ? 0 : 1 }))
    expect(Array.from({ length: 200 }, (_, i) => placeKey(`k${i}`, none, new Int32Array(3), 1.1)!.index)).not.toContain(2)
  })
})
