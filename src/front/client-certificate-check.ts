import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { TerminatedHost } from '../config/load.js'
import { CasgateError } from '../errors/errors.js'
import { sendError } from '../errors/error-reply.js'
import { HostNameTable } from '../util/host-names.js'

/** CertificateVerdicts is what the front door knows of a connection's client certificate. */
export interface CertificateVerdicts {
  clientCertificateProblem: (socket: Socket) => string | undefined
  demandedClientCertificate: (socket: Socket) => boolean
}

/** ClientCertificateCheck judges one request: undefined, or the error that ends it. */
export type ClientCertificateCheck = (socket: Socket, hostName: string | undefined) => CasgateError | undefined

/**
 * clientCertificateCheck refuses requests of hosts that require a client certificate when their
 * connection has no good one (403), and requests whose Host names such a host on a connection
 * made to another name (421: that handshake never asked for a certificate). Host names compare
 * normalised (host-names.ts), so mail.contoso.com. is mail.contoso.com. Undefined when no host
 * requires one. The HTTP path and the RPC path both ask it.
 */
export function clientCertificateCheck (hosts: readonly TerminatedHost[], verdicts: () => CertificateVerdicts, log: Logger): ClientCertificateCheck | undefined {
  if (!hosts.some((host) => host.clientCertificate)) return undefined
  const certificateHosts = new HostNameTable<true>()
  for (const host of hosts) if (host.clientCertificate) for (const name of host.names) certificateHosts.set(name, true)
  return (socket, hostName) => {
    const problem = verdicts().clientCertificateProblem(socket)
    const fronted = problem === undefined && hostName !== undefined && certificateHosts.get(hostName) !== undefined && !verdicts().demandedClientCertificate(socket)
    if (problem === undefined && !fronted) return undefined
    log.warn({ client: socket.remoteAddress, host: hostName, problem: problem ?? 'Host names a certificate-only host on another host\'s connection' }, 'client certificate refused')
    return fronted ? new CasgateError('CASGATE_ERR_MISDIRECTED', [hostName]) : new CasgateError('CASGATE_ERR_CLIENT_CERTIFICATE', [hostName])
  }
}

/** addClientCertificateCheck runs the check before preauthentication or proxying of every HTTP request. */
export function addClientCertificateCheck (app: FastifyInstance, check: ClientCertificateCheck | undefined): void {
  if (check === undefined) return
  app.addHook('onRequest', (request, reply, done) => {
    const error = check(request.raw.socket, request.hostname)
    if (error === undefined) return done()
    sendError(reply, error)
  })
}
