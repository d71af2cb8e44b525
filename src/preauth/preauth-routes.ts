import { createHmac, hkdfSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { readCookies } from '../util/cookies.js'
import { hasControlCharacters } from '../util/text.js'
import { loginPage } from './login-page.js'
import { CSRF_COOKIE, LOGOFF_PATH, LOGON_PATH } from './forms-sessions.js'
import type { PreauthGate } from './preauth-gate.js'
import { newSessionId } from './session-cookie.js'
import { sendError } from '../errors/error-reply.js'
import { CasgateError } from '../errors/errors.js'

/** PreauthRoutesOptions: the gate, and where to go after logon when the form was opened directly. */
export interface PreauthRoutesOptions {
  gate: PreauthGate
  defaultReturnUrl: string
  /** The client's address for lockout: behind a trusted proxy, the address it forwards. */
  clientOf: (request: IncomingMessage) => string | undefined
  /**
   * Whether the host a connection was made to publishes a forms vdir: the sign-in form is casgate's
   * page of such hosts only (an autodiscover-only name answers 404 for it, like for any path).
   */
  servesForms?: (request: IncomingMessage) => boolean
}

const MAX_FORM_BYTES = 16 * 1024
// The page runs no script and loads nothing: the policy says so, and framing is refused.
const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  // same-origin, not no-referrer: with no-referrer browsers post the form with "Origin: null".
  'referrer-policy': 'same-origin'
}

// What a Location may carry as it is (RFC 3986 §2: unreserved, reserved, and '%' of escapes);
// anything else is percent-encoded as UTF-8 (RFC 3987 §3.1), as browsers do with typed URLs.
// Node refuses header values with characters above U+00FF (the 500 of issue 12) and would send
// U+0080–U+00FF as raw Latin-1 bytes, which browsers do not read as UTF-8.
const URI_CHARACTER = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]$/

/**
 * safeReturnUrl keeps the post-logon redirect on this site (a path, never //host or a scheme)
 * and makes it a valid Location value: ASCII only, non-ASCII percent-encoded as UTF-8. Control
 * characters and unpaired surrogates give the fallback.
 */
export function safeReturnUrl (value: unknown, fallback: string): string {
  if (typeof value !== 'string' || value.length > 2048) return fallback
  if (!value.startsWith('/') || value.startsWith('//') || value.includes('\\') || hasControlCharacters(value)) return fallback
  if (value.toLowerCase().startsWith('/casgate/')) return fallback
  let url = ''
  for (const character of value) {
    if (URI_CHARACTER.test(character)) {
      url += character
      continue
    }
    try {
      url += encodeURIComponent(character)
    } catch {
      return fallback // an unpaired surrogate has no UTF-8 form
    }
  }
  return url
}

// Login CSRF: the form's token is an HMAC of the pre-session id in the CasgateCsrf cookie, so a
// cookie planted from elsewhere (a sibling subdomain can set cookies for this host) does not
// come with a token that matches it, as a plain double-submit pair would (OWASP CSRF cheat
// sheet, "Signed Double-Submit Cookie"). Keys of every configured secret verify (rotation).
const PRE_SESSION_BYTES = 18

function csrfKeys (secrets: readonly KeyObject[]): Buffer[] {
  return secrets.map((secret) => Buffer.from(hkdfSync('sha256', secret.export(), 'casgate', 'login csrf v1', 32)))
}

function csrfToken (key: Buffer, preSession: string): string {
  return createHmac('sha256', key).update(preSession).digest('base64url')
}

/** csrfVerifies says whether `token` is the HMAC of one of the pre-session cookies the request carries. */
function csrfVerifies (keys: readonly Buffer[], preSessions: readonly string[], token: string | null): boolean {
  if (token === null || token.length !== 43) return false
  const given = Buffer.from(token)
  let verified = false
  for (const preSession of preSessions.slice(0, 4)) {
    if (preSession.length !== Math.ceil(PRE_SESSION_BYTES * 4 / 3)) continue
    for (const key of keys) {
      if (timingSafeEqual(Buffer.from(csrfToken(key, preSession)), given)) verified = true
    }
  }
  return verified
}

function readForm (request: IncomingMessage): Promise<URLSearchParams | undefined> {
  return new Promise((resolve) => {
    let size = 0
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_FORM_BYTES) {
        resolve(undefined)
        request.destroy()
        return
      }
      chunks.push(chunk)
    })
    request.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))))
    request.on('error', () => resolve(undefined))
  })
}

async function preauthRoutes (fastify: FastifyInstance, options: PreauthRoutesOptions): Promise<void> {
  const { gate, defaultReturnUrl, clientOf } = options
  const keys = csrfKeys(gate.settings.secrets)
  const refusedHere = (request: FastifyRequest, reply: FastifyReply): boolean => {
    if (options.servesForms?.(request.raw) ?? true) return false
    sendError(reply, new CasgateError('CASGATE_ERR_NOT_PUBLISHED'))
    return true
  }

  function showForm (reply: FastifyReply, status: number, page: { returnUrl: string, user?: string, error?: string, notice?: string, host?: string }): FastifyReply {
    // A fresh pre-session per form, its cookie kept to casgate's paths; the page carries its HMAC.
    const preSession = randomBytes(PRE_SESSION_BYTES).toString('base64url')
    return reply.code(status).headers(PAGE_HEADERS)
      .header('set-cookie', `${CSRF_COOKIE}=${preSession}; Path=/casgate/; Secure; HttpOnly; SameSite=Strict`)
      .send(loginPage({ csrfToken: csrfToken(keys[0]!, preSession), ...page }))
  }

  fastify.get(LOGON_PATH, async (request: FastifyRequest<{ Querystring: { url?: string, signedOut?: string } }>, reply) => {
    if (refusedHere(request, reply)) return reply
    return showForm(reply, 200, {
      returnUrl: safeReturnUrl(request.query.url, defaultReturnUrl),
      ...(request.query.signedOut !== undefined ? { notice: 'You have signed out.' } : {}),
      host: request.hostname
    })
  })

  fastify.post(LOGON_PATH, async (request, reply) => {
    if (refusedHere(request, reply)) return reply
    const form = await readForm(request.raw)
    if (form === undefined) return reply.code(413).send()
    const returnUrl = safeReturnUrl(form.get('url'), defaultReturnUrl)
    const origin = request.headers.origin
    // Fetch metadata (W3C): the form posts from this origin; a sibling subdomain is same-site, not same-origin.
    const site = request.headers['sec-fetch-site']
    if (!csrfVerifies(keys, readCookies(request.headers.cookie, CSRF_COOKIE), form.get('csrf')) ||
      (origin !== undefined && origin !== `https://${request.host}`) || (site !== undefined && site !== 'same-origin')) {
      // A form posted from elsewhere (or an expired page): start over, with nothing checked.
      return showForm(reply, 403, { returnUrl, error: 'Your sign-in page expired. Please sign in again.' })
    }
    const user = (form.get('username') ?? '').trim()
    const password = form.get('password') ?? ''
    if (user === '' || password === '') return showForm(reply, 200, { returnUrl, user, error: 'Enter your user name and password.' })
    const result = await gate.checkPassword(user, password, clientOf(request.raw), 'forms')
    if (result === 'unavailable') return showForm(reply, 503, { returnUrl, user, error: 'Sign-in is unavailable right now. Please try again in a few minutes.' })
    if (result === 'invalid') return showForm(reply, 200, { returnUrl, user, error: 'The user name or password is incorrect.' })
    const now = Date.now()
    return reply.code(303).headers({ location: returnUrl, 'cache-control': 'no-store' })
      .header('set-cookie', [gate.forms.sessionCookie({ id: newSessionId(), user, password, issuedAt: now, seenAt: now }), `${CSRF_COOKIE}=; Path=/casgate/; Secure; HttpOnly; SameSite=Strict; Max-Age=0`])
      .send()
  })

  // Sign-out: this path, and OWA's own /owa/logoff.owa (answered by the gate), end the session.
  fastify.get(LOGOFF_PATH, async (request, reply) => {
    if (refusedHere(request, reply)) return reply
    const answer = gate.forms.signOut(request.raw)
    return reply.code(answer.status).headers(answer.headers).send(answer.body)
  })
}

export default fp(preauthRoutes, { fastify: '5.x', name: 'casgate-preauth-routes' })
