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
    const lower = serverName.toLowerCase()
    const exact = this.#exact.get(lower)
    if (exact !== undefined) return exact
    const dot = lower.indexOf('.')
    return dot > 0 ? this.#wildcard.get(lower.slice(dot + 1)) : undefined
  }
}
