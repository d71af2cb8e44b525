import type { HstsConfig } from '../config/schema.js'

// Headers casgate adds to what Exchange answers, per configuration: HSTS on the whole front,
// and Microsoft's CSP mitigation for OWA (CVE-2026-42897), which stops inline event-handler
// attributes (onerror=, onclick=) from running in OWA's HTML while its script files still load.

/** ResponseHardening is what one vdir's responses get added. */
export interface ResponseHardening {
  /** The Strict-Transport-Security value, when configured. */
  hsts: string | undefined
  /** Append script-src-attr 'none' to the CSP of HTML responses. */
  scriptSrcAttrNone: boolean
}

const SCRIPT_SRC_ATTR_NONE = "script-src-attr 'none'"

/** hstsValue renders the configured Strict-Transport-Security header (RFC 6797 §6.1). */
export function hstsValue (config: HstsConfig | undefined): string | undefined {
  if (config === undefined) return undefined
  return `max-age=${config.maxAgeSeconds}${config.includeSubDomains ? '; includeSubDomains' : ''}`
}

/** responseHardening is a vdir's hardening, or undefined when it has none (the common case costs nothing). */
export function responseHardening (hsts: string | undefined, scriptSrcAttrNone: boolean): ResponseHardening | undefined {
  return hsts === undefined && !scriptSrcAttrNone ? undefined : { hsts, scriptSrcAttrNone }
}

/** hardenResponse adds the hardening to a flat [name, value, …] response header list (lower-case names). */
export function hardenResponse (out: string[], hardening: ResponseHardening): void {
  let html = false
  let csp = false
  let hsts = false
  for (let i = 0; i < out.length; i += 2) {
    const name = out[i]
    if (name === 'content-type') html = /^\s*text\/html/i.test(out[i + 1]!)
    else if (name === 'strict-transport-security') hsts = true
    else if (name === 'content-security-policy') csp = true
  }
  if (hardening.hsts !== undefined && !hsts) out.push('strict-transport-security', hardening.hsts)
  if (!hardening.scriptSrcAttrNone || !html) return
  if (!csp) {
    out.push('content-security-policy', SCRIPT_SRC_ATTR_NONE)
    return
  }
  // Every policy present applies (CSP3 §8.1): each gets the directive unless it has its own.
  for (let i = 0; i < out.length; i += 2) {
    if (out[i] !== 'content-security-policy' || /(^|;)\s*script-src-attr\s/i.test(out[i + 1]!)) continue
    const policy = out[i + 1]!.replace(/[\s;]+$/, '')
    out[i + 1] = policy === '' ? SCRIPT_SRC_ATTR_NONE : `${policy}; ${SCRIPT_SRC_ATTR_NONE}`
  }
}
