import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { hashPassword } from '../../src/auth/password-hash.js'
import { writeFiles } from './tmp.js'

// One users file per set of passwords and test file: scrypt at its lowest accepted cost, hashed
// once, kept for the whole file (test-scoped directories would be gone by the next test).

const dir = mkdtempSync(join(tmpdir(), 'casgate-users-'))
process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
const files = new Map<string, Promise<string>>()

/** usersFile is the path of a casgate users file holding `passwords` (user → password). */
export function usersFile (passwords: Readonly<Record<string, string>>): Promise<string> {
  const key = JSON.stringify(Object.entries(passwords).sort())
  let file = files.get(key)
  if (file === undefined) {
    file = (async () => {
      const lines = await Promise.all(Object.entries(passwords).map(async ([user, password]) => `${user}:${await hashPassword(password, 14)}`))
      return writeFiles(dir, { [`users-${files.size}.txt`]: lines.join('\n') + '\n' })[`users-${files.size}.txt`]!
    })()
    files.set(key, file)
  }
  return file
}

/** sharedFile writes a file that lives as long as the test file (a secret shared by two gateways). */
export function sharedFile (name: string, content: string): string {
  return writeFiles(dir, { [name]: content })[name]!
}
