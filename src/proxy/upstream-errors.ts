import { CasgateError, type ErrorCode } from '../errors/errors.js'

// The one function that says what an upstream failure means for the client:
// 502 when the backend refused or dropped us, 504 when it was too slow (RFC 9110 §15.6).

const timeoutCodes = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT'])
const refusedCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'])
const resetCodes = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED'])

function isTlsCode (code: string): boolean {
  return code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || code.startsWith('CERT_') ||
    code.includes('CERT') || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'HOSTNAME_MISMATCH'
}

/** errorCodes lists the `code` of an error and of each error in its cause chain, outermost first. */
function errorCodes (err: unknown): Array<{ code: string, message: string }> {
  const out: Array<{ code: string, message: string }> = []
  let current: unknown = err
  for (let depth = 0; current && depth < 8; depth++) {
    const e = current as { code?: unknown, message?: unknown, cause?: unknown }
    if (typeof e.code === 'string') out.push({ code: e.code, message: String(e.message ?? '') })
    current = e.cause
  }
  return out
}

/** upstreamFailure maps an error from the upstream side to the CasgateError the client sees. */
export function upstreamFailure (err: unknown): CasgateError {
  const codes = errorCodes(err)
  let code: ErrorCode = 'CASGATE_ERR_UPSTREAM_FAILED'
  let detail = ''
  // The innermost cause is the most specific one.
  for (const { code: c, message } of codes.reverse()) {
    if (isTlsCode(c)) { code = 'CASGATE_ERR_UPSTREAM_TLS'; detail = `${c}: ${message}`; break }
    if (refusedCodes.has(c)) { code = 'CASGATE_ERR_UPSTREAM_REFUSED'; break }
    if (timeoutCodes.has(c)) { code = 'CASGATE_ERR_UPSTREAM_TIMEOUT'; break }
    if (resetCodes.has(c)) { code = 'CASGATE_ERR_UPSTREAM_RESET'; break }
  }
  return new CasgateError(code, [detail], { cause: err })
}
