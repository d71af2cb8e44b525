import { createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto'
import { closeSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import type { ConfigIssue } from '../errors/errors.js'
import { CertificateLoadError, readFileOrEnv } from '../certificates/load-certificate.js'

/** MIN_SECRET_LENGTH keeps HMAC and session keys out of guessing range (32 characters). */
export const MIN_SECRET_LENGTH = 32

/** SecretSource says where the affinity key came from, for `casgate check` and /affinity. */
export type SecretSource = 'file' | 'env' | 'certificate' | 'random'

/**
 * SessionSecretSource says where the preauth keys came from: the configuration (file, env),
 * casgate's state file (state-file), or generated at this start (generated; written to the
 * state file unless the configuration was only checked).
 */
export type SessionSecretSource = 'file' | 'env' | 'state-file' | 'generated'

/** SESSION_SECRET_FILE is the name of the generated session secret inside the state directory. */
export const SESSION_SECRET_FILE = 'session-secret'

/** SecretConfig is the pair of keys a block names its secret with. */
export interface SecretConfig {
  secretFile?: string | undefined
  secretEnv?: string | undefined
}

function readSecret (config: SecretConfig, at: string, baseDir: string, issues: ConfigIssue[]): string | undefined {
  if (config.secretFile !== undefined && config.secretEnv !== undefined) {
    issues.push({ path: `${at}.secretEnv`, message: 'secretFile and secretEnv are both set', fix: 'keep one of them' })
    return undefined
  }
  try {
    return readFileOrEnv({ file: config.secretFile, env: config.secretEnv }, { file: 'secretFile', env: 'secretEnv' }, baseDir)
  } catch (err) {
    if (!(err instanceof CertificateLoadError)) throw err
    issues.push({ path: `${at}.${err.key}`, message: err.message.replace(/^cannot load certificate: /, ''), fix: err.fix })
    return undefined
  }
}

function tooShort (text: string): string | undefined {
  return text.length < MIN_SECRET_LENGTH ? `the secret has ${text.length} characters, fewer than ${MIN_SECRET_LENGTH}` : undefined
}

/** deriveKey turns a configured secret into the key of one block (HKDF, the block's name as context). */
function deriveKey (text: string, at: string): KeyObject {
  return createSecretKey(Buffer.from(hkdfSync('sha256', Buffer.from(text, 'utf8'), 'casgate', `casgate ${at} secret v1`, 32)))
}

/**
 * resolveSecret loads the affinity secret. Without one configured it is derived (HKDF, with the
 * block's name as context) from the first terminated host's private key: instances sharing a
 * certificate then place users alike with nothing secret to copy around. That is acceptable
 * for affinity, whose hashes decide where a request goes, never whether; the session secret
 * must not be derived so (resolveSessionSecrets).
 */
export function resolveSecret (config: SecretConfig, at: string, hosts: ReadonlyArray<object>, baseDir: string, issues: ConfigIssue[]): { key: KeyObject, source: SecretSource } {
  const text = readSecret(config, at, baseDir, issues)
  if (text !== undefined) {
    const short = tooShort(text)
    if (short === undefined) return { key: deriveKey(text, at), source: config.secretFile !== undefined ? 'file' : 'env' }
    issues.push({ path: `${at}.${config.secretFile !== undefined ? 'secretFile' : 'secretEnv'}`, message: short, fix: 'generate one with: openssl rand -base64 48' })
  } else {
    const host = hosts.find((candidate): candidate is { certificate: { key: KeyObject } } => 'certificate' in candidate && candidate.certificate !== undefined)
    if (host) {
      const keyDer = host.certificate.key.export({ type: 'pkcs8', format: 'der' })
      return { key: createSecretKey(Buffer.from(hkdfSync('sha256', keyDer, 'casgate', `casgate ${at} secret v1`, 32))), source: 'certificate' }
    }
  }
  return { key: createSecretKey(randomBytes(32)), source: 'random' }
}

/** resolveStateDir is where casgate keeps state: stateDir, else systemd's $STATE_DIRECTORY, else "state" next to the configuration. */
export function resolveStateDir (configured: string | undefined, baseDir: string, env: NodeJS.ProcessEnv = process.env): string {
  if (configured !== undefined) return resolve(baseDir, configured)
  // systemd (StateDirectory=) sets an absolute path, colon-separated when several are named.
  const systemd = env.STATE_DIRECTORY?.split(':')[0]
  return systemd ? resolve(systemd) : resolve(baseDir, 'state')
}

/** SessionSecrets are the preauth keys, newest (the one that seals) first. */
export interface SessionSecrets {
  keys: KeyObject[]
  source: SessionSecretSource
  /** The file the keys come from or go to (configured secretFile or the state file). */
  file: string | undefined
  /** False when the keys were generated for this run only (the configuration was checked, not started). */
  stored: boolean
}

function keysOf (text: string, at: string, path: string, issues: ConfigIssue[], fix: string): KeyObject[] | undefined {
  const lines = text.split(/\r?\n/).map((line) => line.trim())
  const several = lines.filter((line) => line !== '').length > 1
  const keys: KeyObject[] = []
  let ok = true
  lines.forEach((line, i) => {
    if (line === '') return
    const short = tooShort(line)
    if (short !== undefined) {
      issues.push({ path: several ? `${path} (line ${i + 1})` : path, message: short, fix })
      ok = false
    }
    keys.push(deriveKey(line, at))
  })
  if (keys.length === 0) {
    issues.push({ path, message: 'holds no secret', fix })
    return undefined
  }
  return ok ? keys : undefined
}

/** writeStateSecret creates a state file with a new random secret atomically: written in full under a temporary name, then linked (never overwriting). */
export function writeStateSecret (dir: string, file: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const text = randomBytes(32).toString('base64url') + '\n'
  const temporary = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}`)
  const fd = openSync(temporary, 'wx', 0o600)
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  try {
    linkSync(temporary, file)
    return text
  } catch (err) {
    // Another instance (or cluster worker) sharing the directory won the race: use its secret.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(file, 'utf8')
    throw err
  } finally {
    unlinkSync(temporary)
  }
}

/**
 * resolveSessionSecrets loads the preauth keys: every line of secretFile/secretEnv (the first
 * seals, all open: rotation), else the state file `<stateDir>/session-secret`, generated with
 * 32 random bytes (mode 0600) on first start. Never derived from the TLS private key: with
 * Extended Protection every Exchange server holds that key, and the session cookie carries the
 * password. With `write` false (casgate check, or a configuration that already failed) nothing
 * is created: a missing state file yields a key for this run only (stored: false).
 */
export function resolveSessionSecrets (config: SecretConfig, at: string, state: { dir: string, write: boolean }, baseDir: string, issues: ConfigIssue[]): SessionSecrets | undefined {
  const rotate = 'one secret per line (at least 32 characters each; openssl rand -base64 48 makes one); the first seals new sessions, the others only open existing ones'
  if (config.secretFile !== undefined || config.secretEnv !== undefined) {
    const key = config.secretFile !== undefined ? 'secretFile' : 'secretEnv'
    const text = readSecret(config, at, baseDir, issues)
    if (text === undefined) return undefined
    const keys = keysOf(text, at, `${at}.${key}`, issues, `write ${rotate}`)
    return keys && { keys, source: key === 'secretFile' ? 'file' : 'env', file: config.secretFile === undefined ? undefined : resolve(baseDir, config.secretFile), stored: true }
  }
  const file = join(state.dir, SESSION_SECRET_FILE)
  let text: string
  try {
    const stat = lstatSync(file)
    if (!stat.isFile()) {
      issues.push({ path: `stateDir (${file})`, message: 'the session secret is not a regular file', fix: `remove it; casgate generates a new one at start (signing everyone out), or set ${at}.secretFile` })
      return undefined
    }
    // The file opens every session (and so every password in them): owner only.
    if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
      issues.push({ path: `stateDir (${file})`, message: `the session secret is readable or writable by others than its owner (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')})`, fix: `run: chmod 600 ${file}` })
      return undefined
    }
    text = readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ENOENT') {
      issues.push({ path: `stateDir (${file})`, message: `cannot read the session secret (${code ?? String(err)})`, fix: 'give casgate\'s user access to the state directory, or set stateDir' })
      return undefined
    }
    if (!state.write) return { keys: [createSecretKey(randomBytes(32))], source: 'generated', file, stored: false }
    try {
      text = writeStateSecret(state.dir, file)
    } catch (writeErr) {
      issues.push({ path: `stateDir (${state.dir})`, message: `cannot create the session secret (${(writeErr as NodeJS.ErrnoException).code ?? String(writeErr)})`, fix: `make the directory writable by casgate's user only, set stateDir to such a directory, or set ${at}.secretFile` })
      return undefined
    }
    const keys = keysOf(text, at, `stateDir (${file})`, issues, `remove the file; casgate generates a new one at start, or write ${rotate}`)
    return keys && { keys, source: 'generated', file, stored: true }
  }
  const keys = keysOf(text, at, `stateDir (${file})`, issues, `remove the file; casgate generates a new one at start (signing everyone out), or write ${rotate}`)
  return keys && { keys, source: 'state-file', file, stored: true }
}
