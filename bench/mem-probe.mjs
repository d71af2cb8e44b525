// Preloaded into casgate by bench/held.mjs (`node --import ./bench/mem-probe.mjs`): on SIGUSR2 it
// writes the process's memory figures (process.memoryUsage(), V8's heap spaces, open handles) to
// $MEM_PROBE_DIR/probe-<n>.json (after a full GC when started with --expose-gc), and with MEM_PROBE_SNAPSHOT=1 a heap snapshot next to it.
// Bench-only: casgate itself has no such hook.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import v8 from 'node:v8'

const dir = process.env.MEM_PROBE_DIR ?? '.'
let n = 0
process.on('SIGUSR2', () => {
  // Started with --expose-gc by the bench: live memory, not the garbage of the last requests.
  globalThis.gc?.()
  globalThis.gc?.()
  const name = join(dir, `probe-${process.pid}-${n++}`)
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size, physical: s.physical_space_size }]))
  const resources = {}
  for (const r of process.getActiveResourcesInfo()) resources[r] = (resources[r] ?? 0) + 1
  const stats = { memory: process.memoryUsage(), heap: v8.getHeapStatistics(), spaces, resources }
  if (process.env.MEM_PROBE_SNAPSHOT === '1') stats.snapshot = v8.writeHeapSnapshot(`${name}.heapsnapshot`)
  writeFileSync(`${name}.json.tmp`, JSON.stringify(stats))
  // Renamed when whole, so the bench never reads half a file.
  import('node:fs').then(({ renameSync }) => renameSync(`${name}.json.tmp`, `${name}.json`))
})
