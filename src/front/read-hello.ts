import type { Socket } from 'node:net'
import { MAX_CLIENT_HELLO, parseClientHello, type ClientHelloInfo } from './client-hello.js'

/** HelloOutcome is how reading a ClientHello ended. */
export type HelloOutcome =
  | { ok: true, hello: ClientHelloInfo, bytes: Buffer }
  | { ok: false, reason: string }

/**
 * readClientHello gathers bytes from a fresh socket until they hold a whole ClientHello, the
 * hello turns out malformed or too large, the client goes away, or `timeoutMs` passes. The
 * socket is left paused, nothing consumed from the caller's point of view: `bytes` are all it
 * read, to be replayed to whoever takes the connection.
 */
export function readClientHello (socket: Socket, timeoutMs: number, done: (outcome: HelloOutcome) => void): void {
  let buffer: Buffer = Buffer.alloc(0)
  let finished = false

  const finish = (outcome: HelloOutcome): void => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    socket.off('data', onData)
    socket.off('end', onEnd)
    socket.off('close', onEnd)
    socket.pause()
    done(outcome)
  }
  const onData = (chunk: Buffer): void => {
    buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk])
    const result = parseClientHello(buffer)
    if (result.state === 'complete') finish({ ok: true, hello: result.hello, bytes: buffer })
    else if (result.state === 'invalid') finish({ ok: false, reason: result.reason })
    else if (buffer.length > MAX_CLIENT_HELLO + 64) finish({ ok: false, reason: 'hello too large' })
  }
  const onEnd = (): void => finish({ ok: false, reason: 'closed before a complete ClientHello' })
  const timer = setTimeout(() => finish({ ok: false, reason: 'no complete ClientHello in time' }), timeoutMs)

  socket.on('data', onData)
  socket.once('end', onEnd)
  socket.once('close', onEnd)
}
