import type { IncomingMessage, ServerResponse } from 'node:http'
import { PassThrough } from 'node:stream'

/**
 * uploadOf is the stream undici sends as the request body. undici destroys a body it stops
 * sending (the answer came first: Exchange's 401 to an NTLM upload, a redirect, a reset), and a
 * destroyed client request makes Node stop reading the connection with the rest of the body
 * unread: the next request on it would never be parsed. So undici gets a stream of its own, and
 * whatever of the body is left when the response ends is read off and dropped, as Node does
 * with a body nobody reads.
 */
export function uploadOf (request: IncomingMessage, res: ServerResponse): PassThrough {
  const upload = new PassThrough()
  request.pipe(upload)
  res.once('close', () => {
    if (request.complete || request.destroyed) return
    request.unpipe(upload)
    request.resume()
  })
  return upload
}
