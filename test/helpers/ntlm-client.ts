import { createHmac, randomBytes } from 'node:crypto'
import { ntlmField, ntlmToken } from '../../src/auth/ntlm-message.js'
import { md4 } from '../../src/emulator/md4.js'
import type { Dispatcher } from 'undici'

// A client side of NTLMv2 (MS-NLMP §3.1.5), for tests that need control over which connection
// each message travels on. curl and requests_ntlm are the real clients; this one is for the
// cases they cannot show (what happens to an authenticated connection when its backend dies).

const FLAGS = 0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00080000 | 0x00800000 | 0x20000000 | 0x80000000

/** negotiateHeader is the Authorization value of an NTLM NEGOTIATE message. */
export function negotiateHeader (): string {
  const message = Buffer.alloc(32)
  message.write('NTLMSSP\0', 0, 'latin1')
  message.writeUInt32LE(1, 8)
  message.writeUInt32LE(FLAGS >>> 0, 12)
  return `NTLM ${message.toString('base64')}`
}

/** authenticateHeader answers a CHALLENGE (from WWW-Authenticate) with an NTLMv2 AUTHENTICATE. */
export function authenticateHeader (wwwAuthenticate: string, user: string, password: string, domain: string): string {
  const challenge = ntlmToken(wwwAuthenticate)
  if (!challenge) throw new Error(`no NTLM challenge in ${wwwAuthenticate}`)
  const serverChallenge = challenge.subarray(24, 32)
  const targetInfo = ntlmField(challenge, 40)
  const timestamp = Buffer.alloc(8)
  timestamp.writeBigUInt64LE((BigInt(Date.now()) + 11644473600000n) * 10000n)
  const temp = Buffer.concat([Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), timestamp, randomBytes(8), Buffer.alloc(4), targetInfo, Buffer.alloc(4)])
  const key = createHmac('md5', md4(Buffer.from(password, 'utf16le'))).update(Buffer.from(user.toUpperCase() + domain, 'utf16le')).digest()
  const ntResponse = Buffer.concat([createHmac('md5', key).update(serverChallenge).update(temp).digest(), temp])
  const fields = [Buffer.alloc(24), ntResponse, Buffer.from(domain, 'utf16le'), Buffer.from(user, 'utf16le'), Buffer.from('TESTHOST', 'utf16le'), Buffer.alloc(0)]
  return `NTLM ${frameAuthenticate(fields, FLAGS).toString('base64')}`
}

/** frameAuthenticate frames an AUTHENTICATE message: its six security buffers after a 64-byte header (MS-NLMP §2.2.1.3). */
export function frameAuthenticate (fields: readonly Buffer[], flags: number): Buffer {
  const header = Buffer.alloc(64)
  header.write('NTLMSSP\0', 0, 'latin1')
  header.writeUInt32LE(3, 8)
  let offset = 64
  fields.forEach((field, i) => {
    header.writeUInt16LE(field.length, 12 + i * 8)
    header.writeUInt16LE(field.length, 14 + i * 8)
    header.writeUInt32LE(offset, 16 + i * 8)
    offset += field.length
  })
  header.writeUInt32LE(flags >>> 0, 60)
  return Buffer.concat([header, ...fields])
}

/** logOn runs a whole NTLM handshake on one undici connection and returns the final response. */
export async function logOn (client: Dispatcher, path: string, user: string, password: string, domain: string): Promise<Dispatcher.ResponseData> {
  const headers = { host: 'mail.contoso.test' }
  const challenge = await client.request({ path, method: 'GET', headers: { ...headers, authorization: negotiateHeader() } })
  await challenge.body.dump()
  if (challenge.statusCode !== 401) throw new Error(`expected a 401 challenge, got ${challenge.statusCode}`)
  return client.request({ path, method: 'GET', headers: { ...headers, authorization: authenticateHeader(String(challenge.headers['www-authenticate']), user, password, domain) } })
}
