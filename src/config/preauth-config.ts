import type { KeyObject } from 'node:crypto'
import { resolve } from 'node:path'
import type { ConfigIssue } from '../errors/errors.js'
import type { ScryptHash } from '../auth/password-hash.js'
import { readUsersFile } from '../auth/users-file.js'
import type { LdapConfig, PreauthConfig } from './schema.js'
import { resolveSessionSecrets, resolveStateDir, type SessionSecretSource } from './secrets.js'
import { resolveBearer, type BearerSettings } from './bearer-config.js'

/** CredentialSource is where passwords are checked. */
export type CredentialSource =
  | { kind: 'users-file', file: string, users: ReadonlyMap<string, ScryptHash> }
  | { kind: 'ldap', ldap: Omit<LdapConfig, 'ca'>, ca: string | undefined }

/** PreauthSettings is the preauth block, resolved: secret and users loaded, provider chosen. */
export interface PreauthSettings extends Omit<PreauthConfig, 'secretFile' | 'secretEnv' | 'usersFile' | 'ldap' | 'bearer'> {
  /** Bearer validation at the edge, when preauth.bearer is configured. */
  bearer: BearerSettings | undefined
  /** The newest secret: seals session cookies, keys the CSRF token, the Basic cache, lockout and revocation tables. */
  secret: KeyObject
  /** Every configured secret, newest (`secret`) first: each opens session cookies (rotation). */
  secrets: readonly KeyObject[]
  secretSource: SessionSecretSource
  /** The file the secrets come from (secretFile or the state file), for `casgate check`. */
  secretFile: string | undefined
  /** False when the secret was generated for this run only (`casgate check` writes nothing). */
  secretStored: boolean
  credentials: CredentialSource
}

/** PreauthStateOptions say where casgate keeps state and whether this run may create files there. */
export interface PreauthStateOptions {
  /** The configuration's stateDir, as written (relative to baseDir). */
  stateDir: string | undefined
  /** False for `casgate check`: a missing state file is reported, not created. */
  writeState: boolean
}

/** describeSessionSecret says where the session secret comes from, for `casgate check`. */
export function describeSessionSecret (settings: Pick<PreauthSettings, 'secrets' | 'secretSource' | 'secretFile' | 'secretStored'>): string {
  const rotation = settings.secrets.length > 1 ? ` (${settings.secrets.length} secrets: the first seals, all open)` : ''
  switch (settings.secretSource) {
    case 'file': return `preauth.secretFile ${settings.secretFile}${rotation}`
    case 'env': return `preauth.secretEnv${rotation}`
    case 'state-file': return `state file ${settings.secretFile}${rotation}`
    case 'generated': return settings.secretStored ? `generated into ${settings.secretFile}` : `will be generated at first start into ${settings.secretFile}`
  }
}

function resolveCredentials (usersFile: string | undefined, ldap: LdapConfig | undefined, baseDir: string, issues: ConfigIssue[], loadCa: (files: string | string[], path: string) => string | undefined): CredentialSource | undefined {
  if ((usersFile === undefined) === (ldap === undefined)) {
    issues.push({
      path: 'preauth',
      message: usersFile === undefined ? 'has no credential provider' : 'has both usersFile and ldap',
      fix: 'set exactly one of preauth.ldap: { urls: [ldaps://dc1.contoso.local], bindName: "{user}@contoso.com" } and preauth.usersFile: users.txt'
    })
    return undefined
  }
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
    return { kind: 'users-file', file, users: parsed.users }
  }
  const { ca, ...rest } = ldap!
  const credentials: CredentialSource = { kind: 'ldap', ldap: rest, ca: ca === undefined ? undefined : loadCa(ca, 'preauth.ldap.ca') }
  if (rest.urls.some((url) => url.toLowerCase().startsWith('ldap://')) && !rest.startTls) {
    issues.push({ path: 'preauth.ldap.urls', message: 'ldap:// without startTls sends every user\'s password in clear text to the directory', fix: 'use ldaps://host:636, or set startTls: true' })
  }
  return credentials
}

/**
 * resolvePreauth checks the preauth block: exactly one credential source, a users file that
 * parses line by line, an LDAP CA that loads, timeouts that make sense, and loads the session
 * secrets last: a configuration that fails leaves no state file behind.
 */
export function resolvePreauth (config: PreauthConfig, baseDir: string, issues: ConfigIssue[], loadCa: (files: string | string[], path: string) => string | undefined, state: PreauthStateOptions): PreauthSettings | undefined {
  const { secretFile: _file, secretEnv: _env, usersFile, ldap, ...settings } = config
  if (config.absoluteTimeoutMs < config.idleTimeoutMs) {
    issues.push({ path: 'preauth.absoluteTimeoutMs', message: `${config.absoluteTimeoutMs} ms is shorter than idleTimeoutMs (${config.idleTimeoutMs} ms)`, fix: 'make the absolute lifetime at least as long as the idle timeout' })
  }
  const credentials = resolveCredentials(usersFile, ldap, baseDir, issues, loadCa)
  const bearer = config.bearer === undefined ? undefined : resolveBearer(config.bearer, 'preauth.bearer', baseDir, issues)
  const secrets = resolveSessionSecrets(config, 'preauth', { dir: resolveStateDir(state.stateDir, baseDir), write: state.writeState && issues.length === 0 }, baseDir, issues)
  if (secrets === undefined || credentials === undefined) return undefined
  return { ...settings, bearer, secret: secrets.keys[0]!, secrets: secrets.keys, secretSource: secrets.source, secretFile: secrets.file, secretStored: secrets.stored, credentials }
}
