import { connect } from 'node:tls'

/** HandshakeResult says whether a TLS session was resumed, and the ticket the server gave this time. */
export interface HandshakeResult {
  reused: boolean
  session: Buffer | undefined
}

/**
 * handshake connects to `port` as mail.contoso.test, offering `session` when given, sends one
 * request and reads to the end: a TLS 1.3 ticket arrives only after the handshake, with the
 * server's first application data.
 */
export function handshake (port: number, ca: string, options: { session?: Buffer | undefined, maxVersion?: 'TLSv1.2' | 'TLSv1.3' } = {}): Promise<HandshakeResult> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined
    let reused = false
    const socket = connect({ host: '127.0.0.1', port, servername: 'mail.contoso.test', ca, ...(options.maxVersion ? { maxVersion: options.maxVersion } : {}), ...(options.session ? { session: options.session } : {}) })
    socket.on('session', (value: Buffer) => { ticket = value })
    socket.once('secureConnect', () => {
      reused = socket.isSessionReused()
      socket.write('GET /owa/healthcheck.htm HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close\r\n\r\n')
    })
    socket.on('data', () => undefined)
    socket.once('close', () => resolve({ reused, session: ticket }))
    socket.once('error', reject)
  })
}
