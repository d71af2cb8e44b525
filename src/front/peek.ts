import type { Socket } from 'node:net'

/** Inspection is what a look at the bytes so far decides: wait for more, accept, or refuse. */
export type Inspection<T> = { state: 'partial' } | { state: 'complete', value: T } | { state: 'invalid', reason: string }

/** PeekOutcome is how a peek ended; `bytes` is everything read, to be handed on. */
export type PeekOutcome<T> = { ok: true, value: T, bytes: Buffer } | { ok: false, reason: string, bytes: Buffer }

/**
 * peekSocket reads from a fresh socket until `inspect` decides, the client goes away, `maxBytes`
 * is exceeded or `timeoutMs` passes. The socket is left paused; the caller gives the bytes back
 * (socket.unshift) or forwards them, so nothing is lost whichever way the connection goes.
 */
export function peekSocket<T> (socket: Socket, options: { timeoutMs: number, maxBytes: number }, inspect: (bytes: Buffer) => Inspection<T>, done: (outcome: PeekOutcome<T>) => void): void {
  let buffer: Buffer = Buffer.alloc(0)
  let finished = false

  const finish = (outcome: PeekOutcome<T>): void => {
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
    const result = inspect(buffer)
    if (result.state === 'complete') finish({ ok: true, value: result.value, bytes: buffer })
    else if (result.state === 'invalid') finish({ ok: false, reason: result.reason, bytes: buffer })
    else if (buffer.length > options.maxBytes) finish({ ok: false, reason: 'too large', bytes: buffer })
  }
  const onEnd = (): void => finish({ ok: false, reason: 'closed early', bytes: buffer })
  const timer = setTimeout(() => finish({ ok: false, reason: 'timed out', bytes: buffer }), options.timeoutMs)

  socket.on('data', onData)
  socket.once('end', onEnd)
  socket.once('close', onEnd)
  // An earlier peek may have paused the socket; a 'data' listener alone does not resume it.
  socket.resume()
}
