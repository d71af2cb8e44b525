// The one reading of a request target that every decision is made on: vdir routing, the
// preauthentication exclusions and the RPC path check all see the path IIS will serve, not the
// bytes the client sent. IIS (HTTP.sys) percent-decodes the path once, treats '\' as '/',
// resolves dot segments and, being Windows underneath, ignores trailing dots and spaces of a
// name. A target whose decoded form could reach somewhere else than its first segment says
// (/rpc/..%2f..%2fecp/) is refused rather than rewritten: no Exchange client sends one.

/** RequestTarget is a request target split and decoded once. */
export interface RequestTarget {
  /** The path percent-decoded once: what IIS serves. Case is kept; compare case-insensitively. */
  path: string
  /** The query as sent, without '?' (not decoded: Exchange reads it itself). */
  query: string
}

/** TargetVerdict is a usable target, or why not. */
export type TargetVerdict = { ok: true, target: RequestTarget } | { ok: false, problem: string }

/** MAX_TARGET_LENGTH matches IIS's default maxUrl + maxQueryString (16 KB together is plenty for Exchange). */
export const MAX_TARGET_LENGTH = 16 * 1024

// A segment of dots (with the spaces Windows drops from names) means "here" or "up".
const dotSegment = /(^|\/)[. ]*\.[. ]*(\/|$)/
// Windows serves healthcheck.htm. and "healthcheck.htm " as healthcheck.htm: refused too, so
// that no exclusion, rule or vdir can be spelt two ways.
const trailingDotOrSpace = /[. ](\/|$)/

function segmentProblem (path: string): string | undefined {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return 'control character in path'
    if (c === 92 /* \ */) return 'backslash in path'
  }
  if (dotSegment.test(path)) return 'path traversal'
  if (trailingDotOrSpace.test(path)) return 'name ending in a dot or space'
  return undefined
}

/**
 * parseRequestTarget reads an origin-form request target (RFC 9112 §3.2.1). A raw '#' is
 * refused: a fragment never travels in a request, and a proxy that stops at it sees another
 * path than the server (/owa#/healthcheck.htm); '%23' is a literal character of a name.
 */
export function parseRequestTarget (raw: string): TargetVerdict {
  if (raw.charCodeAt(0) !== 47) return { ok: false, problem: 'request target must be a path' }
  if (raw.length > MAX_TARGET_LENGTH) return { ok: false, problem: 'request target too long' }
  if (raw.includes('#')) return { ok: false, problem: "'#' in request target" }
  const mark = raw.indexOf('?')
  let path = mark === -1 ? raw : raw.slice(0, mark)
  const query = mark === -1 ? '' : raw.slice(mark + 1)
  if (path.includes('%')) {
    try {
      path = decodeURIComponent(path)
    } catch {
      // Malformed escapes, overlong or invalid UTF-8, IIS's own %uXXXX form.
      return { ok: false, problem: 'bad percent-encoding in path' }
    }
    if (path.charCodeAt(0) !== 47) return { ok: false, problem: 'request target must be a path' }
  }
  if (path.includes('\0')) return { ok: false, problem: 'NUL in path' }
  // Dots and slashes encoded twice become traversal to whatever decodes once more (IIS refuses
  // double escaping by default; an application behind it might not).
  if (path.includes('%') && /%(2e|2f|5c)/i.test(path)) return { ok: false, problem: 'double-encoded dot or slash in path' }
  const problem = segmentProblem(path)
  if (problem !== undefined) return { ok: false, problem }
  return { ok: true, target: { path, query } }
}
