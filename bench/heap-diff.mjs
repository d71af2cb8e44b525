// What a held request leaves in V8's heap: two heap snapshots (bench/held.mjs --snapshot writes
// one before and one while holding), objects grouped by constructor (or native class), the
// difference in count and self size divided by the number of held requests.
//
//   node --max-old-space-size=8192 bench/heap-diff.mjs IDLE.heapsnapshot HELD.heapsnapshot HELD_COUNT [--top 40]
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

const { positionals, values } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '40' } } })
const [idleFile, heldFile, heldCount] = positionals
const n = Number(heldCount)

function groups (file) {
  const snapshot = JSON.parse(readFileSync(file, 'utf8'))
  const meta = snapshot.snapshot.meta
  const fields = meta.node_fields.length
  const typeAt = meta.node_fields.indexOf('type')
  const nameAt = meta.node_fields.indexOf('name')
  const sizeAt = meta.node_fields.indexOf('self_size')
  const types = meta.node_types[typeAt]
  const { nodes, strings } = snapshot
  const byKey = new Map()
  for (let i = 0; i < nodes.length; i += fields) {
    const type = types[nodes[i + typeAt]]
    let name = strings[nodes[i + nameAt]]
    // Strings, code and arrays are many names of one kind: group them by kind.
    if (['string', 'concatenated string', 'sliced string', 'number', 'code', 'hidden', 'array', 'regexp', 'symbol', 'bigint'].includes(type)) name = ''
    if (type === 'closure') name = `${name}()`
    const key = `${type}${name ? ` ${name.slice(0, 80)}` : ''}`
    const entry = byKey.get(key) ?? { count: 0, size: 0 }
    entry.count++
    entry.size += nodes[i + sizeAt]
    byKey.set(key, entry)
  }
  return byKey
}

const idle = groups(idleFile)
const held = groups(heldFile)
const rows = []
for (const [key, after] of held) {
  const before = idle.get(key) ?? { count: 0, size: 0 }
  rows.push({ key, count: (after.count - before.count) / n, bytes: (after.size - before.size) / n })
}
rows.sort((a, b) => b.bytes - a.bytes)
const total = rows.reduce((sum, r) => sum + r.bytes, 0)
console.log(`per held request (${n}): ${(total / 1024).toFixed(1)} KB of V8 heap (self sizes; native classes at the size Node reports)`)
console.log('| object (snapshot type, constructor) | count | bytes |')
console.log('| --- | ---: | ---: |')
for (const r of rows.slice(0, Number(values.top))) console.log(`| ${r.key.replaceAll('|', '\\|')} | ${r.count.toFixed(2)} | ${r.bytes.toFixed(0)} |`)
