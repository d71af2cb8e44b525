import type { Logger } from 'pino'
import type { Backend } from '../pool/backend-pool.js'
import { writeError } from '../errors/error-reply.js'
import type { ExchangeEvents } from './upstream-exchange.js'

// Failures that say the server (not the request) is at fault, and those safe to retry elsewhere:
// nothing of the response reached the client, and the server may not have seen the request.
const backendFaults = new Set(['CASGATE_ERR_UPSTREAM_REFUSED', 'CASGATE_ERR_UPSTREAM_RESET', 'CASGATE_ERR_UPSTREAM_TIMEOUT', 'CASGATE_ERR_UPSTREAM_TLS'])
const retriable = new Set(['CASGATE_ERR_UPSTREAM_REFUSED', 'CASGATE_ERR_UPSTREAM_RESET', 'CASGATE_ERR_UPSTREAM_TLS'])

/**
 * exchangeEvents decides what an upstream failure means: passive health hears the failures that
 * are the server's, a request that may be repeated goes to one more server, a pinned logon whose
 * server went away is closed (the client logs on anew), anything else gets its error answer; a
 * client that broke off its request is nobody's failure but its own.
 */
export function exchangeEvents (accessLog: Logger, onBackendFailure: (backend: Backend, vdir: string, reason: string) => void): ExchangeEvents {
  return {
    onFailure (exchange, error, cause) {
      if (backendFaults.has(error.code)) onBackendFailure(exchange.backend, exchange.vdir, error.code)
      accessLog.warn({ err: cause, code: error.code, backend: exchange.backend.name, pinned: exchange.pinned }, 'upstream request failed')
      // Nothing reached the client yet and the request may be repeated: one more server tries.
      if (retriable.has(error.code) && exchange.retry?.()) return
      // A pinned connection whose backend is gone is closed, not moved: the client logs on anew.
      if (exchange.pinned && (error.code === 'CASGATE_ERR_UPSTREAM_REFUSED' || error.code === 'CASGATE_ERR_UPSTREAM_RESET')) {
        exchange.res.destroy()
        return
      }
      writeError(exchange.res, error)
    },
    onClientAbort (exchange, cause) {
      accessLog.info({ err: cause, backend: exchange.backend.name, side: 'client' }, 'client aborted its request')
      exchange.res.destroy()
    }
  }
}
