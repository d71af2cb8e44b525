import type { IncomingMessage } from 'node:http'
import type { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import type { PreauthSettings } from '../config/preauth-config.js'
import type { PreauthPolicy } from '../config/schema.js'
import { basicCredentials } from '../auth/basic.js'
import { claimedUser } from '../auth/logon-user.js'
import { declaresBody } from '../util/request-body.js'
import { errorBody } from '../errors/errors.js'
import { keyedHash } from '../util/keyed-hash.js'
import type { CredentialProvider } from './credential-provider.js'
import { EXCLUSION_PRESETS, Exclusions, type ExcludedVdir } from './exclusions.js'
import { BearerValidator, bearerToken, looksLikeJwt } from './bearer-token.js'
import { Lockout } from './lockout.js'
import { activeSyncDevice, type LockoutClock } from './lockout-sources.js'
import { FormsSessions } from './forms-sessions.js'
import { PASS_UNCHANGED, type GateAnswer, type GateOutcome, type GatePass } from './gate-outcome.js'
import { boundedCache } from '../util/bounded-cache.js'

const BEARER_PASS: { pass: GatePass } = { pass: { ...PASS_UNCHANGED.pass, excluded: 'bearer' } }
const BEARER = /^bearer\s/i
const UNAUTHORIZED_BODY = errorBody(401, 'CASGATE_ERR_PREAUTH_REQUIRED', 'authentication required')

/** GatedVdir is what the gate needs of the vdir a request is routed to. */
export interface GatedVdir extends ExcludedVdir {
  preauth: PreauthPolicy
}
/**
 * PreauthGate authenticates requests at the edge: the exclusions, Basic with a short cache of
 * good answers, the forms session, lockout. The login form itself is served by preauth-routes.ts.
 */
export class PreauthGate {
  readonly settings: PreauthSettings
  /** The forms sessions: cookies, sign-out, revocation. */
  readonly forms: FormsSessions
  readonly lockout: Lockout
  readonly exclusions: Exclusions
  readonly provider: CredentialProvider
  readonly #log: Logger
  readonly #basicCache: LRUCache<string, true> | undefined
  /** Hears each lockout started, by scope (user, device, address), for metrics. */
  onLockout: ((scope: string) => void) | undefined
  /** Hears each Basic logon the cache keeps (its keyed hash only), for the other processes of a site. */
  shareBasicSuccess: ((key: string) => void) | undefined
  readonly #realm: string
  /** Checks Bearer tokens at the edge when preauth.bearer is configured. */
  readonly #bearerValidator: BearerValidator | undefined

  constructor (settings: PreauthSettings, provider: CredentialProvider, log: Logger, clock?: LockoutClock) {
    this.settings = settings
    this.provider = provider
    this.#log = log
    this.forms = new FormsSessions(settings, log)
    this.lockout = new Lockout(settings.lockout, settings.secret, clock)
    this.exclusions = new Exclusions(EXCLUSION_PRESETS[settings.exclusionPreset], settings.exclude)
    this.#basicCache = settings.basicCacheTtlMs > 0 ? boundedCache<string, true>(100_000, { ttl: settings.basicCacheTtlMs }) : undefined
    this.#realm = `Basic realm="${settings.realm}", charset="UTF-8"`
    this.#bearerValidator = settings.bearer === undefined ? undefined : new BearerValidator(settings.bearer)
  }

  /**
   * start loads a Bearer key set from its URL ahead of the first token; a failure is logged, and
   * tokens are refused with 503 until the keys can be fetched (never accepted unchecked).
   */
  async start (): Promise<void> {
    if (this.#bearerValidator !== undefined && !(await this.#bearerValidator.prefetch())) {
      this.#log.warn({ event: 'bearer-keys-unavailable' }, 'bearer signing keys could not be fetched yet: Bearer requests get 503 until they can')
    }
  }

  /** applyBasicSuccess keeps a Basic logon another process checked (by its keyed hash). */
  applyBasicSuccess (key: string): void {
    this.#basicCache?.set(key, true)
  }

  /** close releases what the gate holds (a key set fetch in flight). */
  close (): void {
    this.#bearerValidator?.close()
  }

  /**
   * gate decides one request on the vdir it is routed to, `path` being its decoded path
   * (routing/request-target.ts). Bearer tokens first: validated here when preauth.bearer is set,
   * otherwise passed to Exchange only where hybrid modern authentication's clients send them
   * and only in the shape of a JWT. Then the exclusions, then the vdir's policy. Basic
   * credentials casgate does not check itself (excluded paths, vdirs without preauth) still meet
   * the lockout, and Exchange's 401s to them count (proxy: upstreamRejected).
   */
  gate (request: IncomingMessage, vdir: GatedVdir, client: string | undefined, path: string): GateOutcome | Promise<GateOutcome> {
    const authorization = request.headers.authorization
    if (authorization !== undefined && BEARER.test(authorization) && vdir.preauth !== 'forms') {
      const bearer = this.#bearer(bearerToken(authorization) ?? '', vdir)
      if (bearer !== undefined) return bearer
    }
    const excluded = vdir.preauth === 'none' ? 'none' : this.exclusions.reason(request.method ?? 'GET', path, vdir, declaresBody(request.headers))
    if (excluded !== undefined) {
      const locked = this.lockedAnswer(authorization, client, request.url ?? '/')
      if (locked !== undefined) return locked.then((answer) => ({ answer }))
      return excluded === 'none' ? PASS_UNCHANGED : { pass: { ...PASS_UNCHANGED.pass, excluded } }
    }
    return vdir.preauth === 'basic' ? this.#basic(request, client) : this.forms.decide(request, request.url ?? '/', path)
  }

  /**
   * bearer decides a Bearer request, or leaves it to the vdir's policy (undefined): with a
   * validator every token is checked (only the tenant's pass, on any vdir but the forms ones);
   * without one, a JWT-shaped token passes where modern-auth clients send it.
   */
  #bearer (token: string, vdir: GatedVdir): GateOutcome | Promise<GateOutcome> | undefined {
    const validator = this.#bearerValidator
    if (validator === undefined) {
      if (vdir.preauth === 'none' || !this.exclusions.bearerAllowed(vdir.path) || !looksLikeJwt(token)) return undefined
      return BEARER_PASS
    }
    if (vdir.preauth !== 'none' && !this.exclusions.bearerAllowed(vdir.path)) return undefined
    return validator.validate(token).then((result): GateOutcome => {
      if (result.ok) return { pass: { ...BEARER_PASS.pass, user: result.subject } }
      this.#log.warn({ event: 'bearer-refused', reason: result.reason, vdir: vdir.path }, 'bearer token refused')
      if (result.reason === 'jwks-unavailable') return this.#unavailable()
      // RFC 6750 §3: say the token is what failed; Basic stays on offer for clients that can.
      return this.#unauthorized(`bearer-${result.reason}`, ['Bearer error="invalid_token"', this.#realm])
    })
  }

  /**
   * checkPassword runs one logon attempt through lockout and the provider; every refusal looks
   * the same to the caller except 'unavailable' (the directory is down: nobody can tell). A
   * locked logon is refused without asking the provider, after as long as a refusal takes.
   * `device` is the ActiveSync DeviceId, a source of its own for smart lockout.
   */
  async checkPassword (user: string, password: string, client: string | undefined, via: string, device?: string): Promise<'valid' | 'invalid' | 'unavailable'> {
    const { clock } = this.lockout
    const outcome = await this.lockout.inTurn(user, async () => {
      const locked = this.lockout.lockedFor(user, client, clock.now(), device)
      if (locked !== undefined) {
        this.#log.warn({ event: 'preauth-locked-out', user, client, via, lock: locked }, 'logon refused: user or address locked out')
        return 'locked'
      }
      const started = clock.now()
      const result = await this.provider.check(user, password)
      if (result === 'valid') {
        this.lockout.recordSuccess(user, client, clock.now(), device)
        this.#log.info({ event: 'preauth-logon', user, client, via }, 'logon')
      } else if (result === 'invalid') {
        this.lockout.checkTimes.provider.record(clock.now() - started)
        this.#failed(user, client, via, device)
      } else {
        this.#log.error({ event: 'preauth-unavailable', user, client, via }, 'credential provider unreachable')
      }
      return result
    })
    if (outcome !== 'locked') return outcome
    // Outside the user's turn: locked answers wait side by side, not one after another.
    await this.lockout.equalise('provider')
    return 'invalid'
  }

  /** #failed counts a refused logon (casgate's check or Exchange's 401) and logs what it locked. */
  #failed (user: string, client: string | undefined, via: string, device: string | undefined): void {
    const event = this.lockout.recordFailure(user, client, this.lockout.clock.now(), device)
    this.#log.warn({ event: 'preauth-failed', user, client, via, ...(event.familiar !== undefined ? { familiar: event.familiar } : {}) }, 'logon failed')
    if (event.userLockedForMs !== undefined) this.#log.warn({ event: 'preauth-lockout', scope: 'user', user, client, lockedForMs: event.userLockedForMs }, 'user locked out for unfamiliar sources')
    if (event.sourceLockedForMs !== undefined) this.#log.warn({ event: 'preauth-lockout', scope: event.familiar, user, client, lockedForMs: event.sourceLockedForMs }, `user locked out on this ${event.familiar ?? 'source'}`)
    if (event.addressLockedForMs !== undefined) this.#log.warn({ event: 'preauth-lockout', scope: 'address', client, lockedForMs: event.addressLockedForMs }, 'client address locked out')
    if (this.onLockout !== undefined) {
      if (event.userLockedForMs !== undefined) this.onLockout('user')
      if (event.sourceLockedForMs !== undefined) this.onLockout(event.familiar ?? 'source')
      if (event.addressLockedForMs !== undefined) this.onLockout('address')
    }
  }

  /**
   * lockedAnswer guards requests that reach Exchange without casgate's own check (excluded paths,
   * vdirs without preauth): when they carry a logon of a user locked out for this source (Basic, or
   * an NTLM AUTHENTICATE: auth/logon-user.ts),
   * it resolves, after as long as Exchange takes to refuse a password, to the 401 a wrong password
   * gets from casgate. Undefined otherwise (nothing to await).
   */
  lockedAnswer (authorization: string | undefined, client: string | undefined, url: string): Promise<GateAnswer> | undefined {
    const user = claimedUser(authorization)
    if (user === undefined) return undefined
    const device = activeSyncDevice(url)
    const locked = this.lockout.lockedFor(user, client, this.lockout.clock.now(), device)
    if (locked === undefined) return undefined
    this.#log.warn({ event: 'preauth-locked-out', user, client, via: 'exchange', lock: locked }, 'logon refused: user or address locked out')
    return this.lockout.equalise('exchange').then(() => this.#unauthorized('locked-out').answer)
  }

  /**
   * upstreamRejected counts Exchange's 401 to a request casgate let through unchecked as a failed
   * logon of the user it named (Basic, or an NTLM AUTHENTICATE), exactly as casgate's own check
   * counts one. Other requests are not counted: NTLM's NEGOTIATE and Kerberos get a 401 first by
   * design (RFC 4559 §5).
   * `elapsedMs`, from the request to Exchange's answer, times lockedAnswer's wait.
   */
  upstreamRejected (authorization: string | undefined, client: string | undefined, url: string, elapsedMs?: number): void {
    const user = claimedUser(authorization)
    if (user === undefined) return
    if (elapsedMs !== undefined) this.lockout.checkTimes.exchange.record(elapsedMs)
    this.#failed(user, client, 'exchange', activeSyncDevice(url))
  }

  #unauthorized (reason: string, challenge: string | string[] = this.#realm): { answer: GateAnswer } {
    return { answer: { status: 401, headers: { 'www-authenticate': challenge, 'content-type': 'application/json; charset=utf-8' }, body: UNAUTHORIZED_BODY, reason } }
  }

  #unavailable (): { answer: GateAnswer } {
    const body = JSON.stringify({ statusCode: 503, code: 'CASGATE_ERR_PREAUTH_UNAVAILABLE', error: 'Service Unavailable', message: 'sign-in is unavailable: the credential provider cannot be reached' })
    return { answer: { status: 503, headers: { 'retry-after': '30', 'content-type': 'application/json; charset=utf-8' }, body, reason: 'provider-unavailable' } }
  }

  #basic (request: IncomingMessage, client: string | undefined): GateOutcome | Promise<GateOutcome> {
    const credentials = basicCredentials(request.headers.authorization)
    if (credentials === undefined || credentials.password === '') return this.#unauthorized('no-credentials')
    const { user, password } = credentials
    const device = activeSyncDevice(request.url ?? '/')
    const cacheKey = this.#basicCache && keyedHash(this.settings.secret, `basic\0${user}\0${password}`)
    if (cacheKey !== undefined && this.#basicCache!.get(cacheKey) && !this.lockout.isLocked(user, client, undefined, device)) return { pass: { ...PASS_UNCHANGED.pass, user } }
    return this.checkPassword(user, password, client, 'basic', device).then((result): GateOutcome => {
      if (result === 'unavailable') return this.#unavailable()
      if (result === 'invalid') return this.#unauthorized('bad-credentials')
      if (cacheKey !== undefined) {
        this.#basicCache!.set(cacheKey, true)
        this.shareBasicSuccess?.(cacheKey)
      }
      return { pass: { ...PASS_UNCHANGED.pass, user } }
    })
  }
}
