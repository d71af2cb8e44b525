import { chromium } from 'playwright-core'
import { describe, expect, it, onTestFinished } from 'vitest'
import { startEmulators, startLabGateway } from './helpers/lab.js'

// The admin listener's status page as an admin meets it: headless Chromium (Debian's, installed by
// .ci/run) signs in with the token by keyboard, watches a server's vdir go red when its health
// page goes, and drains a server from the page — by keyboard too.
const CHROMIUM = '/usr/bin/chromium'

describe('the admin status page', () => {
  it('signs in with the token, turns a cell red when the emulator takes a vdir out, drains from the page, all by keyboard', async () => {
    const servers = await startEmulators(2)
    const gateway = await startLabGateway({
      mode: 'offload',
      servers: servers.map((s) => s.url),
      extra: { admin: { host: '127.0.0.1', port: 0 }, health: { intervalMs: 200, rise: 1, fall: 1 } }
    })
    const [ex1, ex2] = gateway.pools.get('cas')!.servers.map((server) => server.name)
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'] })
    onTestFinished(() => browser.close())
    const page = await browser.newPage()
    const outside: string[] = []
    page.on('request', (request) => { if (!request.url().startsWith(`http://127.0.0.1:${gateway.adminAddress!.port}/`)) outside.push(request.url()) })
    const shell = await page.goto(`http://127.0.0.1:${gateway.adminAddress!.port}/`)
    expect(shell!.headers()['content-security-policy']).toMatch(/^default-src 'none'; script-src 'nonce-/)

    // Signed out: the token field has the focus; type it and press Enter.
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe('token')
    await page.keyboard.type(gateway.config.admin!.token)
    await page.keyboard.press('Enter')
    await page.getByRole('heading', { name: 'Health and maintenance' }).waitFor()
    const cookies = await page.context().cookies()
    expect(cookies.find((cookie) => cookie.name === 'CasgateAdmin')).toMatchObject({ httpOnly: true, sameSite: 'Strict' })
    const cell = (server: string, vdir: string) => page.locator(`td[data-server="${server}"][data-vdir="${vdir}"]`)
    await expect.poll(() => cell(ex1!, '/EWS').getAttribute('class'), { timeout: 15_000 }).toBe('up')

    servers[0]!.setHealthy('/EWS', false)
    await expect.poll(() => cell(ex1!, '/EWS').getAttribute('class'), { timeout: 15_000 }).toBe('down')
    expect(await cell(ex1!, '/EWS').textContent()).toContain('status 404')
    expect(await cell(ex1!, '/owa').getAttribute('class')).toBe('up')

    // Keyboard: Tab from the top reaches ex2's drain button; Enter drains ex2 with the deadline shown.
    await page.locator('#signout').focus()
    let reached = false
    for (let i = 0; i < 40 && !reached; i++) {
      await page.keyboard.press('Tab')
      reached = await page.evaluate((label) => document.activeElement?.getAttribute('aria-label') === label, `Drain ${ex2!}`)
    }
    expect(reached).toBe(true)
    await page.keyboard.press('Enter')
    await expect.poll(() => page.getByRole('status').textContent()).toBe(`${ex2!} drained`)
    expect(gateway.drain.snapshot()).toEqual([expect.objectContaining({ backend: ex2, vdirs: ['*'] })])
    await expect.poll(() => cell(ex2!, '/owa').getAttribute('class'), { timeout: 15_000 }).toBe('drained')
    expect(outside).toEqual([])
  })
})
