import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import type { Logger } from 'pino'

/** Accepts one client connection: a front door. */
export type Accept = (socket: Socket) => void

/**
 * ClientPort is the listening socket of the client port, apart from the front door that serves
 * what it accepts. A whole-configuration reload in one process builds a second front door (new
 * certificates, hosts, pools) and hands the port to it: no connection is refused while the port
 * changes hands, and the previous door keeps serving the connections it holds.
 */
export class ClientPort {
  readonly #net: NetServer
  #accept: Accept | undefined
  /**
   * The connections every door of this port holds, and how many per address: the connection
   * limits count them all, so that a reload's new door does not start from zero while the
   * previous one still holds its connections.
   */
  readonly open = new Set<Socket>()
  readonly perAddress = new Map<string, number>()

  constructor (logger: Logger) {
    // Half-open: a passthrough client may send its FIN with the hello, before a backend is
    // connected; the FIN must wait for the backend instead of closing the client. Terminated
    // sockets are governed by their TLS socket, which is not half-open.
    this.#net = createNetServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      if (this.#accept === undefined) socket.destroy()
      else this.#accept(socket)
    })
    this.#net.on('error', (err) => logger.error({ err }, 'listener error'))
  }

  /** handTo makes `accept` take every connection from now on. */
  handTo (accept: Accept): void {
    this.#accept = accept
  }

  /** servedBy says whether `accept` takes the port's connections now. */
  servedBy (accept: Accept): boolean {
    return this.#accept === accept
  }

  get listening (): boolean {
    return this.#net.listening
  }

  address (): AddressInfo {
    return this.#net.address() as AddressInfo
  }

  /** listen opens the port; resolves with the bound address (port 0 picks a free one). */
  listen (host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#net.once('error', reject)
      this.#net.listen({ host, port }, () => {
        this.#net.off('error', reject)
        resolve(this.address())
      })
    })
  }

  /**
   * close stops accepting at once; connections already accepted are their door's, and the
   * promise resolves only once they have all ended too.
   */
  close (): Promise<void> {
    this.#accept = undefined
    return new Promise((resolve) => this.#net.listening ? this.#net.close(() => resolve()) : resolve())
  }
}
