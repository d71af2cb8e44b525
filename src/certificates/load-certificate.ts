import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { CasgateError } from '../errors/errors.js'
import { assembleCertificate, privateKeyFromPem, splitPemCertificates, type LoadedCertificate } from './certificate.js'
import { loadPfx } from './pfx.js'

/** Passphrase names where a key's passphrase comes from (never the YAML itself). */
interface PassphraseSource {
  passphraseFile?: string | undefined
  passphraseEnv?: string | undefined
}

/**
 * CertificateFiles is a certificate block of the configuration (config/schema.ts validates it):
 * a PFX bundle, or PEM certificate, key and chain files.
 */
export type CertificateFiles = PassphraseSource & ({ pfx: string } | { cert: string, key: string, chain?: string | string[] | undefined })

/** CertificateLoadError says which key of the certificate block was at fault. */
export class CertificateLoadError extends CasgateError {
  readonly key: string
  readonly fix: string
  constructor (key: string, reason: string, cause?: unknown, fix = 'check the file, its format and the passphrase') {
    super('CASGATE_ERR_CERT_LOAD', [reason], { cause })
    this.key = key
    this.fix = fix
  }
}

function readFile (key: string, baseDir: string, file: string): Buffer {
  try {
    return readFileSync(resolve(baseDir, file))
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // The path as written, so the admin finds it in the configuration.
    throw new CertificateLoadError(key, `cannot read ${file} (${code ?? String(err)})`, err, 'check the path; relative paths start at the configuration file\'s directory')
  }
}

/**
 * readFileOrEnv returns a secret kept outside the YAML: the content of a file (one trailing
 * newline dropped) or an environment variable. `keys` name the two configuration keys, for
 * the error (a CertificateLoadError naming the key at fault).
 */
export function readFileOrEnv (source: { file?: string | undefined, env?: string | undefined }, keys: { file: string, env: string }, baseDir: string): string | undefined {
  if (source.file !== undefined) {
    return readFile(keys.file, baseDir, source.file).toString('utf8').replace(/\r?\n$/, '')
  }
  if (source.env !== undefined) {
    const value = process.env[source.env]
    if (value === undefined) throw new CertificateLoadError(keys.env, `environment variable ${source.env} is not set`, undefined, `set ${source.env} in casgate's environment (systemd: Environment= or EnvironmentFile=)`)
    return value
  }
  return undefined
}

/** readPassphrase returns the passphrase named by passphraseFile or passphraseEnv, if any. */
export function readPassphrase (config: { passphraseFile?: string | undefined, passphraseEnv?: string | undefined }, baseDir: string): string | undefined {
  return readFileOrEnv({ file: config.passphraseFile, env: config.passphraseEnv }, { file: 'passphraseFile', env: 'passphraseEnv' }, baseDir)
}

/** loadCertificate reads a certificate block of the configuration (PFX or PEM files). */
export function loadCertificate (config: CertificateFiles, baseDir: string): LoadedCertificate {
  const passphrase = readPassphrase(config, baseDir)
  try {
    if ('pfx' in config) return loadPfx(readFile('pfx', baseDir, config.pfx), passphrase)
    const certificates = splitPemCertificates(readFile('cert', baseDir, config.cert).toString('utf8'))
    if (certificates.length === 0) throw new CertificateLoadError('cert', `${config.cert} holds no PEM certificate`)
    const chainFiles = config.chain === undefined ? [] : [config.chain].flat()
    for (const file of chainFiles) {
      certificates.push(...splitPemCertificates(readFile('chain', baseDir, file).toString('utf8')))
    }
    const key = privateKeyFromPem(readFile('key', baseDir, config.key), passphrase)
    return assembleCertificate(key, certificates)
  } catch (err) {
    if (err instanceof CertificateLoadError) throw err
    const key = 'pfx' in config ? 'pfx' : 'cert'
    throw new CertificateLoadError(key, err instanceof Error ? err.message.replace(/^cannot load certificate: /, '') : String(err), err)
  }
}
