import { isIP } from 'node:net'
import type { LdapConfig } from '../config/schema.js'
import { hasControlCharacters } from '../util/text.js'
import type { CheckResult, CredentialProvider } from './credential-provider.js'

// Simple bind as the user: the directory checks the password, applies its own lockout and
// account state (disabled, expired: AD answers 49 like a wrong password), and casgate needs no
// service account. Active Directory takes the UPN (user@contoso.com) or DOMAIN\user as the bind
// name; other directories take a DN, so the user's part is escaped as a DN value (RFC 4514).

/** escapeDnValue escapes a string for use inside an RDN value. */
export function escapeDnValue (value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ')
}

/** bindNameFor fills the template; a DN template gets the escaped value. */
export function bindNameFor (template: string, user: string): string {
  const isDn = /^[A-Za-z][\w-]*=\{user\}/.test(template) || template.includes(',')
  return template.replaceAll('{user}', isDn ? escapeDnValue(user) : user)
}

export class LdapProvider implements CredentialProvider {
  readonly #config: Omit<LdapConfig, 'ca'>
  readonly #ca: string | undefined

  constructor (config: Omit<LdapConfig, 'ca'>, ca: string | undefined) {
    this.#config = config
    this.#ca = ca
  }

  async check (user: string, password: string): Promise<CheckResult> {
    // An empty password is an "unauthenticated bind" (RFC 4513 §5.1.2), which many directories
    // accept as success: never let one through. Control characters have no business in a name.
    if (password === '' || user.trim() === '' || hasControlCharacters(user)) return 'invalid'
    const name = bindNameFor(this.#config.bindName, user)
    // Loaded at the first LDAP check, not at start: ldapts and its dependencies are heap
    // that a gateway without LDAP preauthentication never needs (bench/README.md, session 4: memory).
    const { Client, InvalidCredentialsError } = await import('ldapts')
    for (const url of this.#config.urls) {
      const secure = url.toLowerCase().startsWith('ldaps://')
      const tls = { ...(this.#ca !== undefined ? { ca: this.#ca } : {}), minVersion: 'TLSv1.2' as const }
      // ldapts speaks TLS from the first byte whenever tlsOptions are given: only for ldaps://.
      const client = new Client({ url, timeout: this.#config.timeoutMs, connectTimeout: this.#config.timeoutMs, ...(secure ? { tlsOptions: tls } : {}) })
      try {
        if (this.#config.startTls && !secure) {
          // The certificate is checked against the URL's host (ldapts would check "localhost").
          const host = new URL(url).hostname.replace(/^\[|\]$/g, '')
          await client.startTLS({ ...tls, ...(isIP(host) === 0 ? { servername: host } : { host }) })
        }
        await client.bind(name, password)
        return 'valid'
      } catch (err) {
        if (err instanceof InvalidCredentialsError) return 'invalid'
        // Unreachable, timed out, TLS refused, busy: the next server may know.
      } finally {
        await client.unbind().catch(() => undefined)
      }
    }
    return 'unavailable'
  }
}
