import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { errorCatalog } from '../src/errors/errors.js'

describe('error registry', () => {
  const docs = readFileSync('docs/errors.md', 'utf8')
  for (const [code, entry] of Object.entries(errorCatalog)) {
    it(`${code} is documented with its status`, () => {
      const row = docs.split('\n').find((line) => line.startsWith(`| \`${code}\``))
      expect(row, `docs/errors.md has no row for ${code}`).toBeDefined()
      if (entry.status !== 500 || code === 'CASGATE_ERR_INTERNAL') expect(row).toContain(String(entry.status))
    })
  }
})
