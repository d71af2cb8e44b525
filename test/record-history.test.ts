import { describe, expect, it } from 'vitest'
import { AssignmentStore } from '../src/affinity/assignment-store.js'
import { RecordHistory } from '../src/state/record-history.js'
import type { SharedRecord } from '../src/state/shared-record.js'

const basic = (key: string): SharedRecord => ({ kind: 'basic', key })

describe('record history', () => {
  it('keeps records in order until they stop mattering', () => {
    const history = new RecordHistory()
    history.add(basic('a'), 2_000, 1_000)
    history.add(basic('b'), 5_000, 1_000)
    history.add(basic('gone'), 900, 1_000)
    expect(history.records(1_500)).toEqual([basic('a'), basic('b')])
    expect(history.records(3_000)).toEqual([basic('b')])
  })

  it('holds at most its bound, dropping the oldest first', () => {
    const history = new RecordHistory(1_000)
    for (let i = 0; i < 5_000; i++) history.add(basic(String(i)), 10_000, 0)
    expect(history.size).toBe(1_000)
    const records = history.records(0)
    expect(records).toHaveLength(1_000)
    expect(records[0]).toEqual(basic('4000'))
    expect(records.at(-1)).toEqual(basic('4999'))
  })
})

describe('shared assignments', () => {
  it('name the vdir and the server by origin, so a process that orders its servers otherwise agrees', () => {
    const shared: unknown[] = []
    const here = new AssignmentStore({ maxEntries: 100, idleTtlMs: 60_000 })
    const hereOwner = { held: new Int32Array(2), id: '* /EWS cas', pool: { servers: [{ origin: 'https://ex1' }, { origin: 'https://ex2' }] } }
    const prefix = here.register(hereOwner)
    here.shareAssignment = (assignment) => shared.push(assignment)
    here.set(`${prefix}k`, 1)
    here.delete(`${prefix}k`)
    here.set(`${prefix}j`, 0)
    expect(shared).toEqual([{ owner: '* /EWS cas', key: 'k', server: 'https://ex2' }, { owner: '* /EWS cas', key: 'k', server: null }, { owner: '* /EWS cas', key: 'j', server: 'https://ex1' }])

    const there = new AssignmentStore({ maxEntries: 100, idleTtlMs: 60_000 })
    there.register({ held: new Int32Array(1), id: '* /owa cas', pool: { servers: [{ origin: 'https://ex1' }] } })
    const thereOwner = { held: new Int32Array(3), id: '* /EWS cas', pool: { servers: [{ origin: 'https://ex3' }, { origin: 'https://ex2' }, { origin: 'https://ex1' }] } }
    const therePrefix = there.register(thereOwner)
    there.applyShared({ owner: '* /EWS cas', key: 'j', server: 'https://ex1' })
    there.applyShared({ owner: '* /EWS cas', key: 'm', server: 'https://ex9' })
    there.applyShared({ owner: '* /MAPI cas', key: 'n', server: 'https://ex1' })
    expect(there.get(`${therePrefix}j`)).toBe(2)
    expect(there.get(`${therePrefix}m`)).toBeUndefined()
    expect(there.size).toBe(1)
    expect([...thereOwner.held]).toEqual([0, 0, 1])
  })
})

describe('records read from outside', () => {
  it('are dropped when their shape or times are not what an instance writes', async () => {
    const { parseSharedRecord } = await import('../src/state/shared-record.js')
    const now = Date.now()
    const failure = (at: number): unknown => ({ kind: 'lockout', record: { kind: 'failure', user: 'u'.repeat(12), at } })
    expect(parseSharedRecord(failure(now))).toBeDefined()
    expect(parseSharedRecord(failure(now - 60 * 60_000))).toBeDefined()
    // A failure dated a year ahead would lock for as long; one from long ago would fill the history.
    expect(parseSharedRecord(failure(now + 365 * 24 * 60 * 60_000))).toBeUndefined()
    expect(parseSharedRecord(failure(now - 365 * 24 * 60 * 60_000))).toBeUndefined()
    expect(parseSharedRecord({ kind: 'revocation', key: 'k'.repeat(12), until: now + 8 * 60 * 60_000 })).toBeDefined()
    expect(parseSharedRecord({ kind: 'revocation', key: 'k'.repeat(12), until: Number.MAX_SAFE_INTEGER })).toBeUndefined()
    expect(parseSharedRecord({ kind: 'drain', backend: 'ex1:443', vdirs: ['*'], deadlineAt: now + 3_600_000 })).toBeDefined()
    expect(parseSharedRecord({ kind: 'drain', backend: 'ex1:443', vdirs: ['*'], deadlineAt: 1e15 })).toBeUndefined()
    expect(parseSharedRecord({ kind: 'weight', backend: 'ex1:443', weight: 1e9 })).toBeUndefined()
    expect(parseSharedRecord({ kind: 'basic', key: 'x'.repeat(10_000) })).toBeUndefined()
  })
})
