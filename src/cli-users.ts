import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { normalizeUser } from './auth/user-name.js'
import { hashPassword } from './auth/password-hash.js'

export const USERS_USAGE = `Usage: casgate users add FILE USER [--password-env VAR]

Adds USER to a local users file (preauth.usersFile), or replaces its password, storing an scrypt
hash. The password comes from the environment variable VAR, else from the first line of standard
input — never from the command line, which other users of the machine can read.

  echo 'S3cret-passphrase' | casgate users add users.txt jdoe`

async function readPassword (values: Record<string, string | boolean | undefined>): Promise<string> {
  const variable = values['password-env']
  if (typeof variable === 'string') {
    const value = process.env[variable]
    if (value === undefined) throw new Error(`environment variable ${variable} is not set`)
    return value
  }
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0]!
}

/** usersCommand runs `casgate users …`; resolves with the exit status. */
export async function usersCommand (positionals: string[], values: Record<string, string | boolean | undefined>): Promise<number> {
  const [action, file, user] = positionals
  if (action !== 'add' || file === undefined || user === undefined || positionals.length !== 3) {
    process.stderr.write(`${USERS_USAGE}\n`)
    return 1
  }
  const name = normalizeUser(user)
  if (name === '' || name.includes(':')) {
    process.stderr.write('casgate users: a user name must not be empty or contain ":"\n')
    return 1
  }
  const password = await readPassword(values)
  if (password.length < 8) {
    process.stderr.write('casgate users: the password must have at least 8 characters\n')
    return 1
  }
  const line = `${name}:${await hashPassword(password)}`
  const lines = existsSync(file) ? readFileSync(file, 'utf8').split(/\r?\n/).filter((l) => l !== '') : ['# casgate users: user:$scrypt$… (casgate users add FILE USER)']
  const at = lines.findIndex((l) => normalizeUser(l.split(':')[0] ?? '') === name && !l.startsWith('#'))
  if (at === -1) lines.push(line)
  else lines[at] = line
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 })
  process.stdout.write(`${at === -1 ? 'added' : 'updated'} ${name} in ${file}\n`)
  return 0
}
