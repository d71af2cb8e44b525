// Bench only (node --import ./bench/no-resumption.mjs): casgate with TLS session resumption
// refused, to compare with an nginx that refuses it too (ssl_session_cache off; ssl_session_tickets
// off). Node's TLS servers resume TLS 1.2 sessions by ticket (session IDs need 'resumeSession'
// listeners, which casgate has none of), so the client-facing servers get SSL_OP_NO_TICKET, at
// creation and on every setSecureContext: every new connection is then a full handshake.
// casgate has no setting for this; it does not need one.
import { syncBuiltinESMExports } from 'node:module'
import tls from 'node:tls'
import { constants } from 'node:crypto'

const noTicket = (options) => ({ ...options, secureOptions: (options?.secureOptions ?? 0) | constants.SSL_OP_NO_TICKET })
const createServer = tls.createServer
tls.createServer = function (options, listener) {
  return typeof options === 'function' ? createServer(noTicket({}), options) : createServer(noTicket(options), listener)
}
const setSecureContext = tls.Server.prototype.setSecureContext
tls.Server.prototype.setSecureContext = function (options) {
  return setSecureContext.call(this, noTicket(options))
}
syncBuiltinESMExports()
