import { STATUS_CODES, type ServerResponse } from 'node:http'
import type { FastifyReply } from 'fastify'
import { CasgateError, errorBody } from './errors.js'

/** RETRY_AFTER_SECONDS is what a 503 tells clients; ActiveSync and Outlook honour it. */
export const RETRY_AFTER_SECONDS = 5

/**
 * errorResponseText is a whole HTTP/1.1 error response that closes the connection, for places
 * that write to a socket themselves (the RPC parser, requests Node's parser refused).
 */
export function errorResponseText (err: CasgateError): string {
  const body = errorBody(err.statusCode, err.code, err.message)
  const retry = err.statusCode === 503 ? `retry-after: ${RETRY_AFTER_SECONDS}\r\n` : ''
  return `HTTP/1.1 ${err.statusCode} ${STATUS_CODES[err.statusCode] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${retry}connection: close\r\n\r\n${body}`
}

/** writeError answers on a raw ServerResponse (after the reply was hijacked), unless headers are out. */
export function writeError (res: ServerResponse, err: CasgateError): void {
  if (res.headersSent) {
    res.destroy(err)
    return
  }
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' }
  if (err.statusCode === 503) headers['retry-after'] = String(RETRY_AFTER_SECONDS)
  res.writeHead(err.statusCode, headers).end(errorBody(err.statusCode, err.code, err.message))
}

/** sendError ends a request with a casgate error, unless the response has already started. */
export function sendError (reply: FastifyReply, err: CasgateError): void {
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy(err)
    return
  }
  reply.code(err.statusCode).header('content-type', 'application/json; charset=utf-8')
  if (err.statusCode === 503) reply.header('retry-after', String(RETRY_AFTER_SECONDS))
  reply.send(errorBody(err.statusCode, err.code, err.message))
}

/** sendFrameworkError answers an error raised outside casgate's own code (a fastify 4xx, say) in the same shape. */
export function sendFrameworkError (reply: FastifyReply, err: Error & { statusCode?: number, code?: string }): void {
  if (err instanceof CasgateError) return sendError(reply, err)
  const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500
  const code = status === 500 ? 'CASGATE_ERR_INTERNAL' : 'CASGATE_ERR_BAD_REQUEST'
  const message = status === 500 ? 'internal error' : err.message
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy(err)
    return
  }
  reply.code(status).header('content-type', 'application/json; charset=utf-8').send(errorBody(status, code, message))
}
