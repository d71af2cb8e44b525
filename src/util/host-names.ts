// A DNS name may be written fully qualified, with a trailing dot (RFC 1034 §3.1): mail.contoso.com.
// is mail.contoso.com to every resolver and to IIS, so it must be to every check of casgate's too.
const hostSyntax = /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/
const ipv6Literal = /^\[[0-9a-f:.]+\]$/

/** normalizeHostName lowercases a host name and drops one trailing dot. */
export function normalizeHostName (name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/**
 * parseHostHeader reads a Host header (RFC 9110 §7.2: uri-host [":" port]) into its normalised
 * name and the value to forward, or undefined when it is not one.
 */
export function parseHostHeader (value: string): { name: string, forward: string } | undefined {
  if (value.length === 0 || value.length > 300) return undefined
  let name = value
  let port = ''
  const colon = value.lastIndexOf(':')
  if (colon !== -1 && !value.endsWith(']')) {
    port = value.slice(colon + 1)
    name = value.slice(0, colon)
    if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) return undefined
  }
  name = normalizeHostName(name)
  if (!hostSyntax.test(name) && !ipv6Literal.test(name)) return undefined
  return { name, forward: port === '' ? name : `${name}:${port}` }
}

/**
 * HostNameTable maps TLS server names to values: exact names first, then `*.domain` wildcards
 * matching one label (RFC 6125 §6.4.3). Names are case-insensitive.
 */
export class HostNameTable<T> {
  readonly #exact = new Map<string, T>()
  readonly #wildcard = new Map<string, T>()

  set (name: string, value: T): void {
    const lower = name.toLowerCase()
    if (lower.startsWith('*.')) this.#wildcard.set(lower.slice(2), value)
    else this.#exact.set(lower, value)
  }

  get (serverName: string): T | undefined {
    const lower = normalizeHostName(serverName)
    const exact = this.#exact.get(lower)
    if (exact !== undefined) return exact
    const dot = lower.indexOf('.')
    return dot > 0 ? this.#wildcard.get(lower.slice(dot + 1)) : undefined
  }
}
