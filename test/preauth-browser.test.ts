import { describe, expect, it, onTestFinished } from 'vitest'
import { chromium } from 'playwright-core'
import { hashPassword } from '../src/auth/password-hash.js'
import { startEmulators, startLabGateway } from './helpers/lab.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// The sign-in flow as a user meets it: headless Chromium (Debian's, installed by .ci/run)
// through casgate's form to the emulated OWA, and out again.
const CHROMIUM = '/usr/bin/chromium'

describe('forms sign-in in a real browser', () => {
  it('redirects to the form, refuses a wrong password, signs in, stays on one server, signs out', async () => {
    const servers = await startEmulators(3)
    const usersFile = writeFiles(tempDir(), { 'users.txt': `jdoe:${await hashPassword('Correct-Horse-1', 14)}\n` })['users.txt']
    const gateway = await startLabGateway({
      mode: 'offload',
      servers: servers.map((s) => s.url),
      extra: { health: { enabled: false }, preauth: { usersFile } }
    })
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage', '--host-resolver-rules=MAP mail.contoso.test 127.0.0.1']
    })
    onTestFinished(() => browser.close())
    // The lab CA is not in Chromium's store; certificate checks are other tests' business.
    const context = await browser.newContext({ ignoreHTTPSErrors: true })
    const page = await context.newPage()
    const origin = `https://mail.contoso.test:${gateway.address.port}`

    await page.goto(`${origin}/owa/`)
    expect(new URL(page.url()).pathname).toBe('/casgate/logon')
    expect(await page.title()).toBe('Sign in to mail.contoso.test')
    await page.getByLabel('User name').fill('CONTOSO\\jdoe')
    await page.getByLabel('Password').fill('wrong-password')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await expect.poll(() => page.getByRole('alert').textContent()).toBe('The user name or password is incorrect.')
    // The user name stays filled in; focus goes to the password.
    expect(await page.getByLabel('User name').inputValue()).toBe('CONTOSO\\jdoe')

    await page.getByLabel('Password').fill('Correct-Horse-1')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForURL(`${origin}/owa/`)
    expect(await page.locator('#user').textContent()).toBe('CONTOSO\\jdoe')
    const backend = await page.locator('#backend').textContent()
    for (let i = 0; i < 3; i++) {
      await page.reload()
      expect(await page.locator('#backend').textContent()).toBe(backend)
    }
    const cookies = await context.cookies()
    expect(cookies.find((c) => c.name === 'CasgateSession')).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Lax' })

    await page.getByRole('link', { name: 'Sign out' }).click()
    await page.waitForURL(`${origin}/casgate/logon?signedOut=1`)
    expect(await page.getByRole('status').textContent()).toBe('You have signed out.')
    await page.goto(`${origin}/owa/`)
    expect(new URL(page.url()).pathname).toBe('/casgate/logon')
  })
})
