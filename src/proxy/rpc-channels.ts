import type { Socket } from 'node:net'
import { peekSocket } from '../front/peek.js'
import { inspectRequestLine, MAX_REQUEST_LINE, RPC_METHODS, type RequestLine } from '../front/request-line.js'
import { RpcConnection, type RpcChannelOptions } from './rpc-channel.js'

// Outlook Anywhere (RPC over HTTP) opens two long-lived requests per session, RPC_IN_DATA and
// RPC_OUT_DATA, with Content-Lengths near 1 GB, open for hours. Node's HTTP parser has a fixed
// method table and answers them 400, with no flag to allow them. So on a decrypted connection
// casgate reads the first request line itself: a connection that opens with an RPC method is
// read by casgate's own parser for its whole life (rpc-channel.ts); every other connection goes
// on to the HTTP server with the peeked bytes given back, where an RPC method later on gets 400.

/** RpcChannels sits between TLS and the HTTP server for every decrypted connection. */
export class RpcChannels {
  readonly #options: RpcChannelOptions
  /** RPC connections open now. */
  open = 0

  constructor (options: RpcChannelOptions) {
    this.#options = options
  }

  /** accept looks at a decrypted connection's first request line and keeps it or hands it on. */
  accept (socket: Socket, toHttp: (socket: Socket) => void): void {
    // The first head's time starts now: the peek of its request line counts against it.
    const headDeadline = performance.now() + this.#options.headersTimeoutMs
    peekSocket<RequestLine>(socket, { timeoutMs: this.#options.headersTimeoutMs, maxBytes: MAX_REQUEST_LINE }, inspectRequestLine, (outcome) => {
      if (outcome.ok && RPC_METHODS.has(outcome.value.method)) {
        this.open++
        // eslint-disable-next-line no-new
        new RpcConnection(socket, outcome.bytes, this.#options, headDeadline, () => { this.open-- })
        return
      }
      if (!outcome.ok && outcome.bytes.length === 0) {
        socket.destroy()
        return
      }
      // Not RPC (or not HTTP at all): the HTTP server answers it, 400 included.
      socket.unshift(outcome.bytes)
      toHttp(socket)
    })
  }
}
