import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it, onTestFinished } from 'vitest'
import { demoBanner, runDemo } from '../src/demo.js'
import { createLogger } from '../src/observe/logger.js'
import { LogCapture } from './helpers/lab.js'
import { tempDir } from './helpers/tmp.js'

const execFileAsync = promisify(execFile)

describe('casgate demo', () => {
  it('prints a curl line that works as printed', async () => {
    const dir = tempDir()
    const run = await runDemo({ port: 0, host: '127.0.0.1', dir, logger: createLogger({ level: 'warn', pretty: false }, new LogCapture()) })
    onTestFinished(() => run.close())
    const banner = demoBanner(run)
    const line = banner.split('\n').find((l) => l.includes('curl --cacert') && l.includes('healthcheck.htm'))
    expect(line).toBeDefined()
    const args = line!.trim().replace(/^curl\s+/, '').split(/\s+/)
    const { stdout } = await execFileAsync('curl', ['-sS', ...args], { cwd: process.cwd() })
    expect(stdout).toMatch(/^200 OK<br\/>ex[12]$/)
    expect(banner).toContain(`https://localhost:${run.gateway.address.port}/owa/`)
    // The Basic line signs in with the printed credentials; without them it is refused.
    const ews = banner.split('\n').find((l) => l.includes(' -u demo:'))!.trim().replace(/^curl\s+/, '').split(/\s+/)
    expect((await execFileAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...ews])).stdout).toBe('200')
    expect((await execFileAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...ews.filter((a) => !a.startsWith('demo:') && a !== '-u')])).stdout).toBe('401')
  })

  it('shows the sign-in form for OWA', async () => {
    const dir = tempDir()
    const run = await runDemo({ port: 0, host: '127.0.0.1', dir, logger: createLogger({ level: 'warn', pretty: false }, new LogCapture()) })
    onTestFinished(() => run.close())
    const ca = `${dir}/root-ca.pem`
    const { stdout } = await execFileAsync('curl', ['-sS', '-L', '--cacert', ca, '-H', 'Accept: text/html', `https://localhost:${run.gateway.address.port}/owa/`])
    expect(stdout).toContain('<h1>Sign in</h1>')
    expect(stdout).toContain('<input type="hidden" name="url" value="/owa/">')
  })
})
