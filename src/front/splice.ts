import type { Socket } from 'node:net'

/**
 * splice pipes two sockets both ways, with backpressure and half-close, and destroys both
 * whichever side closes or fails first: a bare a.pipe(b); b.pipe(a) leaks a descriptor per
 * connection when the far side closes first. `idleTimeoutMs` bounds silence in both directions
 * (a socket's timer is reset by reads and writes alike). `onClose` runs once.
 */
export function splice (client: Socket, upstream: Socket, idleTimeoutMs: number, onClose: () => void): void {
  let closed = false
  const closeBoth = (): void => {
    if (closed) return
    closed = true
    client.destroy()
    upstream.destroy()
    onClose()
  }
  client.on('error', closeBoth)
  upstream.on('error', closeBoth)
  client.once('close', closeBoth)
  upstream.once('close', closeBoth)
  client.setTimeout(idleTimeoutMs, closeBoth)
  client.pipe(upstream)
  upstream.pipe(client)
}
