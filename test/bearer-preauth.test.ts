import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose'
import { describe, expect, it } from 'vitest'
import { closedPort } from './helpers/ports.js'
import { labClient, send, startEmulators, startLabGateway } from './helpers/lab.js'
import { usersFile } from './helpers/users.js'
import { tempDir, writeFiles } from './helpers/tmp.js'

// Bearer tokens validated at the edge (preauth.bearer) through a real gateway: only the tenant's
// signed, current tokens for the right audience reach Exchange, on the vdirs whose clients send
// them and on those without preauthentication; OWA and ECP never take one instead of the form.

const TENANT = '8eaef023-2b34-4da1-9baa-8bc8c9d6a490'
const ISSUER = `https://sts.windows.net/${TENANT}/`
const AUDIENCE = 'https://mail.contoso.test'

async function signer (): Promise<{ privateKey: CryptoKey, jwks: string }> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
  return { privateKey, jwks: JSON.stringify({ keys: [{ ...await exportJWK(publicKey), kid: 'k1', use: 'sig', alg: 'RS256' }] }) }
}

function token (privateKey: CryptoKey, claims: JWTPayload = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, nbf: now - 60, exp: now + 3600, upn: 'jdoe@contoso.test', ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: 'k1', typ: 'JWT' }).sign(privateKey)
}

async function bearerLab (jwks: { file: string } | { url: string }) {
  const servers = await startEmulators(1)
  const users = await usersFile({ jdoe: 'Correct-Horse-1' })
  const gateway = await startLabGateway({
    mode: 'offload',
    servers: servers.map((s) => s.url),
    vdirs: { '/ecp': { enabled: true } },
    extra: { health: { enabled: false }, preauth: { usersFile: users, bearer: { issuer: ISSUER, audience: AUDIENCE, jwks } } }
  })
  return { gateway, server: servers[0]!, client: await labClient() }
}

describe('preauth.bearer validates tokens at the edge', () => {
  it('lets only the tenant\'s current tokens through, on modern-auth vdirs and vdirs without preauth', async () => {
    const mine = await signer()
    const stranger = await signer()
    const dir = tempDir()
    const { gateway, server, client } = await bearerLab({ file: writeFiles(dir, { 'jwks.json': mine.jwks })['jwks.json'] })
    const bearer = async (path: string, value: string, method: 'GET' | 'POST' = 'POST') => send(gateway, path, { dispatcher: client, method, headers: { authorization: `Bearer ${value}` } })

    const good = await token(mine.privateKey)
    expect((await bearer('/EWS/Exchange.asmx', good)).status).toBe(200)
    expect((await bearer('/mapi/emsmdb/', good)).status).toBe(200)
    expect(server.seen).toEqual(['POST /EWS/Exchange.asmx', 'POST /mapi/emsmdb/'])
    expect(gateway.logs.lines.find((line) => line.url === '/EWS/Exchange.asmx')).toMatchObject({ user: 'jdoe@contoso.test', preauth: 'excluded:bearer' })

    for (const [name, forged] of [
      ['another key', await token(stranger.privateKey)],
      ['another tenant', await token(mine.privateKey, { iss: 'https://sts.windows.net/82229342-1101-4ab6-817b-70c0747630f3/' })],
      ['another audience', await token(mine.privateKey, { aud: 'https://graph.microsoft.com' })],
      ['expired', await token(mine.privateKey, { exp: Math.floor(Date.now() / 1000) - 3600 })]
    ] as const) {
      for (const path of ['/EWS/Exchange.asmx', '/mapi/emsmdb/', '/Microsoft-Server-ActiveSync?Cmd=Ping']) {
        const refused = await bearer(path, forged)
        expect(refused.status, `${name} ${path}`).toBe(401)
        expect(refused.headers['www-authenticate'], name).toContain('Bearer error="invalid_token"')
      }
    }
    // A valid token is still no way into OWA or ECP: those need casgate's form.
    expect((await bearer('/owa/', good, 'GET')).status).toBe(440)
    expect((await bearer('/ecp/DDI/DDIService.svc/GetList', good)).status).toBe(440)
    expect(server.seen).toHaveLength(2)
    expect(gateway.logs.raw.join('')).not.toContain(good.slice(-20))
  })

  it('answers 503, not 401 and never a pass, while the key set cannot be fetched', async () => {
    const mine = await signer()
    const { gateway, server, client } = await bearerLab({ url: `http://127.0.0.1:${await closedPort()}/keys` })
    const answer = await send(gateway, '/EWS/Exchange.asmx', { dispatcher: client, method: 'POST', headers: { authorization: `Bearer ${await token(mine.privateKey)}` } })
    expect(answer.status).toBe(503)
    expect(answer.headers['retry-after']).toBeDefined()
    expect(server.seen).toEqual([])
    expect(gateway.logs.lines.some((line) => line.event === 'bearer-keys-unavailable')).toBe(true)
  })
})
