import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors, jwtVerify, type FetchImplementation, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { JWKS_MAX_BYTES, type BearerAlgorithm, type BearerSettings } from '../config/bearer-config.js'
import { createHash } from 'node:crypto'
import { boundedCache } from '../util/bounded-cache.js'

/** VERIFIED_FOR_MS is how long a verified token is taken without checking its signature again. */
const VERIFIED_FOR_MS = 5 * 60_000

// Bearer tokens of hybrid modern authentication (Outlook, EWS, ActiveSync, MAPI, OAB and
// Autodiscover clients signed in with Entra ID). The shape check keeps arbitrary strings from
// skipping preauthentication; the validator checks what Microsoft says a resource must check:
// signature against the tenant's keys, iss, aud, exp and nbf
// (https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-tokens).
// Reasons are fixed words for the access log; the token and its claims are never in them.

/**
 * BEARER_TOKEN_MAX_CHARS bounds a token. Entra ID keeps its tokens well under it: past 200
 * groups it sends an overage claim instead of the list, for header size limits.
 */
export const BEARER_TOKEN_MAX_CHARS = 16 * 1024
const HEADER_MAX_CHARS = 2048
const SIGNATURE_MAX_CHARS = 1024 // an RSA-4096 signature is 683 base64url characters

/** BearerRejection is why a token did not pass, as written in the access log. */
export type BearerRejection =
  | 'malformed' | 'algorithm' | 'signature' | 'unknown-key' | 'expired' | 'not-yet-valid'
  | 'issuer' | 'audience' | 'claims' | 'jwks-unavailable' | 'invalid'

/** BearerResult is the outcome of BearerValidator.validate. */
export type BearerResult = { ok: true, subject: string | undefined } | { ok: false, reason: BearerRejection }

const SEGMENT = /^[A-Za-z0-9_-]+$/

function jsonObject (segment: string): Record<string, unknown> | undefined {
  // base64url without padding never leaves one character over (RFC 4648 §5, RFC 7515 §2).
  if (!SEGMENT.test(segment) || segment.length % 4 === 1) return undefined
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** jwtAlg returns the protected header's alg of a compact JWS whose header and payload are JSON objects, or undefined. */
function jwtAlg (token: string): string | undefined {
  if (typeof token !== 'string' || token.length > BEARER_TOKEN_MAX_CHARS) return undefined
  const parts = token.split('.')
  // Three parts: a JWS. Five are a JWE (RFC 7516 §7.1), which casgate cannot read.
  if (parts.length !== 3) return undefined
  const [header, payload, signature] = parts as [string, string, string]
  if (header.length > HEADER_MAX_CHARS || signature.length > SIGNATURE_MAX_CHARS) return undefined
  if (!SEGMENT.test(signature) || signature.length % 4 === 1) return undefined
  const alg = jsonObject(header)?.alg
  if (typeof alg !== 'string' || alg === '') return undefined
  return jsonObject(payload) === undefined ? undefined : alg
}

/**
 * looksLikeJwt says whether a string has the shape of a signed JWT (RFC 7519 §7.2): three
 * unpadded base64url parts, at most 16 KiB, a JSON object header with an alg other than none,
 * a JSON object payload and a signature. It checks no signature; it never throws.
 */
export function looksLikeJwt (token: string): boolean {
  const alg = jwtAlg(token)
  return alg !== undefined && alg.toLowerCase() !== 'none'
}

/** bearerToken takes the token from an Authorization header (RFC 6750 §2.1), or undefined. */
export function bearerToken (authorization: string | undefined): string | undefined {
  const match = authorization === undefined ? null : /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization)
  return match?.[1]
}

/** JwksUnavailable marks a key set that could not be fetched or read: not the client's fault. */
class JwksUnavailable extends Error {}

function reasonOf (err: unknown): BearerRejection {
  if (err instanceof JwksUnavailable || err instanceof errors.JWKSInvalid || err instanceof errors.JWKSTimeout) return 'jwks-unavailable'
  if (err instanceof errors.JWTExpired) return 'expired'
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return 'issuer'
    if (err.claim === 'aud') return 'audience'
    if (err.claim === 'nbf') return 'not-yet-valid'
    return 'claims'
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature'
  if (err instanceof errors.JOSEAlgNotAllowed) return 'algorithm'
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) return 'unknown-key'
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid || err instanceof errors.JOSENotSupported) return 'malformed'
  return 'invalid'
}

// The name for the access log: the UPN of v1.0 tokens, preferred_username of v2.0 ones, else the
// object ID (stable, unlike sub, which differs per application).
function subjectOf (payload: JWTPayload): string | undefined {
  for (const claim of ['upn', 'preferred_username', 'unique_name', 'oid', 'sub']) {
    const value = payload[claim]
    if (typeof value === 'string' && value !== '') return value.slice(0, 256)
  }
  return undefined
}

/** BearerValidatorOptions are for tests: the clock claims are checked against. */
export interface BearerValidatorOptions {
  now?: () => Date
}

/**
 * BearerValidator checks Bearer tokens against one tenant: signature with its keys (a file, or a
 * URL fetched with a bounded timeout, cached for cacheMaxAgeMs, fetched again for an unknown
 * kid at most once per cooldownMs), iss, aud, exp and nbf with clock tolerance, and the algorithm.
 */
export class BearerValidator {
  readonly #settings: BearerSettings
  readonly #keys: JWTVerifyGetKey
  readonly #now: () => Date
  readonly #closing = new AbortController()
  readonly #reload: (() => Promise<void>) | undefined

  /** SHA-256 of tokens verified lately → who they speak for and until when. */
  readonly #verified = boundedCache<string, { subject: string | undefined, until: number }>(10_000)

  constructor (settings: BearerSettings, options: BearerValidatorOptions = {}) {
    this.#settings = settings
    this.#now = options.now ?? (() => new Date())
    const { jwks } = settings
    if (jwks.kind === 'file') {
      this.#keys = createLocalJWKSet(jwks.keys)
      return
    }
    const remote = createRemoteJWKSet(jwks.url, {
      timeoutDuration: jwks.timeoutMs,
      cacheMaxAge: jwks.cacheMaxAgeMs,
      cooldownDuration: jwks.cooldownMs,
      [customFetch]: this.#fetch
    })
    this.#reload = remote.reload
    this.#keys = async (header, token) => {
      try {
        return await remote(header, token)
      } catch (err) {
        // No matching key is the token's problem (401); anything else is the key set's (503).
        if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err
        throw new JwksUnavailable('jwks unavailable', { cause: err })
      }
    }
  }

  // Reads at most JWKS_MAX_BYTES, and aborts on close() as well as on jose's timeout.
  readonly #fetch: FetchImplementation = async (url, options) => {
    const signal = AbortSignal.any([options.signal, this.#closing.signal])
    const response = await fetch(url, { ...options, signal })
    const declared = Number(response.headers.get('content-length') ?? 0)
    if (declared > JWKS_MAX_BYTES) {
      await response.body?.cancel()
      throw new Error('jwks response too large')
    }
    const chunks: Uint8Array[] = []
    let size = 0
    for await (const chunk of response.body ?? []) {
      size += chunk.byteLength
      if (size > JWKS_MAX_BYTES) throw new Error('jwks response too large')
      chunks.push(chunk)
    }
    return new Response(Buffer.concat(chunks), { status: response.status })
  }

  /** validate checks one token; it never throws and never says more than a reason word. */
  async validate (token: string): Promise<BearerResult> {
    const alg = jwtAlg(token)
    if (alg === undefined) return { ok: false, reason: 'malformed' }
    const { issuer, audience, algorithms, clockToleranceMs } = this.#settings
    // Checked before any key is looked up: a token naming HS256 or none never reaches the key
    // set, so a public key can never be used as an HMAC secret (RFC 8725 §2.1, §3.1).
    if (!(algorithms as readonly string[]).includes(alg)) return { ok: false, reason: 'algorithm' }
    try {
      const key = createHash('sha256').update(token).digest('base64')
      // The cache runs on the process clock, as the key set's cache does; exp on the token's clock.
      const known = this.#verified.get(key)
      if (known !== undefined && known.until > Date.now()) return { ok: true, subject: known.subject }
      const { payload } = await jwtVerify(token, this.#keys, {
        issuer,
        audience,
        algorithms: algorithms as BearerAlgorithm[],
        clockTolerance: clockToleranceMs / 1000,
        currentDate: this.#now(),
        requiredClaims: ['exp']
      })
      const subject = subjectOf(payload)
      // Outlook sends its token with every request: one signature check per token and few
      // minutes, not one per request. Kept until exp (minus the tolerance) and never longer than
      // VERIFIED_FOR_MS, so a key the tenant withdrew stops working soon too. Hashes only.
      const left = Math.min(VERIFIED_FOR_MS, Number(payload.exp) * 1000 - clockToleranceMs - this.#now().getTime())
      if (left > 0) this.#verified.set(key, { subject, until: Date.now() + left })
      return { ok: true, subject }
    } catch (err) {
      return { ok: false, reason: reasonOf(err) }
    }
  }

  /** prefetch loads a key set URL now (at start, or for `casgate check`); true when the keys are there. */
  async prefetch (): Promise<boolean> {
    if (this.#reload === undefined) return true
    try {
      await this.#reload()
      return true
    } catch {
      return false
    }
  }

  /** close aborts a key set fetch in flight and any later one (keys already held still verify). */
  close (): void {
    this.#closing.abort()
  }
}
