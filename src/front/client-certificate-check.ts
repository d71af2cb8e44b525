import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { TerminatedHost } from '../config/load.js'
import { CasgateError } from '../errors.js'
import { errorBody, sendError } from '../proxy/error-reply.js'
import { HostNameTable } from './host-names.js'

/** CertificateVerdicts is what the front door knows of a connection's client certificate. */
export interface CertificateVerdicts {
  clientCertificateProblem: (socket: Socket) => string | undefined
  demandedClientCertificate: (socket: Socket) => boolean
}

/**
 * addClientCertificateCheck refuses, before preauthentication or proxying, requests of hosts
 * that require a client certificate when their connection has no good one (403), and requests
 * whose Host names such a host on a connection made to another name (421: the handshake never
 * asked for a certificate). Nothing is added when no host requires one.
 */
export function addClientCertificateCheck (app: FastifyInstance, hosts: readonly TerminatedHost[], verdicts: () => CertificateVerdicts, log: Logger): void {
  const certificateHosts = new HostNameTable<true>()
  for (const host of hosts) if (host.clientCertificate) for (const name of host.names) certificateHosts.set(name, true)
  if (!hosts.some((host) => host.clientCertificate)) return
  app.addHook('onRequest', (request, reply, done) => {
    const socket = request.raw.socket
    const problem = verdicts().clientCertificateProblem(socket)
    const fronted = problem === undefined && certificateHosts.get(request.hostname) !== undefined && !verdicts().demandedClientCertificate(socket)
    if (problem === undefined && !fronted) return done()
    log.warn({ client: socket.remoteAddress, host: request.hostname, url: request.url, problem: problem ?? 'Host names a certificate-only host on another host\'s connection' }, 'client certificate refused')
    if (fronted) {
      reply.code(421).header('content-type', 'application/json; charset=utf-8')
        .send(errorBody(421, 'CASGATE_ERR_CLIENT_CERTIFICATE', `connect to ${request.hostname} by its own name`))
      return
    }
    sendError(reply, new CasgateError('CASGATE_ERR_CLIENT_CERTIFICATE', [request.hostname]))
  })
}
