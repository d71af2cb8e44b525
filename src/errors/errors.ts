import { STATUS_CODES } from 'node:http'

/**
 * The one registry of casgate's error codes. Every code has a stable name (`CASGATE_ERR_…`),
 * the HTTP status it answers with when it ends a request, and a message template.
 * `docs/errors.md` documents each code; a test fails when one is missing there.
 */
export const errorCatalog = {
  CASGATE_ERR_CONFIG_INVALID: { status: 500, message: 'configuration is invalid' },
  CASGATE_ERR_CONFIG_READ: { status: 500, message: 'cannot read configuration file %s' },
  CASGATE_ERR_CERT_LOAD: { status: 500, message: 'cannot load certificate: %s' },
  CASGATE_ERR_NOT_PUBLISHED: { status: 404, message: 'path is not published by this gateway' },
  CASGATE_ERR_BAD_REQUEST: { status: 400, message: 'malformed request: %s' },
  CASGATE_ERR_METHOD_NOT_ALLOWED: { status: 405, message: 'method %s is not allowed on %s' },
  CASGATE_ERR_NO_BACKEND: { status: 503, message: 'no backend available for %s' },
  CASGATE_ERR_CAPACITY: { status: 503, message: 'every upstream connection for %s is busy' },
  CASGATE_ERR_UPSTREAM_REFUSED: { status: 502, message: 'backend refused the connection' },
  CASGATE_ERR_UPSTREAM_RESET: { status: 502, message: 'backend closed the connection' },
  CASGATE_ERR_UPSTREAM_TLS: { status: 502, message: 'TLS to the backend failed: %s' },
  CASGATE_ERR_UPSTREAM_TIMEOUT: { status: 504, message: 'backend did not answer in time' },
  CASGATE_ERR_UPSTREAM_FAILED: { status: 502, message: 'backend request failed' },
  CASGATE_ERR_PREAUTH_REQUIRED: { status: 401, message: 'authentication required' },
  CASGATE_ERR_PREAUTH_UNAVAILABLE: { status: 503, message: 'sign-in is unavailable: the credential provider cannot be reached' },
  CASGATE_ERR_BLOCKED: { status: 403, message: 'request blocked by rule %s' },
  CASGATE_ERR_HEADERS_TOO_LARGE: { status: 431, message: 'request headers are larger than %s bytes' },
  CASGATE_ERR_MISDIRECTED: { status: 421, message: 'connect to %s by its own name' },
  CASGATE_ERR_CLIENT_CERTIFICATE: { status: 403, message: 'a valid client certificate is required for %s' },
  CASGATE_ERR_ADMIN_UNAUTHORIZED: { status: 401, message: 'the admin listener needs Authorization: Bearer <admin token>' },
  CASGATE_ERR_ADMIN_HOST: { status: 421, message: 'the admin listener is not reached as %s' },
  CASGATE_ERR_ADMIN_CROSS_SITE: { status: 403, message: 'a change through the admin listener must come from its own origin: %s' },
  CASGATE_ERR_ADMIN_JSON: { status: 415, message: 'a change through the admin listener takes a JSON body (Content-Type: application/json)' },
  CASGATE_ERR_INTERNAL: { status: 500, message: 'internal error' }
} as const satisfies Record<string, { status: number, message: string }>

/** errorBody is the JSON every casgate error answers with, in fastify's shape plus our code. */
export function errorBody (statusCode: number, code: string, message: string): string {
  return JSON.stringify({ statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message })
}

/** ErrorCode is the name of one registered casgate error. */
export type ErrorCode = keyof typeof errorCatalog

/** CasgateError carries a registered code and the HTTP status it maps to. */
export class CasgateError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number

  constructor (code: ErrorCode, args: readonly unknown[] = [], options?: { cause?: unknown }) {
    const entry = errorCatalog[code]
    let i = 0
    super(entry.message.replace(/%s/g, () => String(args[i++])), options)
    this.name = 'CasgateError'
    this.code = code
    this.statusCode = entry.status
  }
}

/** ConfigIssue is one problem found in a configuration: where, what, and how to fix it. */
export interface ConfigIssue {
  path: string
  message: string
  fix?: string
}

/** ConfigError lists every problem found in a configuration at once. */
export class ConfigError extends CasgateError {
  readonly issues: ConfigIssue[]
  readonly source: string

  constructor (source: string, issues: ConfigIssue[]) {
    super('CASGATE_ERR_CONFIG_INVALID')
    this.issues = issues
    this.source = source
    this.message = formatConfigIssues(source, issues)
  }
}

/** formatConfigIssues renders issues one per line: `path: message. Fix: …`. */
export function formatConfigIssues (source: string, issues: readonly ConfigIssue[]): string {
  const lines = issues.map((issue) => {
    const fix = issue.fix ? ` Fix: ${issue.fix}` : ''
    return `  ${issue.path || '(top level)'}: ${issue.message}.${fix}`
  })
  return `configuration error in ${source} (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`
}
