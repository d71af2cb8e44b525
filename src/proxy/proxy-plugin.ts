import type { Socket } from 'node:net'
import type { BlockList } from 'node:net'
import replyFrom, { type FastifyReplyFromHooks } from '@fastify/reply-from'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { ResolvedVdir } from '../config/resolve.js'
import { CasgateError } from '../errors.js'
import type { Backend, BackendPool } from '../pool/backend-pool.js'
import { ClientAbort, kUpstreamContext, type UpstreamContext, type UpstreamDispatcher } from '../pool/upstream-dispatcher.js'
import { VdirTable } from '../routing/vdir-table.js'
import { sendError, sendFrameworkError } from './error-reply.js'
import { forwardRequestHeaders, stripResponseHopByHop } from './headers.js'
import { upstreamFailure } from './upstream-errors.js'

/** RoutedVdir is a published vdir bound to its pool. */
export interface RoutedVdir extends ResolvedVdir {
  backendPool: BackendPool
}

/** ProxyPluginOptions wires the proxy to the routing table and the upstream side. */
export interface ProxyPluginOptions {
  vdirs: readonly RoutedVdir[]
  upstreams: UpstreamDispatcher
  trustProxy: BlockList
  /** Client socket idle timeout outside long requests; a vdir with a longer timeout raises it per request. */
  idleTimeoutMs: number
  accessLog: Logger
}

/** RequestRoute is what the proxy decided for one request, kept for the access log. */
export interface RequestRoute {
  client: string | undefined
  vdir: string
  backend: string | undefined
  bytesBefore: number
  /** Fires when the client leaves before its response is complete; aborts the upstream request. */
  upstream: UpstreamContext
}

declare module 'fastify' {
  interface FastifyRequest {
    casgateRoute: RequestRoute | null
  }
}

// What Exchange 2013+ clients use. WebDAV went with Exchange 2010, TRACE only helps
// cross-site tracing; anything else gets casgate's 404. RPC_IN_DATA/RPC_OUT_DATA never reach
// here (llhttp rejects them): they are tunnelled before the parser.
const proxiedMethods = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']

function invalidPath (url: string): string | undefined {
  if (url.charCodeAt(0) !== 47) return 'request target must be a path'
  let path = url
  const query = url.indexOf('?')
  if (query !== -1) path = url.slice(0, query)
  if (path.includes('%')) {
    try {
      path = decodeURIComponent(path)
    } catch {
      return 'bad percent-encoding in path'
    }
  }
  if (path.includes('..') && /(^|[/\\])\.\.([/\\]|$)/.test(path)) return 'path traversal'
  if (path.includes('\0')) return 'NUL in path'
  return undefined
}

/** VdirProxyOptions are the per-vdir reply-from options, built once, not per request. */
type VdirProxyOptions = FastifyReplyFromHooks & { timeout: number, retryDelay: () => null }

function buildFromOptions (vdir: RoutedVdir, trustProxy: BlockList): VdirProxyOptions {
  return {
    timeout: vdir.timeoutMs,
    // Retries are casgate's decision (health issue), never reply-from's implicit GET-on-503 loop.
    retryDelay: () => null,
    rewriteRequestHeaders (request, headers) {
      const forwarded = forwardRequestHeaders(headers, { address: request.raw.socket.remoteAddress, host: request.headers.host }, trustProxy)
      const route = request.casgateRoute
      if (route) (forwarded as Record<symbol, unknown>)[kUpstreamContext] = route.upstream
      return forwarded
    },
    rewriteHeaders (headers) {
      return stripResponseHopByHop(headers as Record<string, string | string[] | undefined>)
    },
    onError (reply, { error }) {
      const failure = upstreamFailure(error)
      reply.log.warn({ err: error, vdir: vdir.path, backend: reply.request.casgateRoute?.backend, code: failure.code }, 'upstream request failed')
      sendError(reply as unknown as FastifyReply, failure)
    }
  }
}

function onClientClose (backend: Backend, route: RequestRoute, reply: FastifyReply): () => void {
  return () => {
    backend.outstanding--
    if (!reply.raw.writableFinished) route.upstream.signal.abort()
  }
}

async function casgateProxy (fastify: FastifyInstance, options: ProxyPluginOptions): Promise<void> {
  if (!options?.upstreams || !Array.isArray(options.vdirs)) throw new TypeError('casgate proxy: vdirs and upstreams are required')
  const table = new VdirTable(options.vdirs)
  const fromOptions = new Map(options.vdirs.map((vdir) => [vdir, buildFromOptions(vdir, options.trustProxy)]))
  const accessLog = options.accessLog

  // Bodies are never parsed: the raw request stream is handed to the upstream as it arrives.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
  await fastify.register(replyFrom, { undici: options.upstreams as never, disableRequestLogging: true })

  fastify.decorateRequest('casgateRoute', null)
  fastify.setErrorHandler((err, _request, reply) => sendFrameworkError(reply, err as Error))
  fastify.setNotFoundHandler((_request, reply) => sendError(reply, new CasgateError('CASGATE_ERR_NOT_PUBLISHED')))

  fastify.addHook('onResponse', (request, reply, done) => {
    const route = request.casgateRoute
    const socket = request.raw.socket as Socket | null
    accessLog.info({
      client: route?.client ?? socket?.remoteAddress,
      method: request.method,
      url: request.url,
      vdir: route?.vdir,
      backend: route?.backend,
      status: reply.statusCode,
      // Response bytes on the wire, headers included; unknown once the socket is gone.
      bytesOut: route && socket ? socket.bytesWritten - route.bytesBefore : undefined,
      ms: Math.round(reply.elapsedTime)
    }, 'request')
    done()
  })

  function proxy (request: FastifyRequest, reply: FastifyReply): FastifyReply {
    const url = request.url
    const problem = invalidPath(url)
    if (problem !== undefined) {
      sendError(reply, new CasgateError('CASGATE_ERR_BAD_REQUEST', [problem]))
      return reply
    }
    const vdir = table.match(url)
    if (vdir === undefined) {
      sendError(reply, new CasgateError('CASGATE_ERR_NOT_PUBLISHED'))
      return reply
    }
    const socket = request.raw.socket
    const route: RequestRoute = { client: socket.remoteAddress, vdir: vdir.path, backend: undefined, bytesBefore: socket.bytesWritten, upstream: { signal: new ClientAbort() } }
    request.casgateRoute = route
    const backend = vdir.backendPool.select({ vdir: vdir.path })
    if (backend === undefined) {
      sendError(reply, new CasgateError('CASGATE_ERR_NO_BACKEND', [vdir.path]))
      return reply
    }
    route.backend = backend.name
    // Long polls (ActiveSync Ping, MAPI NotificationWait) leave the client socket silent for as
    // long as the backend holds the request; the socket must outlive the upstream timeout.
    if (vdir.timeoutMs > options.idleTimeoutMs) socket.setTimeout(vdir.timeoutMs + 5_000)
    backend.outstanding++
    reply.raw.once('close', onClientClose(backend, route, reply))
    return reply.from(backend.origin + url, fromOptions.get(vdir))
  }

  fastify.route({ method: proxiedMethods, url: '/*', handler: proxy })
  fastify.route({ method: proxiedMethods, url: '/', handler: proxy })
}

export default fp(casgateProxy, { fastify: '5.x', name: 'casgate-proxy' })
