import { lstatSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CertificateLoadError, readFileOrEnv } from '../certificates/load-certificate.js'
import type { ConfigIssue } from '../errors/errors.js'
import type { AdminConfig } from './schema.js'
import { MIN_SECRET_LENGTH, writeStateSecret } from './secrets.js'

// The admin listener's token: every request carries it (Authorization: Bearer), the status page
// signs in with it once. From tokenFile/tokenEnv, else generated into the state directory at
// first start (like the session secret), never written in the YAML.

/** ADMIN_TOKEN_FILE is the generated token's name inside the state directory. */
export const ADMIN_TOKEN_FILE = 'admin-token'

/** AdminSettings is the admin block with its token loaded. */
export interface AdminSettings extends Omit<AdminConfig, 'tokenFile' | 'tokenEnv'> {
  token: string
  /** Where the token came from, for `casgate check` and the log (never the token itself). */
  tokenSource: 'file' | 'env' | 'state-file' | 'generated'
  /** The file that holds it (file, state-file, generated). */
  tokenPath: string | undefined
}

/** resolveAdmin loads the admin token; `write` false (casgate check) creates nothing. */
export function resolveAdmin (config: AdminConfig, state: { dir: string, write: boolean }, baseDir: string, issues: ConfigIssue[]): AdminSettings | undefined {
  const { tokenFile, tokenEnv, ...listener } = config
  if (tokenFile !== undefined && tokenEnv !== undefined) {
    issues.push({ path: 'admin.tokenEnv', message: 'tokenFile and tokenEnv are both set', fix: 'keep one of them' })
    return undefined
  }
  if (tokenFile !== undefined || tokenEnv !== undefined) {
    let token: string | undefined
    try {
      token = readFileOrEnv({ file: tokenFile, env: tokenEnv }, { file: 'tokenFile', env: 'tokenEnv' }, baseDir)?.trim()
    } catch (err) {
      if (!(err instanceof CertificateLoadError)) throw err
      issues.push({ path: `admin.${err.key}`, message: err.message.replace(/^cannot load certificate: /, ''), fix: err.fix })
      return undefined
    }
    if (token === undefined || token.length < MIN_SECRET_LENGTH) {
      issues.push({ path: `admin.${tokenFile !== undefined ? 'tokenFile' : 'tokenEnv'}`, message: `the token has ${token?.length ?? 0} characters, fewer than ${MIN_SECRET_LENGTH}`, fix: 'write a longer one: openssl rand -base64 48' })
      return undefined
    }
    return { ...listener, token, tokenSource: tokenFile !== undefined ? 'file' : 'env', tokenPath: tokenFile === undefined ? undefined : join(baseDir, tokenFile) }
  }
  const file = join(state.dir, ADMIN_TOKEN_FILE)
  try {
    const stat = lstatSync(file)
    if (!stat.isFile() || (process.platform !== 'win32' && (stat.mode & 0o077) !== 0)) {
      issues.push({ path: `stateDir (${file})`, message: 'the admin token must be a regular file readable by its owner only', fix: `run: chmod 600 ${file} (or remove it: a new one is generated at start)` })
      return undefined
    }
    const token = readFileSync(file, 'utf8').trim()
    if (token.length < MIN_SECRET_LENGTH) {
      issues.push({ path: `stateDir (${file})`, message: `the admin token has ${token.length} characters, fewer than ${MIN_SECRET_LENGTH}`, fix: `remove it (a new one is generated at start), or write a longer one: openssl rand -base64 48 > ${file}` })
      return undefined
    }
    return { ...listener, token, tokenSource: 'state-file', tokenPath: file }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      issues.push({ path: `stateDir (${file})`, message: `cannot read the admin token (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: 'give casgate\'s user access to the state directory, or set admin.tokenFile' })
      return undefined
    }
  }
  if (!state.write) return { ...listener, token: '', tokenSource: 'generated', tokenPath: file }
  try {
    // Another process (a cluster worker, a second instance) may have written it first: check it as read.
    const token = writeStateSecret(state.dir, file).trim()
    if (token.length < MIN_SECRET_LENGTH) {
      issues.push({ path: `stateDir (${file})`, message: `the admin token has ${token.length} characters, fewer than ${MIN_SECRET_LENGTH}`, fix: 'remove it; a new one is generated at start' })
      return undefined
    }
    return { ...listener, token, tokenSource: 'generated', tokenPath: file }
  } catch (err) {
    issues.push({ path: `stateDir (${state.dir})`, message: `cannot create the admin token (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: 'make the directory writable by casgate\'s user only, set stateDir, or set admin.tokenFile' })
    return undefined
  }
}
