import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { curl } from './helpers/curl.js'
import { labPki, startEmulators, startLabGateway } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

describe('a real curl through casgate (re-encrypt)', () => {
  async function setup () {
    const pki = await labPki()
    const servers = await startEmulators(2, { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem })
    const gateway = await startLabGateway({ mode: 'reencrypt', servers: servers.map((s) => s.url) })
    const dir = tempDir()
    const files = writeFiles(dir, { 'root.pem': pki.root.certPem })
    const base = ['--cacert', files['root.pem'], '--resolve', `mail.contoso.test:${gateway.address.port}:127.0.0.1`]
    return { gateway, dir, base, origin: `https://mail.contoso.test:${gateway.address.port}` }
  }

  it('verifies the served chain against the root alone and reaches a health page', async () => {
    const { base, origin } = await setup()
    const body = await curl([...base, `${origin}/Microsoft-Server-ActiveSync/healthcheck.htm`])
    expect(body).toMatch(/^200 OK<br\/>ex[12]$/)
  })

  it('uploads a file with -T (curl sends Expect: 100-continue over 1 MB) and the backend receives every byte', async () => {
    const { base, origin, dir } = await setup()
    const data = Buffer.alloc(8 * 1024 * 1024, 7)
    const { 'upload.bin': file } = writeFiles(dir, { 'upload.bin': data })
    const echo = JSON.parse(await curl([...base, '-T', file, `${origin}/EWS/Exchange.asmx`])) as EchoBody
    expect(echo.method).toBe('PUT')
    expect(echo.bodyBytes).toBe(data.length)
  })

  it('downloads a large body intact', async () => {
    const { base, origin, dir } = await setup()
    const out = join(dir, 'download.bin')
    await curl([...base, '-o', out, `${origin}/oab/__casgate/bytes?n=${5 * 1024 * 1024 + 17}`])
    const { readFileSync } = await import('node:fs')
    const got = readFileSync(out)
    expect(got.length).toBe(5 * 1024 * 1024 + 17)
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(got.length, 'x')).digest('hex'))
  })

  it('gets casgate\'s 404 for an unpublished path', async () => {
    const { base, origin } = await setup()
    const out = await curl([...base, '-w', '\n%{http_code}', `${origin}/ecp/`])
    expect(out.split('\n').pop()).toBe('404')
  })
})
