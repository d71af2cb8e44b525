import type { CredentialSource } from '../config/preauth-config.js'
import { normalizeUser } from '../auth/user-name.js'
import { LdapProvider } from './ldap-provider.js'
import { hashPassword, parseScryptHash, verifyPassword, type ScryptHash } from '../auth/password-hash.js'

/** CheckResult: the password is right, wrong (or the user unknown), or nobody could tell. */
export type CheckResult = 'valid' | 'invalid' | 'unavailable'

/** CredentialProvider checks a user name and password. */
export interface CredentialProvider {
  check: (user: string, password: string) => Promise<CheckResult>
}

/** UsersFileProvider checks against the local users file's scrypt hashes. */
export class UsersFileProvider implements CredentialProvider {
  readonly #users: ReadonlyMap<string, ScryptHash>
  // An unknown user costs as much as a known one: the answer time says nothing.
  readonly #decoy: Promise<ScryptHash>

  constructor (users: ReadonlyMap<string, ScryptHash>) {
    this.#users = users
    const sample = users.values().next().value
    this.#decoy = hashPassword('decoy', sample?.logN ?? 15).then((text) => parseScryptHash(text) as ScryptHash)
  }

  async check (user: string, password: string): Promise<CheckResult> {
    const stored = this.#users.get(normalizeUser(user))
    const ok = await verifyPassword(password, stored ?? await this.#decoy)
    return ok && stored !== undefined ? 'valid' : 'invalid'
  }
}

/** createCredentialProvider builds the provider the configuration names. */
export function createCredentialProvider (source: CredentialSource): CredentialProvider {
  return source.kind === 'users-file' ? new UsersFileProvider(source.users) : new LdapProvider(source.ldap, source.ca)
}
