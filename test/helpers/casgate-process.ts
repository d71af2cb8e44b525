import type { ChildProcess } from 'node:child_process'
import { onTestFinished } from 'vitest'

/** CasgateProcess is a casgate started by a test: its JSON log lines so far, its stderr, its exit. */
export interface CasgateProcess {
  lines: Array<Record<string, unknown>>
  stderr: () => string
  exited: Promise<number | null>
}

/**
 * watchCasgate reads a casgate child's stdout as JSON log lines (primary and workers alike) and
 * stops it when the test ends with `stop` (it is then awaited).
 */
export function watchCasgate (child: ChildProcess, stop: () => void): CasgateProcess {
  const lines: Array<Record<string, unknown>> = []
  let buffered = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString()
    const complete = buffered.split('\n')
    buffered = complete.pop()!
    for (const line of complete) if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>)
  })
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  onTestFinished(async () => {
    if (child.exitCode === null) stop()
    await exited
  })
  return { lines, stderr: () => stderr, exited }
}
