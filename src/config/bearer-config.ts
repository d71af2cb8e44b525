import { createPublicKey, type JsonWebKey } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { isIP } from 'node:net'
import { resolve } from 'node:path'
import type { JSONWebKeySet, JWK } from 'jose'
import type { z } from 'zod'
import type { ConfigIssue } from '../errors/errors.js'
import type { bearerSchema } from './schema.js'

/** JWKS_MAX_BYTES bounds a key set, read from a file or fetched (Entra's is about 10 KiB). */
export const JWKS_MAX_BYTES = 1024 * 1024

// The preauth.bearer block, resolved: lists normalised, the key set file loaded and checked at
// start (a key set that cannot verify anything is a configuration error, not a 401 per request),
// the URL held to https. Microsoft's guidance for the keys and issuers:
// https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-tokens

/** BearerConfig is the preauth.bearer block as written. */
export type BearerConfig = z.infer<typeof bearerSchema>
/** BearerAlgorithm is one accepted JWS algorithm. */
export type BearerAlgorithm = BearerConfig['algorithms'][number]

/** JwksSource is where the validator finds its keys. */
export type JwksSource =
  | { kind: 'file', file: string, keys: JSONWebKeySet }
  | { kind: 'url', url: URL, timeoutMs: number, cacheMaxAgeMs: number, cooldownMs: number }

/** BearerSettings is what BearerValidator needs. */
export interface BearerSettings {
  issuer: string[]
  audience: string[]
  algorithms: BearerAlgorithm[]
  clockToleranceMs: number
  jwks: JwksSource
}

const ENTRA_KEYS_HINT = 'https://login.microsoftonline.com/<tenant-id>/discovery/v2.0/keys'

// Which key types can verify which algorithms (RFC 7518 §3.1, RFC 8037 §3.1).
function keyFits (jwk: JWK, alg: BearerAlgorithm): boolean {
  if (jwk.alg !== undefined && jwk.alg !== alg) return false
  if (alg.startsWith('RS') || alg.startsWith('PS')) return jwk.kty === 'RSA'
  if (alg === 'ES256') return jwk.kty === 'EC' && jwk.crv === 'P-256'
  if (alg === 'ES384') return jwk.kty === 'EC' && jwk.crv === 'P-384'
  if (alg === 'ES512') return jwk.kty === 'EC' && jwk.crv === 'P-521'
  return jwk.kty === 'OKP' && jwk.crv === 'Ed25519'
}

/** unusable says why a key cannot verify tokens, or undefined when it can. */
function unusable (jwk: JWK, algorithms: readonly BearerAlgorithm[]): string | undefined {
  if (jwk.use !== undefined && jwk.use !== 'sig') return `is for "${String(jwk.use)}", not signatures`
  if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes('verify')) return 'does not allow verify'
  if (!algorithms.some((alg) => keyFits(jwk, alg))) return `fits none of the algorithms ${algorithms.join(', ')}`
  try {
    const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' })
    const bits = key.asymmetricKeyDetails?.modulusLength
    // jose refuses RSA keys under 2048 bits for RS*/PS* (RFC 7518 §3.3).
    if (jwk.kty === 'RSA' && (bits === undefined || bits < 2048)) return `is a ${bits ?? '?'}-bit RSA key (2048 at least)`
  } catch {
    return 'does not parse as a public key'
  }
  return undefined
}

function loadKeyFile (file: string, shown: string, at: string, algorithms: readonly BearerAlgorithm[], issues: ConfigIssue[]): JSONWebKeySet | undefined {
  const path = `${at}.jwks.file`
  const fix = `download the tenant's keys (curl -o jwks.json ${ENTRA_KEYS_HINT}), or use jwks: { url: ${ENTRA_KEYS_HINT} }`
  let parsed: unknown
  try {
    if (statSync(file).size > JWKS_MAX_BYTES) {
      issues.push({ path, message: `${shown} is larger than ${JWKS_MAX_BYTES} bytes`, fix })
      return undefined
    }
    parsed = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    issues.push({ path, message: code === undefined ? `${shown} is not JSON (${(err as Error).message})` : `cannot read ${shown} (${code})`, fix })
    return undefined
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys
  if (!Array.isArray(keys)) {
    issues.push({ path, message: `${shown} is not a JSON Web Key Set (no "keys" list)`, fix })
    return undefined
  }
  const usable: JWK[] = []
  let secret = false
  keys.forEach((jwk: unknown, index) => {
    if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) return
    const key = jwk as JWK
    const name = `key ${index}${typeof key.kid === 'string' ? ` (kid ${key.kid.slice(0, 40)})` : ''}`
    // A private or symmetric key here would mean the signing secret has leaked into casgate's
    // configuration; refuse it rather than silently use its public half.
    if (key.d !== undefined || key.k !== undefined || key.kty === 'oct') {
      secret = true
      issues.push({ path, message: `${shown}: ${name} holds private or secret key material`, fix: 'publish only the public keys (drop d, p, q, dp, dq, qi and k), and replace the leaked key' })
      return
    }
    if (unusable(key, algorithms) === undefined) usable.push(key)
  })
  if (secret) return undefined
  if (usable.length === 0) {
    issues.push({ path, message: `${shown} holds no public signing key usable with ${algorithms.join(', ')}`, fix })
    return undefined
  }
  return { keys: usable }
}

/** isLoopbackHost says whether a URL host names this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost (hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  if (host === 'localhost' || host === '::1') return true
  return isIP(host) === 4 && host.startsWith('127.')
}

function checkIssuers (issuer: readonly string[], at: string, issues: ConfigIssue[]): void {
  const fix = 'name your tenant ID: https://sts.windows.net/<tenant-id>/ (v1.0 tokens) or https://login.microsoftonline.com/<tenant-id>/v2.0'
  issuer.forEach((value, index) => {
    const path = `${at}.issuer${issuer.length > 1 ? `[${index}]` : ''}`
    // Entra ID writes the tenant ID in iss; these placeholders never appear in a real token,
    // so no token would pass (access-tokens, "Validate the issuer").
    if (/^https:\/\/(login\.microsoftonline\.com|sts\.windows\.net)\/(common|organizations|consumers|\{[^}]*\})(\/|$)/i.test(value)) {
      issues.push({ path, message: `${value} is a placeholder Entra ID never writes in a token's iss`, fix })
    } else if (/^https:\/\/sts\.windows\.net\/[^/]+$/i.test(value)) {
      // iss is compared exactly (OpenID Connect Core §3.1.3.7), and v1.0 tokens end it with a slash.
      issues.push({ path, message: `${value} lacks the trailing slash v1.0 tokens carry`, fix: `write ${value}/` })
    }
  })
}

/**
 * resolveBearer checks the preauth.bearer block at `at` (e.g. 'preauth.bearer'): loads and checks
 * a key set file, holds a key set URL to https (http only to loopback), and refuses issuers no
 * Entra token carries. Problems go to `issues`; undefined when the block cannot be used.
 */
export function resolveBearer (config: BearerConfig, at: string, baseDir: string, issues: ConfigIssue[]): BearerSettings | undefined {
  const before = issues.length
  const issuer = typeof config.issuer === 'string' ? [config.issuer] : [...config.issuer]
  const audience = typeof config.audience === 'string' ? [config.audience] : [...config.audience]
  const algorithms = [...new Set(config.algorithms)]
  checkIssuers(issuer, at, issues)
  let jwks: JwksSource | undefined
  if ('file' in config.jwks) {
    const file = resolve(baseDir, config.jwks.file)
    const keys = loadKeyFile(file, config.jwks.file, at, algorithms, issues)
    if (keys !== undefined) jwks = { kind: 'file', file, keys }
  } else {
    const { url: text, timeoutMs, cacheMaxAgeMs, cooldownMs } = config.jwks
    let url: URL | undefined
    try {
      url = new URL(text)
    } catch {
      issues.push({ path: `${at}.jwks.url`, message: `${text} is not a URL`, fix: `write it like ${ENTRA_KEYS_HINT}` })
    }
    if (url !== undefined) {
      // The key set decides which tokens pass: fetched over plain HTTP, anyone on the path
      // could publish their own keys. Loopback is allowed for a local key cache or a test.
      if (url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
        jwks = { kind: 'url', url, timeoutMs, cacheMaxAgeMs, cooldownMs }
      } else {
        issues.push({
          path: `${at}.jwks.url`,
          message: url.protocol === 'http:' ? `${text} is plain http:// to a host that is not loopback` : `${text} is not an https:// URL`,
          fix: `use https://, e.g. ${ENTRA_KEYS_HINT}`
        })
      }
    }
  }
  if (jwks === undefined || issues.length > before) return undefined
  return { issuer, audience, algorithms, clockToleranceMs: config.clockToleranceMs, jwks }
}
