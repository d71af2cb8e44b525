import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { GatewayConfig, ResolvedHost, TerminatedHost } from '../config/load.js'
import type { SniRouting } from './front-door.js'
import { HostNameTable } from '../util/host-names.js'

/**
 * sniRouting routes by the ClientHello's name: passthrough names away from the TLS servers, names
 * that require client certificates to the TLS server that asks for them. Undefined when neither
 * exists, and the ClientHello is then not read before TLS.
 */
export function sniRouting (config: GatewayConfig, relay: Pick<SniRouting, 'relay'>): SniRouting | undefined {
  const hasClientCertificateHosts = config.hosts.some((host) => host.mode !== 'passthrough' && host.clientCertificate !== undefined)
  if (!hasClientCertificateHosts && !config.hosts.some((host) => host.mode === 'passthrough')) return undefined
  const byName = new HostNameTable<ResolvedHost>()
  for (const host of config.hosts) for (const name of host.names) byName.set(name, host)
  const hostFor = (serverName: string | undefined): ResolvedHost => (serverName === undefined ? undefined : byName.get(serverName)) ?? config.defaultHost
  return {
    passthroughFor (serverName) {
      const host = hostFor(serverName)
      return host.mode === 'passthrough' ? host : undefined
    },
    relay: relay.relay,
    hasClientCertificateHosts,
    requiresClientCertificate (serverName) {
      const host = hostFor(serverName)
      return host.mode !== 'passthrough' && host.clientCertificate !== undefined
    }
  }
}

/**
 * hostOfConnection names the host a connection was made to, for requests that name none (HTTP/1.0
 * without Host): its SNI name when casgate publishes it, else the default host's first name.
 * Without it undici would send the backend's own address as Host.
 */
export function hostOfConnection (hosts: readonly TerminatedHost[], defaultHost: ResolvedHost): (socket: Socket) => string {
  const names = new HostNameTable<true>()
  for (const host of hosts) for (const name of host.names) names.set(name, true)
  const fallback = defaultHost.names.find((name) => !name.startsWith('*')) ?? hosts.flatMap((host) => host.names).find((name) => !name.startsWith('*')) ?? 'localhost'
  return (socket) => {
    const servername = (socket as TLSSocket).servername
    return typeof servername === 'string' && names.get(servername) !== undefined ? servername.toLowerCase() : fallback
  }
}
