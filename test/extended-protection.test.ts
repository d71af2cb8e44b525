import { describe, expect, it } from 'vitest'
import { ConfigError } from '../src/errors/errors.js'
import { startGateway } from '../src/gateway/gateway.js'
import { createLogger } from '../src/observe/logger.js'
import { createLabPki, issueCertificate } from '../src/certificates/lab-ca.js'
import { checkExtendedProtection } from '../src/tls/extended-protection.js'
import { labConfig, labPki, LogCapture, startEmulators } from './helpers/lab.js'
import { onTestFinished } from 'vitest'
import { closedPort } from './helpers/ports.js'

describe('Extended Protection: casgate must serve the very certificate of the backends', () => {
  it('passes when the backends serve the same certificate', async () => {
    const pki = await labPki()
    const servers = await startEmulators(2, { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem })
    const config = await labConfig({ mode: 'reencrypt', servers: servers.map((s) => s.url) })
    expect(await checkExtendedProtection(config)).toEqual({ errors: [], warnings: [] })
  })

  it('refuses a backend with another certificate (same names, same CA), naming it, both thumbprints and the vdirs that break', async () => {
    const pki = await labPki()
    // A renewed certificate on one server: same names, same issuer, different DER.
    const renewed = await issueCertificate({ commonName: 'mail.contoso.test', names: ['mail.contoso.test', '127.0.0.1'] }, pki.intermediate)
    const [same] = await startEmulators(1, { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem })
    const [other] = await startEmulators(1, { certPem: renewed.certPem + pki.intermediate.certPem, keyPem: renewed.keyPem })
    const config = await labConfig({ mode: 'reencrypt', servers: [same!.url, other!.url] })
    const { errors } = await checkExtendedProtection(config)
    expect(errors).toHaveLength(1)
    const otherHost = new URL(other!.url).host
    expect(errors[0]!.path).toBe('hosts[0].certificate')
    expect(errors[0]!.message).toContain(`backend ${otherHost} serves a different certificate`)
    expect(errors[0]!.message).toContain(new (await import('node:crypto')).X509Certificate(renewed.certPem).fingerprint256)
    expect(errors[0]!.message).toContain('/owa, /mapi, /rpc (Required)')
    expect(errors[0]!.message).toContain('/Microsoft-Server-ActiveSync, /EWS, /oab (Accept)')
    expect(errors[0]!.fix).toContain('serve the very certificate the Exchange servers have')

    // casgate refuses to start on it, unless told to start anyway (loudly).
    await expect(startGateway(config, { logger: createLogger({ level: 'silent', pretty: false }) })).rejects.toBeInstanceOf(ConfigError)
    const logs = new LogCapture()
    const gateway = await startGateway(config, { logger: createLogger({ level: 'info', pretty: false }, logs), extendedProtection: 'warn' })
    onTestFinished(() => gateway.close())
    expect(logs.lines.filter((line) => line.level === 50 && String(line.msg).startsWith('STARTING ANYWAY'))).toHaveLength(1)
  })

  it('warns, without refusing, when a backend cannot be reached to compare', async () => {
    const config = await labConfig({ mode: 'reencrypt', servers: [`https://127.0.0.1:${await closedPort()}`] })
    const { errors, warnings } = await checkExtendedProtection(config, 1_000)
    expect(errors).toEqual([])
    expect(warnings[0]!.message).toMatch(/^could not read the certificate of backend 127\.0\.0\.1:\d+/)
  })

  it('does not apply when Extended Protection is off', async () => {
    const other = await createLabPki(['127.0.0.1'])
    const servers = await startEmulators(1, { certPem: other.server.certPem + other.intermediate.certPem, keyPem: other.server.keyPem })
    const config = await labConfig({ mode: 'reencrypt', servers: servers.map((s) => s.url), extendedProtection: false })
    expect(await checkExtendedProtection(config)).toEqual({ errors: [], warnings: [] })
  })
})
