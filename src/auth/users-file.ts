import { readFileSync } from 'node:fs'
import { normalizeUser } from './user-name.js'
import { parseScryptHash, type ScryptHash } from './password-hash.js'

/** UsersFileProblem is a line of a users file that cannot be used. */
export interface UsersFileProblem {
  line: number
  message: string
}

/**
 * parseUsersFile reads "user:$scrypt$…" lines ('#' starts a comment). User names are matched as
 * Windows does: CONTOSO\jdoe, jdoe@contoso.com and JDoe are one user.
 */
export function parseUsersFile (text: string): { users: Map<string, ScryptHash>, problems: UsersFileProblem[] } {
  const users = new Map<string, ScryptHash>()
  const problems: UsersFileProblem[] = []
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const colon = line.indexOf(':')
    if (colon <= 0) {
      problems.push({ line: i + 1, message: 'expected user:$scrypt$…' })
      return
    }
    const user = normalizeUser(line.slice(0, colon))
    const hash = parseScryptHash(line.slice(colon + 1))
    if (typeof hash === 'string') problems.push({ line: i + 1, message: `${user}: ${hash}` })
    else if (users.has(user)) problems.push({ line: i + 1, message: `${user} is listed twice` })
    else users.set(user, hash)
  })
  return { users, problems }
}

/** readUsersFile reads and parses a users file; throws with the file's error code when unreadable. */
export function readUsersFile (path: string): ReturnType<typeof parseUsersFile> {
  return parseUsersFile(readFileSync(path, 'utf8'))
}
