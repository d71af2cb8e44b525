import type { KeyObject } from 'node:crypto'
import { resolve } from 'node:path'
import type { ConfigIssue } from '../errors.js'
import type { ScryptHash } from '../preauth/password-hash.js'
import { readUsersFile } from '../preauth/users-file.js'
import type { LdapConfig, PreauthConfig } from './schema.js'
import { resolveSecret, type SecretSource } from './secrets.js'

/** CredentialSource is where passwords are checked. */
export type CredentialSource =
  | { kind: 'users-file', file: string, users: ReadonlyMap<string, ScryptHash> }
  | { kind: 'ldap', ldap: Omit<LdapConfig, 'ca'>, ca: string | undefined }

/** PreauthSettings is the preauth block, resolved: secret and users loaded, provider chosen. */
export interface PreauthSettings extends Omit<PreauthConfig, 'secretFile' | 'secretEnv' | 'usersFile' | 'ldap'> {
  /** Encrypts and signs session cookies, keys the Basic cache and lockout tables. */
  secret: KeyObject
  secretSource: SecretSource
  credentials: CredentialSource
}

/**
 * resolvePreauth checks the preauth block: exactly one credential source, a users file that
 * parses line by line, an LDAP CA that loads, timeouts that make sense.
 */
export function resolvePreauth (config: PreauthConfig, hosts: ReadonlyArray<object>, baseDir: string, issues: ConfigIssue[], loadCa: (files: string | string[], path: string) => string | undefined): PreauthSettings | undefined {
  const { secretFile: _file, secretEnv: _env, usersFile, ldap, ...settings } = config
  const secret = resolveSecret(config, 'preauth', hosts, baseDir, issues)
  if (config.absoluteTimeoutMs < config.idleTimeoutMs) {
    issues.push({ path: 'preauth.absoluteTimeoutMs', message: `${config.absoluteTimeoutMs} ms is shorter than idleTimeoutMs (${config.idleTimeoutMs} ms)`, fix: 'make the absolute lifetime at least as long as the idle timeout' })
  }
  if ((usersFile === undefined) === (ldap === undefined)) {
    issues.push({
      path: 'preauth',
      message: usersFile === undefined ? 'has no credential provider' : 'has both usersFile and ldap',
      fix: 'set exactly one of preauth.ldap: { urls: [ldaps://dc1.contoso.local], bindName: "{user}@contoso.com" } and preauth.usersFile: users.txt'
    })
    return undefined
  }
  let credentials: CredentialSource
  if (usersFile !== undefined) {
    const file = resolve(baseDir, usersFile)
    let parsed: ReturnType<typeof readUsersFile>
    try {
      parsed = readUsersFile(file)
    } catch (err) {
      issues.push({ path: 'preauth.usersFile', message: `cannot read ${usersFile} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: 'create it with: casgate users add <file> <user>' })
      return undefined
    }
    for (const problem of parsed.problems) {
      issues.push({ path: `preauth.usersFile (${usersFile} line ${problem.line})`, message: problem.message, fix: 'write the line with: casgate users add <file> <user>' })
    }
    if (parsed.users.size === 0 && parsed.problems.length === 0) {
      issues.push({ path: 'preauth.usersFile', message: `${usersFile} lists no user`, fix: 'add one with: casgate users add <file> <user>' })
    }
    credentials = { kind: 'users-file', file, users: parsed.users }
  } else {
    const { ca, ...rest } = ldap!
    credentials = { kind: 'ldap', ldap: rest, ca: ca === undefined ? undefined : loadCa(ca, 'preauth.ldap.ca') }
    if (rest.urls.some((url) => url.toLowerCase().startsWith('ldap://')) && !rest.startTls) {
      issues.push({ path: 'preauth.ldap.urls', message: 'ldap:// without startTls sends every user\'s password in clear text to the directory', fix: 'use ldaps://host:636, or set startTls: true' })
    }
  }
  return { ...settings, secret: secret.key, secretSource: secret.source, credentials }
}
