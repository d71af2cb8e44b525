import { createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { ConfigIssue } from '../errors.js'

/** MIN_SECRET_LENGTH keeps HMAC and session keys out of guessing range (32 characters). */
export const MIN_SECRET_LENGTH = 32

/** SecretSource says where a key came from, for `casgate check` and /affinity. */
export type SecretSource = 'file' | 'env' | 'certificate' | 'random'

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
  let text: string | undefined
  let path = ''
  if (config.secretFile !== undefined) {
    path = `${at}.secretFile`
    try {
      text = readFileSync(resolve(baseDir, config.secretFile), 'utf8').split(/\r?\n/)[0]!
    } catch (err) {
      issues.push({ path, message: `cannot read ${config.secretFile} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: 'check the path; relative paths start at the configuration file\'s directory' })
      return undefined
    }
  } else if (config.secretEnv !== undefined) {
    path = `${at}.secretEnv`
    text = process.env[config.secretEnv]
    if (text === undefined) {
      issues.push({ path, message: `environment variable ${config.secretEnv} is not set`, fix: `export ${config.secretEnv} before starting casgate` })
      return undefined
    }
  } else {
    return undefined
  }
  if (text.length < MIN_SECRET_LENGTH) {
    issues.push({ path, message: `the secret has ${text.length} characters, fewer than ${MIN_SECRET_LENGTH}`, fix: 'generate one with: openssl rand -base64 48' })
    return undefined
  }
  return text
}

/**
 * resolveSecret loads the secret a block (`affinity`, `preauth`) names. Without one configured
 * it is derived (HKDF, with the block's name as context) from the first terminated host's
 * private key: instances sharing a certificate then agree (same hashes, each other's cookies)
 * with nothing secret to copy around. Each block gets its own key either way.
 */
export function resolveSecret (config: SecretConfig, at: string, hosts: ReadonlyArray<object>, baseDir: string, issues: ConfigIssue[]): { key: KeyObject, source: SecretSource } {
  const text = readSecret(config, at, baseDir, issues)
  const info = `casgate ${at} secret v1`
  if (text !== undefined) {
    return { key: createSecretKey(Buffer.from(hkdfSync('sha256', Buffer.from(text, 'utf8'), 'casgate', info, 32))), source: config.secretFile !== undefined ? 'file' : 'env' }
  }
  const host = hosts.find((candidate): candidate is { certificate: { key: KeyObject } } => 'certificate' in candidate && candidate.certificate !== undefined)
  if (host) {
    const keyDer = host.certificate.key.export({ type: 'pkcs8', format: 'der' })
    return { key: createSecretKey(Buffer.from(hkdfSync('sha256', keyDer, 'casgate', info, 32))), source: 'certificate' }
  }
  return { key: createSecretKey(randomBytes(32)), source: 'random' }
}
