import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import type { Duplex } from 'node:stream'
import type { GatewayConfig } from '../config/load.js'
import { CasgateError } from '../errors/errors.js'
import { errorResponseText } from '../errors/error-reply.js'

/**
 * createClientHttpServer builds the HTTP server behind Fastify that parses decrypted client
 * connections, with the listen block's limits, and answers what its parser refuses.
 */
export function createClientHttpServer (config: GatewayConfig, handler: Parameters<typeof createHttpServer>[1]): HttpServer {
  const server = createHttpServer({
    // The whole-request timeout would cut 1 GB uploads and hour-long RPC channels; idle and
    // per-vdir upstream timeouts bound requests instead.
    requestTimeout: 0,
    headersTimeout: config.listen.headersTimeoutMs,
    // Node looks for heads past headersTimeout only every 30 s by default: a slow-header client
    // would hold its connection up to 30 s longer than configured.
    connectionsCheckingInterval: Math.min(1_000, config.listen.headersTimeoutMs),
    keepAliveTimeout: config.listen.idleTimeoutMs,
    // Node's 16 KiB default refuses the Kerberos tokens of users in many groups (KB2020943).
    maxHeaderSize: config.listen.maxHeaderBytes,
    noDelay: true
  }, handler)
  server.timeout = config.listen.idleTimeoutMs
  // Requests Node's parser refuses (a head over listen.maxHeaderBytes, malformed, too slow) never
  // reach a route: answer them here, in casgate's shape. Fastify's own clientErrorHandler is a
  // no-op so that it does not destroy the socket as soon as the answer is written: a socket closed
  // while the client is still sending (the rest of a 70 KiB header) is answered with a TCP reset,
  // and the reset erases the answer at the client before it is read. So close in stages, as
  // RFC 9112 §9.6 says: answer and half-close, keep reading (and discarding) until the client
  // closes, for a few seconds at most.
  const answered = new WeakSet<Duplex>()
  server.on('clientError', (err: Error & { code?: string, reason?: string }, socket: Duplex & { _httpMessage?: { headersSent: boolean } | null }) => {
    // Input after the refusal fails to parse again; the first answer stands.
    if (answered.has(socket) || socket.destroyed) return
    answered.add(socket)
    // As Node's own handler: nothing is written into a response already on its way (pipelining).
    if (err.code === 'ECONNRESET' || !socket.writable || socket._httpMessage?.headersSent === true) {
      socket.destroy()
      return
    }
    const error = err.code === 'HPE_HEADER_OVERFLOW'
      ? new CasgateError('CASGATE_ERR_HEADERS_TOO_LARGE', [config.listen.maxHeaderBytes])
      : new CasgateError('CASGATE_ERR_BAD_REQUEST', [err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'request head not received in time' : (err.reason ?? 'unparsable request').toLowerCase()])
    socket.end(errorResponseText(error))
    const linger = setTimeout(() => socket.destroy(), 5_000).unref()
    socket.once('close', () => clearTimeout(linger))
    socket.resume()
  })
  // This server never listens: the front door hands it decrypted sockets. Node starts the
  // headers-timeout sweep on 'listening', so announce it ourselves.
  server.emit('listening')
  return server
}
