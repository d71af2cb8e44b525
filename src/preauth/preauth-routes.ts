import { randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { readCookie } from '../affinity/identity.js'
import { hasControlCharacters } from '../util/text.js'
import { loginPage } from './login-page.js'
import { CSRF_COOKIE, LOGOFF_PATH, LOGON_PATH, type PreauthGate } from './preauth-gate.js'

/** PreauthRoutesOptions: the gate, and where to go after logon when the form was opened directly. */
export interface PreauthRoutesOptions {
  gate: PreauthGate
  defaultReturnUrl: string
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

/** safeReturnUrl keeps the post-logon redirect on this site: a path, never //host or a scheme. */
export function safeReturnUrl (value: unknown, fallback: string): string {
  if (typeof value !== 'string' || value.length > 2048) return fallback
  if (!value.startsWith('/') || value.startsWith('//') || value.startsWith('/\\') || value.includes('\\') || hasControlCharacters(value)) return fallback
  if (value.toLowerCase().startsWith('/casgate/')) return fallback
  return value
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

function sameToken (a: string | undefined, b: string | null): boolean {
  if (a === undefined || b === null || a.length !== b.length || a.length < 20) return false
  return timingSafeEqual(Buffer.from(a), Buffer.from(b))
}

async function preauthRoutes (fastify: FastifyInstance, options: PreauthRoutesOptions): Promise<void> {
  const { gate, defaultReturnUrl } = options

  function showForm (reply: FastifyReply, status: number, page: { returnUrl: string, user?: string, error?: string, notice?: string, host?: string }): FastifyReply {
    // A fresh CSRF token per form: a double-submit pair, the cookie kept to casgate's paths.
    const csrfToken = randomBytes(24).toString('base64url')
    return reply.code(status).headers(PAGE_HEADERS)
      .header('set-cookie', `${CSRF_COOKIE}=${csrfToken}; Path=/casgate/; Secure; HttpOnly; SameSite=Strict`)
      .send(loginPage({ csrfToken, ...page }))
  }

  fastify.get(LOGON_PATH, async (request: FastifyRequest<{ Querystring: { url?: string, signedOut?: string } }>, reply) => {
    return showForm(reply, 200, {
      returnUrl: safeReturnUrl(request.query.url, defaultReturnUrl),
      ...(request.query.signedOut !== undefined ? { notice: 'You have signed out.' } : {}),
      host: request.hostname
    })
  })

  fastify.post(LOGON_PATH, async (request, reply) => {
    const form = await readForm(request.raw)
    if (form === undefined) return reply.code(413).send()
    const returnUrl = safeReturnUrl(form.get('url'), defaultReturnUrl)
    const origin = request.headers.origin
    if (!sameToken(readCookie(request.headers.cookie, CSRF_COOKIE), form.get('csrf')) || (origin !== undefined && origin !== `https://${request.host}`)) {
      // A form posted from elsewhere (or an expired page): start over, with nothing checked.
      return showForm(reply, 403, { returnUrl, error: 'Your sign-in page expired. Please sign in again.' })
    }
    const user = (form.get('username') ?? '').trim()
    const password = form.get('password') ?? ''
    if (user === '' || password === '') return showForm(reply, 200, { returnUrl, user, error: 'Enter your user name and password.' })
    const result = await gate.checkPassword(user, password, request.raw.socket.remoteAddress, 'forms')
    if (result === 'unavailable') return showForm(reply, 503, { returnUrl, user, error: 'Sign-in is unavailable right now. Please try again in a few minutes.' })
    if (result === 'invalid') return showForm(reply, 200, { returnUrl, user, error: 'The user name or password is incorrect.' })
    const now = Date.now()
    return reply.code(303).headers({ location: returnUrl, 'cache-control': 'no-store' })
      .header('set-cookie', [gate.sessionCookie({ user, password, issuedAt: now, seenAt: now }), `${CSRF_COOKIE}=; Path=/casgate/; Secure; HttpOnly; SameSite=Strict; Max-Age=0`])
      .send()
  })

  // Sign-out: this path, and OWA's own /owa/logoff.owa (answered by the gate), clear the session.
  fastify.get(LOGOFF_PATH, async (request, reply) => {
    const answer = gate.signOut(request.raw)
    return reply.code(answer.status).headers(answer.headers).send(answer.body)
  })
}

export default fp(preauthRoutes, { fastify: '5.x', name: 'casgate-preauth-routes' })
