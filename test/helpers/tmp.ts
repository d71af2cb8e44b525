import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { onTestFinished } from 'vitest'

/** tempDir makes a directory removed when the current test finishes. */
export function tempDir (): string {
  const dir = mkdtempSync(join(tmpdir(), 'casgate-test-'))
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** writeFiles writes name → content into dir and returns name → absolute path. */
export function writeFiles<K extends string> (dir: string, files: Record<K, string | Buffer>): Record<K, string> {
  const out = {} as Record<K, string>
  for (const [name, content] of Object.entries(files) as Array<[K, string | Buffer]>) {
    const path = join(dir, name)
    writeFileSync(path, content)
    out[name] = path
  }
  return out
}
