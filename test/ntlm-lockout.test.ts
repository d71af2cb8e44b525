import { describe, expect, it, onTestFinished } from 'vitest'
import { Client } from 'undici'
import { ExchangeEmulator } from '../src/emulator/exchange-server.js'
import { labPki, startLabGateway } from './helpers/lab.js'
import { usersFile } from './helpers/users.js'
import { logOn } from './helpers/ntlm-client.js'

// NTLM guesses are password guesses too: an AUTHENTICATE message names its user, and Exchange's
// 401 to it is a failed logon. On the paths casgate does not preauthenticate (MAPI, the
// exclusions) they count against the lockout like Basic, or NTLM is a way around it.

describe('NTLM and the lockout', () => {
  it('counts Exchange\'s 401s to NTLM AUTHENTICATE messages; a locked user gets casgate\'s 401 before Exchange sees the guess', async () => {
    const exchange = await new ExchangeEmulator({ name: 'ex1', ntlm: { domain: 'CONTOSO', users: { jdoe: 'Correct-Horse-1' } } }).start()
    onTestFinished(() => exchange.close())
    const users = await usersFile({ jdoe: 'Correct-Horse-1' })
    const gateway = await startLabGateway({ mode: 'offload', servers: [exchange.url], extra: { health: { enabled: false }, preauth: { usersFile: users } } })
    const pki = await labPki()
    const attempt = async (path: string, password: string): Promise<number> => {
      // One connection per guess, as a guesser opens them: NTLM authenticates a connection.
      const client = new Client(`https://127.0.0.1:${gateway.address.port}`, { connect: { ca: pki.root.certPem, servername: 'mail.contoso.test' } })
      try {
        const response = await logOn(client, path, 'jdoe', password, 'CONTOSO')
        await response.body.dump()
        return response.statusCode
      } finally {
        await client.close()
      }
    }
    const statuses: number[] = []
    for (let i = 0; i < 6; i++) statuses.push(await attempt(i % 2 === 0 ? '/mapi/emsmdb/' : '/EWS/mrsproxy.svc', `guess-${i}`))
    expect(statuses).toEqual([401, 401, 401, 401, 401, 401])
    const failed = gateway.logs.lines.filter((line) => line.event === 'preauth-failed')
    expect(failed).toHaveLength(5)
    expect(failed.every((line) => line.via === 'exchange' && line.user === 'jdoe')).toBe(true)
    expect(gateway.logs.lines.some((line) => line.event === 'preauth-lockout' && line.user === 'jdoe')).toBe(true)
    // The sixth guess, and now even the right password from this address, never reached Exchange's check.
    const authenticated = (): number => exchange.seen.length
    const before = authenticated()
    expect(await attempt('/mapi/emsmdb/', 'Correct-Horse-1')).toBe(401)
    expect(authenticated()).toBe(before + 1) // the NEGOTIATE leg only
    expect(gateway.logs.lines.filter((line) => line.event === 'preauth-locked-out').length).toBeGreaterThanOrEqual(2)
  })
})
