import { createPublicKey, generateKeyPairSync, type JsonWebKey } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import fc from 'fast-check'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose'
import { afterEach, describe, expect, it, onTestFinished, vi } from 'vitest'
import { resolveBearer, type BearerSettings } from '../src/config/bearer-config.js'
import { zodIssuesToConfigIssues } from '../src/config/issues.js'
import { bearerSchema, preauthSchema } from '../src/config/schema.js'
import type { ConfigIssue } from '../src/errors/errors.js'
import { bearerToken, BearerValidator, looksLikeJwt } from '../src/preauth/bearer-token.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

const TENANT = '8eaef023-2b34-4da1-9baa-8bc8c9d6a490'
const OTHER_TENANT = '82229342-1101-4ab6-817b-70c0747630f3'
const ISSUER = `https://sts.windows.net/${TENANT}/`
const AUDIENCE = 'https://mail.contoso.com'
const NOW = 1_750_000_000 // seconds; the validator's injected clock
const clock = { now: () => new Date(NOW * 1000) }

interface Signer { kid: string, privateKey: CryptoKey, jwk: JWK }

async function signer (kid: string): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
  return { kid, privateKey, jwk: { ...await exportJWK(publicKey), kid, use: 'sig' } }
}

// An Entra ID v1.0 access token as Outlook sends it to on-premises Exchange.
function token (by: Signer, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, iat: NOW, nbf: NOW, exp: NOW + 3600, upn: 'jdoe@contoso.com', ver: '1.0', tid: TENANT, ...claims })
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: by.kid, ...header })
    .sign(by.privateKey)
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

function fileSettings (jwk: JWK[], extra: Record<string, unknown> = {}): BearerSettings {
  const dir = tempDir()
  writeFiles(dir, { 'jwks.json': JSON.stringify({ keys: jwk }) })
  const issues: ConfigIssue[] = []
  const settings = resolveBearer(bearerSchema.parse({ issuer: ISSUER, audience: AUDIENCE, jwks: { file: 'jwks.json' }, ...extra }), 'preauth.bearer', dir, issues)
  expect(issues).toEqual([])
  return settings!
}

/** A key set server on 127.0.0.1 that counts its fetches; `hang` accepts and never answers. */
async function keyServer (initial: JWK[], mode: 'serve' | 'hang' = 'serve'): Promise<{ url: string, fetches: () => number, publish: (keys: JWK[]) => void, respond: (status: number, body: string, chunked?: boolean) => void }> {
  let body = JSON.stringify({ keys: initial })
  let status = 200
  let chunked = false
  let fetches = 0
  const server: Server = createServer((req, res) => {
    fetches++
    if (mode === 'hang') return
    res.writeHead(status, { 'content-type': 'application/json' })
    if (chunked) res.write(body.slice(0, 1000)) // no Content-Length: the size is only known by reading
    res.end(chunked ? body.slice(1000) : body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/tenant/discovery/v2.0/keys`,
    fetches: () => fetches,
    publish: (keys) => { body = JSON.stringify({ keys }) },
    respond: (code, text, inChunks = false) => { status = code; body = text; chunked = inChunks }
  }
}

function urlSettings (url: string, jwks: Record<string, unknown> = {}): BearerSettings {
  const issues: ConfigIssue[] = []
  const settings = resolveBearer(bearerSchema.parse({ issuer: ISSUER, audience: AUDIENCE, jwks: { url, ...jwks } }), 'preauth.bearer', '/', issues)
  expect(issues).toEqual([])
  return settings!
}

afterEach(() => { vi.useRealTimers() })

describe('Bearer token shape', () => {
  it('looksLikeJwt takes signed compact JWTs only and never throws', async () => {
    const good = await token(await signer('k1'))
    expect(looksLikeJwt(good)).toBe(true)
    const [h, p, s] = good.split('.') as [string, string, string]
    for (const bad of [
      '', 'abc', 'a.b', `${h}.${p}`, `${h}.${p}.`, `${h}.${p}.${s}.x`, // wrong part counts
      `${h}.${p}.${s}.${s}.${s}`, // a JWE has five parts
      `${h}=.${p}.${s}`, `${h}.${p}.${s}==`, `${h} .${p}.${s}`, `${h}.${p}.${s}+/`, // padding, spaces, plain base64
      `${b64({ alg: 'none' })}.${p}.${s}`, `${b64({ alg: 'NoNe' })}.${p}.${s}`, `${b64({ alg: 'none' })}.${p}.`,
      `${b64({ typ: 'JWT' })}.${p}.${s}`, `${b64({ alg: 256 })}.${p}.${s}`, `${b64({ alg: '' })}.${p}.${s}`,
      `${b64(['RS256'])}.${p}.${s}`, `${b64({ alg: 'RS256' })}.${b64('text')}.${s}`, `${b64({ alg: 'RS256' })}.${b64(null)}.${s}`,
      `${h}.${p}x.${s}`, // one leftover base64url character is never valid
      `${h}.${'A'.repeat(16 * 1024)}.${s}`, // over 16 KiB
      'eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL21haWwifQ.sig' // JSON but no alg: what the old check let through
    ]) expect(looksLikeJwt(bad), bad.slice(0, 60)).toBe(false)
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (text) => { expect(typeof looksLikeJwt(text)).toBe('boolean') }), { numRuns: 300 })
    fc.assert(fc.property(fc.array(fc.base64String(), { minLength: 1, maxLength: 6 }), (parts) => { expect(typeof looksLikeJwt(parts.join('.'))).toBe('boolean') }), { numRuns: 300 })
  })

  it('bearerToken reads the RFC 6750 form only', () => {
    expect(bearerToken('Bearer abc.def.ghi')).toBe('abc.def.ghi')
    expect(bearerToken('bearer  abc-_~+/==')).toBe('abc-_~+/==')
    for (const bad of [undefined, 'Bearer', 'Bearer ', 'Basic abc', 'Bearer a b', 'Bearerabc', 'Bearer a,b', 'Bearer a=b']) expect(bearerToken(bad)).toBeUndefined()
  })
})

describe('BearerValidator with a key set file', () => {
  it('passes the tenant\'s token and names its user; never throws on garbage', async () => {
    const key = await signer('k1')
    const validator = new BearerValidator(fileSettings([key.jwk]), clock)
    expect(await validator.validate(await token(key))).toEqual({ ok: true, subject: 'jdoe@contoso.com' })
    expect(await validator.validate(await token(key, { upn: undefined, preferred_username: 'jdoe@contoso.com' }))).toEqual({ ok: true, subject: 'jdoe@contoso.com' })
    expect(await validator.validate(await token(key, { aud: ['https://other', AUDIENCE] }))).toMatchObject({ ok: true })
    await fc.assert(fc.asyncProperty(fc.string({ maxLength: 200 }), async (text) => {
      expect(await validator.validate(text)).toEqual({ ok: false, reason: 'malformed' })
    }), { numRuns: 100 })
  })

  it('refuses forged tokens: other key, tampered payload, alg none, HS256 keyed with the public key, unknown kid', async () => {
    const key = await signer('k1')
    const attacker = await signer('k1') // same kid, other key
    const validator = new BearerValidator(fileSettings([key.jwk]), clock)
    expect(await validator.validate(await token(attacker))).toEqual({ ok: false, reason: 'signature' })
    const [h, , s] = (await token(key)).split('.')
    const admin = b64({ iss: ISSUER, aud: AUDIENCE, exp: NOW + 3600, upn: 'admin@contoso.com' })
    expect(await validator.validate(`${h}.${admin}.${s}`)).toEqual({ ok: false, reason: 'signature' })
    expect(await validator.validate(`${b64({ alg: 'none', typ: 'JWT' })}.${admin}.`)).toEqual({ ok: false, reason: 'malformed' })
    expect(await validator.validate(`${b64({ alg: 'none', typ: 'JWT' })}.${admin}.${s}`)).toEqual({ ok: false, reason: 'algorithm' })
    // Algorithm confusion (RFC 8725 §2.1): the RSA public key, which anyone can download, as an HMAC secret.
    const pem = createPublicKey({ key: key.jwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' })
    for (const secret of [Buffer.from(pem), Buffer.from(JSON.stringify(key.jwk))]) {
      const hs = await new SignJWT({ upn: 'admin@contoso.com' }).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime(NOW + 3600).sign(secret)
      expect(await validator.validate(hs)).toEqual({ ok: false, reason: 'algorithm' })
    }
    expect(await validator.validate(await token(key, {}, { alg: 'RS256', kid: 'k2' }))).toEqual({ ok: false, reason: 'unknown-key' })
  })

  it('checks iss, aud, exp and nbf, with the clock tolerance at its edge', async () => {
    const key = await signer('k1')
    const validator = new BearerValidator(fileSettings([key.jwk]), clock)
    const check = async (claims: JWTPayload): Promise<unknown> => await validator.validate(await token(key, claims))
    // Entra's keys are shared by every tenant: only iss tells another tenant's token apart.
    expect(await check({ iss: `https://sts.windows.net/${OTHER_TENANT}/`, tid: OTHER_TENANT })).toEqual({ ok: false, reason: 'issuer' })
    expect(await check({ iss: `https://login.microsoftonline.com/${TENANT}/v2.0` })).toEqual({ ok: false, reason: 'issuer' })
    expect(await check({ iss: undefined })).toEqual({ ok: false, reason: 'issuer' })
    expect(await check({ aud: 'https://mail.fabrikam.com' })).toEqual({ ok: false, reason: 'audience' })
    expect(await check({ aud: '00000003-0000-0000-c000-000000000000' })).toEqual({ ok: false, reason: 'audience' }) // a Graph token
    expect(await check({ exp: undefined })).toEqual({ ok: false, reason: 'claims' })
    expect(await check({ exp: 'tomorrow' as unknown as number })).toEqual({ ok: false, reason: 'claims' })
    expect(await check({ exp: NOW - 3600 })).toEqual({ ok: false, reason: 'expired' })
    expect(await check({ nbf: NOW + 3600 })).toEqual({ ok: false, reason: 'not-yet-valid' })
    // Five minutes by default: expired 299 s ago or valid from 300 s on still passes.
    expect(await check({ exp: NOW - 299 })).toMatchObject({ ok: true })
    expect(await check({ exp: NOW - 300 })).toEqual({ ok: false, reason: 'expired' })
    expect(await check({ nbf: NOW + 300 })).toMatchObject({ ok: true })
    expect(await check({ nbf: NOW + 301 })).toEqual({ ok: false, reason: 'not-yet-valid' })
    const strict = new BearerValidator(fileSettings([key.jwk], { clockToleranceMs: 0 }), clock)
    expect(await strict.validate(await token(key, { exp: NOW + 1 }))).toMatchObject({ ok: true })
    expect(await strict.validate(await token(key, { exp: NOW }))).toEqual({ ok: false, reason: 'expired' })
  })

  it('takes a token it verified lately without a second signature check, but never past its exp', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(new Date(NOW * 1000))
    let now = NOW * 1000
    const key = await signer('k1')
    const validator = new BearerValidator(fileSettings([key.jwk], { clockToleranceMs: 0 }), { now: () => new Date(now) })
    const soon = await token(key, { exp: NOW + 120 })
    expect(await validator.validate(soon)).toMatchObject({ ok: true })
    now += 60_000
    vi.setSystemTime(now)
    expect(await validator.validate(soon)).toMatchObject({ ok: true })
    now += 61_000
    vi.setSystemTime(now)
    expect(await validator.validate(soon)).toEqual({ ok: false, reason: 'expired' })
    vi.useRealTimers()
  })

  it('accepts several issuers and audiences when configured', async () => {
    const key = await signer('k1')
    const v2 = `https://login.microsoftonline.com/${TENANT}/v2.0`
    const validator = new BearerValidator(fileSettings([key.jwk], { issuer: [ISSUER, v2], audience: [AUDIENCE, `${AUDIENCE}/`] }), clock)
    expect(await validator.validate(await token(key, { iss: v2, aud: `${AUDIENCE}/` }))).toMatchObject({ ok: true })
  })
})

describe('BearerValidator with a key set URL', () => {
  it('fetches once, serves from cache, fetches a rotated key only after the cooldown, and again after cacheMaxAgeMs', async () => {
    vi.useFakeTimers({ toFake: ['Date'] }) // jose times its cache with Date.now()
    vi.setSystemTime(new Date(NOW * 1000))
    const first = await signer('k1')
    const next = await signer('k2')
    const jwks = await keyServer([first.jwk])
    const validator = new BearerValidator(urlSettings(jwks.url, { cooldownMs: 30_000, cacheMaxAgeMs: 60 * 60_000 }), clock)
    for (let i = 0; i < 3; i++) expect(await validator.validate(await token(first))).toMatchObject({ ok: true })
    expect(jwks.fetches()).toBe(1)
    // Entra publishes k2; a token signed with it inside the cooldown does not make casgate fetch again.
    jwks.publish([first.jwk, next.jwk])
    expect(await validator.validate(await token(next))).toEqual({ ok: false, reason: 'unknown-key' })
    expect(jwks.fetches()).toBe(1)
    vi.setSystemTime(new Date(NOW * 1000 + 30_001))
    expect(await validator.validate(await token(next))).toMatchObject({ ok: true })
    expect(jwks.fetches()).toBe(2)
    // Forged kids after that: one fetch per cooldown at most.
    for (let i = 0; i < 5; i++) expect(await validator.validate(await token(next, {}, { kid: `forged-${i}` }))).toEqual({ ok: false, reason: 'unknown-key' })
    expect(jwks.fetches()).toBe(2)
    // k1 retired; the cache keeps it until cacheMaxAgeMs, then the fresh set refuses it.
    jwks.publish([next.jwk])
    expect(await validator.validate(await token(first))).toMatchObject({ ok: true })
    vi.setSystemTime(new Date(NOW * 1000 + 30_001 + 60 * 60_000))
    expect(await validator.validate(await token(first))).toEqual({ ok: false, reason: 'unknown-key' })
    expect(await validator.validate(await token(next))).toMatchObject({ ok: true })
    expect(jwks.fetches()).toBe(3)
  })

  it('answers jwks-unavailable when the key server refuses, errs, sends no key set, or hangs past timeoutMs', async () => {
    const key = await signer('k1')
    const closedPort = await new Promise<number>((resolve) => { const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as AddressInfo).port; s.close(() => resolve(p)) }) })
    expect(await new BearerValidator(urlSettings(`http://127.0.0.1:${closedPort}/keys`), clock).validate(await token(key))).toEqual({ ok: false, reason: 'jwks-unavailable' })
    const huge = `{"keys":[],"pad":"${'x'.repeat(1024 * 1024)}"}` // a valid, empty key set past 1 MiB
    for (const [status, body, chunked] of [[500, 'oops', false], [302, '', false], [200, '<html>', false], [200, '{"keys":"none"}', false], [200, huge, false], [200, huge, true]] as const) {
      const broken = await keyServer([])
      broken.respond(status, body, chunked)
      expect(await new BearerValidator(urlSettings(broken.url), clock).validate(await token(key)), `${status} ${body.slice(0, 20)}`).toEqual({ ok: false, reason: 'jwks-unavailable' })
    }
    const hang = await keyServer([], 'hang')
    expect(await new BearerValidator(urlSettings(hang.url, { timeoutMs: 200 }), clock).validate(await token(key))).toEqual({ ok: false, reason: 'jwks-unavailable' })
    expect(hang.fetches()).toBe(1)
  })

  it('close() aborts a fetch in flight instead of waiting for timeoutMs', { timeout: 10_000 }, async () => {
    const key = await signer('k1')
    const hang = await keyServer([], 'hang')
    const validator = new BearerValidator(urlSettings(hang.url, { timeoutMs: 60_000 }), clock)
    const pending = validator.validate(await token(key))
    await vi.waitFor(() => { expect(hang.fetches()).toBe(1) })
    validator.close()
    expect(await pending).toEqual({ ok: false, reason: 'jwks-unavailable' })
    expect(await validator.prefetch()).toBe(false)
  })

  it('prefetch loads the keys before the first token', async () => {
    const key = await signer('k1')
    const jwks = await keyServer([key.jwk])
    const validator = new BearerValidator(urlSettings(jwks.url), clock)
    expect(await validator.prefetch()).toBe(true)
    expect(jwks.fetches()).toBe(1)
    expect(await validator.validate(await token(key))).toMatchObject({ ok: true })
    expect(jwks.fetches()).toBe(1)
  })
})

describe('preauth.bearer configuration', () => {
  const resolveWith = (input: unknown, files: Record<string, string> = {}): { settings: BearerSettings | undefined, issues: ConfigIssue[] } => {
    const dir = tempDir()
    writeFiles(dir, files)
    const issues: ConfigIssue[] = []
    return { settings: resolveBearer(bearerSchema.parse(input), 'preauth.bearer', dir, issues), issues }
  }
  const base = { issuer: ISSUER, audience: AUDIENCE }

  it('fills its defaults and sits in the preauth block', () => {
    const parsed = bearerSchema.parse({ ...base, jwks: { url: 'https://login.microsoftonline.com/x/discovery/v2.0/keys' } })
    expect(parsed).toMatchObject({ clockToleranceMs: 300_000, algorithms: ['RS256'], jwks: { timeoutMs: 5_000, cacheMaxAgeMs: 86_400_000, cooldownMs: 30_000 } })
    expect(preauthSchema.parse({ usersFile: 'users.txt', bearer: { ...base, jwks: { file: 'jwks.json' } } }).bearer).toMatchObject({ jwks: { file: 'jwks.json' } })
  })

  it('refuses HS*, none, both key sources and unknown keys, naming the key path', () => {
    const problems = (input: unknown): ConfigIssue[] => {
      const result = bearerSchema.safeParse(input)
      return result.success ? [] : zodIssuesToConfigIssues(result.error, bearerSchema, input)
    }
    expect(problems({ ...base, jwks: { file: 'k.json' }, algorithms: ['HS256'] })[0]?.path).toBe('algorithms[0]')
    expect(problems({ ...base, jwks: { file: 'k.json' }, algorithms: ['none'] })[0]?.path).toBe('algorithms[0]')
    expect(problems({ ...base, jwks: { file: 'k.json', url: 'https://x/keys' } }).map((i) => i.path)).toContain('jwks.url')
    expect(problems({ ...base, jwks: { url: 'login.microsoftonline.com/keys' } })[0]?.path).toBe('jwks.url')
    expect(problems({ ...base, jwks: { url: 'ftp://example.com/keys' } })[0]).toMatchObject({ path: 'jwks.url', message: expect.stringMatching(/https/) })
    expect(problems({ audience: AUDIENCE, jwks: { file: 'k.json' } })[0]?.path).toBe('issuer')
    expect(problems({ ...base, jwks: { file: 'k.json' }, clockToleranceMs: 86_400_000 })[0]?.path).toBe('clockToleranceMs')
  })

  it('checks the key set file and the URL at start', async () => {
    const key = await signer('k1')
    const rsa1024 = { ...generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' }), kid: 'small' }
    const ec = { ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }), kid: 'ec' }
    const privateJwk = { ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), kid: 'leaked' }
    const fileCase = (content: string | undefined, extra: Record<string, unknown> = {}): { settings: BearerSettings | undefined, issues: ConfigIssue[] } =>
      resolveWith({ ...base, jwks: { file: 'jwks.json' }, ...extra }, content === undefined ? {} : { 'jwks.json': content })
    const pathsOf = (r: { issues: ConfigIssue[] }): string[] => r.issues.map((i) => i.path)
    expect(pathsOf(fileCase(undefined))).toEqual(['preauth.bearer.jwks.file'])
    expect(fileCase(undefined).issues[0]?.message).toMatch(/cannot read jwks\.json \(ENOENT\)/)
    expect(fileCase('{not json').issues[0]?.message).toMatch(/is not JSON/)
    expect(fileCase('{"kty":"RSA"}').issues[0]?.message).toMatch(/no "keys" list/)
    expect(fileCase(JSON.stringify({ keys: [key.jwk, privateJwk] })).issues[0]?.message).toMatch(/key 1 \(kid leaked\) holds private or secret key material/)
    expect(fileCase(JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] })).settings).toBeUndefined()
    expect(fileCase(JSON.stringify({ keys: [rsa1024, ec, { ...key.jwk, use: 'enc' }] })).issues[0]?.message).toMatch(/no public signing key usable with RS256/)
    // The usable key is kept, the others dropped; the EC key counts when ES256 is allowed.
    expect(fileCase(JSON.stringify({ keys: [rsa1024, ec, key.jwk] })).settings?.jwks).toMatchObject({ kind: 'file', keys: { keys: [{ kid: 'k1' }] } })
    expect(fileCase(JSON.stringify({ keys: [ec] }), { algorithms: ['ES256'] }).issues).toEqual([])
    const urlCase = (url: string): string[] => pathsOf(resolveWith({ ...base, jwks: { url } }))
    expect(urlCase('http://login.microsoftonline.com/t/discovery/v2.0/keys')).toEqual(['preauth.bearer.jwks.url'])
    expect(urlCase('http://127.0.0.2.nip.io/keys')).toEqual(['preauth.bearer.jwks.url'])
    for (const ok of ['https://login.microsoftonline.com/t/discovery/v2.0/keys', 'http://127.0.0.1:8080/keys', 'http://[::1]/keys', 'http://localhost/keys']) expect(urlCase(ok), ok).toEqual([])
    const placeholder = resolveWith({ ...base, issuer: [ISSUER, 'https://login.microsoftonline.com/common/v2.0'], jwks: { url: 'https://login.microsoftonline.com/t/discovery/v2.0/keys' } })
    expect(placeholder).toMatchObject({ settings: undefined, issues: [{ path: 'preauth.bearer.issuer[1]' }] })
    expect(resolveWith({ ...base, issuer: ISSUER.slice(0, -1), jwks: { url: 'https://login.microsoftonline.com/t/discovery/v2.0/keys' } }).issues)
      .toEqual([{ path: 'preauth.bearer.issuer', message: expect.stringMatching(/trailing slash/), fix: `write ${ISSUER}` }])
  })
})
