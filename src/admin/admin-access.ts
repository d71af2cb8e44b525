import { createHash, timingSafeEqual } from 'node:crypto'
import { isIP } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { sendError } from '../errors/error-reply.js'
import { CasgateError } from '../errors/errors.js'
import { readCookies } from '../util/cookies.js'
import { parseHostHeader } from '../util/host-names.js'
import { ADMIN_SESSION_COOKIE, type AdminSessions } from './admin-sessions.js'

// Who may use the admin listener. It can drain servers and read every server's state, so:
//   - every request carries the admin token (Authorization: Bearer), compared in constant time;
//   - its Host must be the listener's own address, localhost on loopback, or a configured name:
//     a web page that points its own DNS name at 127.0.0.1 (DNS rebinding) sends its own Host;
//   - a change is a POST with a JSON body (no HTML form can send one without a CORS preflight,
//     which this listener never grants), and an Origin or Sec-Fetch-Site that says another site
//     sent it is refused.

/** AdminAccessOptions are the token and the names the listener answers to. */
export interface AdminAccessOptions {
  token: string
  /** Names besides its address (admin.names). */
  names: readonly string[]
  /** The status page's signed-in sessions (a cookie instead of the token). */
  sessions: AdminSessions
}

/** OPEN_ROUTES need no token: the page's shell (it holds no data) and its sign-in, which checks the token itself. */
const OPEN_ROUTES = new Set(['GET /', 'HEAD /', 'POST /session'])

/** tokenMatches compares a presented token with the admin token in constant time; an empty one never matches. */
export function tokenMatches (presented: string, expected: Buffer): boolean {
  return presented.length > 0 && timingSafeEqual(digest(presented), expected)
}

/** tokenDigest is what tokenMatches compares against. */
export function tokenDigest (token: string): Buffer {
  return digest(token)
}

function digest (value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

/** hostAllowed says whether a Host header names this listener as configured. */
function hostAllowed (request: FastifyRequest, names: ReadonlySet<string>): string | undefined {
  const header = request.headers.host
  const parsed = header === undefined ? undefined : parseHostHeader(header)
  if (parsed === undefined) return header ?? '(no Host)'
  const socket = request.raw.socket
  const port = parsed.forward.length > parsed.name.length ? Number(parsed.forward.slice(parsed.name.length + 1)) : undefined
  if (port !== undefined && port !== socket.localPort) return header
  const local = (socket.localAddress ?? '').replace(/^::ffff:/, '')
  const name = parsed.name.replace(/^\[|\]$/g, '')
  if (isIP(name) !== 0) return name === local ? undefined : header
  if (name === 'localhost' && (local === '127.0.0.1' || local === '::1')) return undefined
  return names.has(name) ? undefined : header
}

/** crossSite says why a change looks sent by another site's page, or undefined. */
function crossSite (request: FastifyRequest): string | undefined {
  const fetchSite = request.headers['sec-fetch-site']
  if (fetchSite !== undefined && fetchSite !== 'same-origin' && fetchSite !== 'none') return `Sec-Fetch-Site: ${String(fetchSite)}`
  const origin = request.headers.origin
  if (origin !== undefined && origin !== `http://${request.headers.host ?? ''}`) return `Origin: ${origin}`
  return undefined
}

/** adminAccess puts the checks in front of every route of the admin listener. */
export function adminAccess (app: FastifyInstance, options: AdminAccessOptions): void {
  const expected = digest(options.token)
  const names = new Set(options.names.map((name) => name.toLowerCase().replace(/\.$/, '')))
  const refuse = (reply: FastifyReply, error: CasgateError): void => {
    if (error.code === 'CASGATE_ERR_ADMIN_UNAUTHORIZED') reply.header('www-authenticate', 'Bearer realm="casgate admin"')
    sendError(reply, error)
  }
  app.addHook('onRequest', (request, reply, done) => {
    const host = hostAllowed(request, names)
    if (host !== undefined) return refuse(reply, new CasgateError('CASGATE_ERR_ADMIN_HOST', [host]))
    const authorization = request.headers.authorization ?? ''
    const token = /^Bearer +(\S+)$/i.exec(authorization)?.[1]
    // Any of the cookie's values may be the session: another service on this host (cookies are
    // not kept apart by port) could set a stale one in front of it.
    const signedIn = token !== undefined ? tokenMatches(token, expected) : readCookies(request.headers.cookie, ADMIN_SESSION_COOKIE).some((id) => options.sessions.valid(id))
    if (!signedIn && !OPEN_ROUTES.has(`${request.method} ${request.url}`)) return refuse(reply, new CasgateError('CASGATE_ERR_ADMIN_UNAUTHORIZED'))
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      const site = crossSite(request)
      if (site !== undefined) return refuse(reply, new CasgateError('CASGATE_ERR_ADMIN_CROSS_SITE', [site]))
      if (!/^application\/json\s*(;|$)/i.test(request.headers['content-type'] ?? '')) return refuse(reply, new CasgateError('CASGATE_ERR_ADMIN_JSON'))
    }
    done()
  })
}
