import type { Logger } from 'pino'
import type { CasgateError } from '../errors/errors.js'
import { writeError } from '../errors/error-reply.js'
import type { GatewayMetrics } from '../observe/metrics.js'
import type { RecentErrors } from '../observe/recent-errors.js'
import type { Server } from '../upstream/server.js'
import type { ExchangeEvents, UpstreamExchange } from './upstream-exchange.js'
import { upstreamFailure } from './upstream-errors.js'

// Failures that say the server (not the request) is at fault, and those safe to repeat elsewhere:
// nothing of the response reached the client, and the server may not have seen the request.
const serverFaults = new Set(['CASGATE_ERR_UPSTREAM_REFUSED', 'CASGATE_ERR_UPSTREAM_RESET', 'CASGATE_ERR_UPSTREAM_TIMEOUT', 'CASGATE_ERR_UPSTREAM_TLS'])
const repeatable = new Set(['CASGATE_ERR_UPSTREAM_REFUSED', 'CASGATE_ERR_UPSTREAM_RESET', 'CASGATE_ERR_UPSTREAM_TLS'])
// What takes an NTLM logon away with its connection (a timeout leaves it standing).
const connectionLost = new Set(['CASGATE_ERR_UPSTREAM_REFUSED', 'CASGATE_ERR_UPSTREAM_RESET'])

/** FailureReport is what the proxy's policies (retry, pinning) need of exchangeEvents. */
export interface FailureReport extends ExchangeEvents {
  /** report tells passive health (when the server is at fault) and the log of a failed attempt. */
  report: (exchange: UpstreamExchange, error: CasgateError, cause: Error, pinned?: boolean) => void
  /** mayRepeat maps an upstream error and says whether another server may be tried. */
  mayRepeat: (err: Error) => CasgateError | undefined
  /** lostLogon maps an upstream error and says whether it took a pinned connection's logon away. */
  lostLogon: (err: Error) => CasgateError | undefined
}

/**
 * exchangeEvents decides what an upstream failure means: passive health hears the failures that
 * are the server's, anything else gets its error answer; a client that broke off its request is
 * nobody's failure but its own. Retry and NTLM pinning wrap the exchange's handler
 * (upstream/retry-elsewhere.ts, upstream/connection-pins.ts) and use `report` for the attempts
 * they take over.
 */
export function exchangeEvents (accessLog: Logger, onServerFailure: (server: Server, vdir: string, reason: string) => void, observe: { metrics?: GatewayMetrics, recent?: RecentErrors } = {}): FailureReport {
  const report = (exchange: UpstreamExchange, error: CasgateError, cause: Error, pinned = false): void => {
    observe.metrics?.upstreamError(error.code, exchange.server.name)
    observe.recent?.add({ code: error.code, server: exchange.server.name, vdir: exchange.vdir })
    if (serverFaults.has(error.code)) onServerFailure(exchange.server, exchange.vdir, error.code)
    accessLog.warn({ err: cause, code: error.code, backend: exchange.server.name, ...(pinned ? { pinned } : {}) }, 'upstream request failed')
  }
  return {
    report,
    onFailure (exchange, error, cause) {
      report(exchange, error, cause)
      writeError(exchange.res, error)
    },
    onClientAbort (exchange, cause) {
      accessLog.info({ err: cause, backend: exchange.server.name, side: 'client' }, 'client aborted its request')
      exchange.res.destroy()
    },
    mayRepeat (err) {
      const error = upstreamFailure(err)
      return repeatable.has(error.code) ? error : undefined
    },
    lostLogon (err) {
      const error = upstreamFailure(err)
      return connectionLost.has(error.code) ? error : undefined
    }
  }
}
