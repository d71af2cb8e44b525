import { createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto'
import type { ConfigIssue } from '../errors.js'
import { CertificateLoadError, readFileOrEnv } from '../tls/load-certificate.js'

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
  try {
    text = readFileOrEnv({ file: config.secretFile, env: config.secretEnv }, { file: 'secretFile', env: 'secretEnv' }, baseDir)
  } catch (err) {
    if (!(err instanceof CertificateLoadError)) throw err
    issues.push({ path: `${at}.${err.key}`, message: err.message.replace(/^cannot load certificate: /, ''), fix: err.fix })
    return undefined
  }
  if (text === undefined) return undefined
  if (text.length < MIN_SECRET_LENGTH) {
    issues.push({ path: `${at}.${config.secretFile !== undefined ? 'secretFile' : 'secretEnv'}`, message: `the secret has ${text.length} characters, fewer than ${MIN_SECRET_LENGTH}`, fix: 'generate one with: openssl rand -base64 48' })
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
