import { spawn } from 'node:child_process'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { TerminatedHost } from '../src/config/load.js'
import type { Gateway } from '../src/gateway/gateway.js'
import { SniContexts } from '../src/tls/sni-contexts.js'
import { labClient, send, startEmulators, startLabGateway } from './helpers/lab.js'

// TLS 1.2 lets either side start a new handshake on an open connection. A client that asks for
// one again and again makes the server do a full handshake (the expensive half) each time for a
// few bytes of its own (CVE-2011-1473); Node only caps it at 3 per 10 minutes. casgate refuses
// every client-initiated renegotiation. The attacker here is the real OpenSSL client, whose `R`
// command renegotiates the session it holds.

interface SClientRun {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * renegotiate connects with `openssl s_client -tls1_2`, waits for the handshake, asks for a
 * renegotiation (`R` on a line of its own), then sends a request on the same connection.
 */
function renegotiate (gateway: Gateway): Promise<SClientRun> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-tls1_2', '-connect', `127.0.0.1:${gateway.address.port}`, '-servername', 'mail.contoso.test'], { stdio: ['pipe', 'pipe', 'pipe'] })
    onTestFinished(() => { child.kill() })
    let stdout = ''
    let stderr = ''
    let step: 'handshake' | 'renegotiate' | 'request' = 'handshake'
    // s_client discards whatever else it read with an `R` line, so each line goes on its own cue.
    const next = (): void => {
      if (step === 'handshake' && stdout.includes('Verify return code')) {
        step = 'renegotiate'
        child.stdin.write('R\n')
      } else if (step === 'renegotiate' && stderr.includes('RENEGOTIATING')) {
        step = 'request'
        child.stdin.write('GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close\r\n\r\n')
      }
    }
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); next() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); next() })
    // s_client may be gone when the request line is written: that is the point.
    child.stdin.on('error', () => undefined)
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    setTimeout(() => child.kill(), 10_000).unref()
  })
}

function expectRefused (run: SClientRun): void {
  expect(run.stderr).toContain('RENEGOTIATING')
  // OpenSSL's client reports the server's no_renegotiation alert (RFC 5246 §7.2.2) and gives up.
  expect(run.stderr).toMatch(/no renegotiation/i)
  expect(run.code).not.toBe(0)
  expect(run.stdout).not.toMatch(/HTTP\/1\.1 200/)
}

async function gatewayAndClient () {
  const [emulator] = await startEmulators(1)
  const gateway = await startLabGateway({ mode: 'offload', servers: [emulator!.url] })
  return { gateway, client: await labClient() }
}

describe('TLS 1.2 renegotiation', () => {
  it('refuses a client-initiated renegotiation; a fresh connection is served', async () => {
    const { gateway, client } = await gatewayAndClient()
    expectRefused(await renegotiate(gateway))
    const fresh = await send(gateway, '/owa/', { dispatcher: client })
    expect(fresh.status).toBe(200)
    expect(JSON.parse(fresh.text)).toMatchObject({ url: '/owa/' })
  })

  it('still refuses it after the certificates are reloaded', async () => {
    const { gateway, client } = await gatewayAndClient()
    // What SIGHUP does: new contexts for every terminated host, swapped in at once.
    const terminated = gateway.config.hosts.filter((host): host is TerminatedHost => host.mode !== 'passthrough')
    gateway.frontDoor.replaceCertificates(new SniContexts(terminated))
    expectRefused(await renegotiate(gateway))
    expect((await send(gateway, '/owa/', { dispatcher: client })).status).toBe(200)
  })
})
