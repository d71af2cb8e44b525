import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { ntlmMessageType, ntlmToken, parseAuthenticate } from '../auth/ntlm-message.js'
import { md4 } from './md4.js'

// Server-side NTLM (MS-NLMP) as IIS does it for Exchange: the challenge belongs to the TCP
// connection it was sent on, the AUTHENTICATE message must come back on that same connection,
// and the connection stays authenticated for the requests after it. NTLMv2 responses only.

/** NtlmDirectory is the domain and the users (name → password) the emulator accepts. */
export interface NtlmDirectory {
  domain: string
  users: Record<string, string>
}

/** NtlmConnectionState is one connection's place in the handshake. */
export interface NtlmConnectionState {
  challenge?: Buffer
  user?: string
}

/** NtlmOutcome says how to answer a request. */
export type NtlmOutcome =
  | { kind: 'authenticated', user: string }
  | { kind: 'challenge', wwwAuthenticate: string }
  | { kind: 'refused', wwwAuthenticate: string }

const FLAGS = 0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00010000 | 0x00080000 | 0x00800000 | 0x02000000 | 0x20000000 | 0x80000000

function avPair (id: number, value: Buffer): Buffer {
  const head = Buffer.alloc(4)
  head.writeUInt16LE(id, 0)
  head.writeUInt16LE(value.length, 2)
  return Buffer.concat([head, value])
}

function challengeMessage (serverChallenge: Buffer, domain: string, computer: string): Buffer {
  const targetName = Buffer.from(domain.toUpperCase(), 'utf16le')
  const timestamp = Buffer.alloc(8)
  timestamp.writeBigUInt64LE((BigInt(Date.now()) + 11644473600000n) * 10000n)
  const targetInfo = Buffer.concat([
    avPair(2, Buffer.from(domain.toUpperCase(), 'utf16le')),
    avPair(1, Buffer.from(computer.toUpperCase(), 'utf16le')),
    avPair(4, Buffer.from(`${domain.toLowerCase()}.test`, 'utf16le')),
    avPair(3, Buffer.from(`${computer.toLowerCase()}.${domain.toLowerCase()}.test`, 'utf16le')),
    avPair(7, timestamp),
    avPair(0, Buffer.alloc(0))
  ])
  const header = Buffer.alloc(56)
  Buffer.from('NTLMSSP\0', 'latin1').copy(header, 0)
  header.writeUInt32LE(2, 8)
  header.writeUInt16LE(targetName.length, 12)
  header.writeUInt16LE(targetName.length, 14)
  header.writeUInt32LE(56, 16)
  header.writeUInt32LE(FLAGS >>> 0, 20)
  serverChallenge.copy(header, 24)
  header.writeUInt16LE(targetInfo.length, 40)
  header.writeUInt16LE(targetInfo.length, 42)
  header.writeUInt32LE(56 + targetName.length, 44)
  Buffer.from([10, 0, 0x63, 0x45, 0, 0, 0, 15]).copy(header, 48) // version 10.0.17763, NTLM revision 15
  return Buffer.concat([header, targetName, targetInfo])
}

/** verifyNtlmV2 checks an NTLMv2 response against the user's password (MS-NLMP §3.3.2). */
export function verifyNtlmV2 (password: string, user: string, domain: string, serverChallenge: Buffer, ntResponse: Buffer): boolean {
  if (ntResponse.length <= 24) return false // NTLMv1 / NTLM2 session responses are refused
  const responseKey = createHmac('md5', md4(Buffer.from(password, 'utf16le'))).update(Buffer.from(user.toUpperCase() + domain, 'utf16le')).digest()
  const proof = ntResponse.subarray(0, 16)
  const expected = createHmac('md5', responseKey).update(serverChallenge).update(ntResponse.subarray(16)).digest()
  return timingSafeEqual(proof, expected)
}

/** answerNtlm advances one connection's handshake with the request's Authorization header. */
export function answerNtlm (directory: NtlmDirectory, computer: string, state: NtlmConnectionState, authorization: string | undefined): NtlmOutcome {
  const token = ntlmToken(authorization)
  if (token === undefined) {
    if (state.user !== undefined && authorization === undefined) return { kind: 'authenticated', user: state.user }
    return { kind: 'refused', wwwAuthenticate: 'NTLM' }
  }
  const type = ntlmMessageType(token)
  if (type === 1) {
    state.user = undefined
    state.challenge = randomBytes(8)
    return { kind: 'challenge', wwwAuthenticate: `NTLM ${challengeMessage(state.challenge, directory.domain, computer).toString('base64')}` }
  }
  if (type === 3 && state.challenge !== undefined) {
    const challenge = state.challenge
    state.challenge = undefined
    try {
      const message = parseAuthenticate(token)
      const entry = Object.entries(directory.users).find(([name]) => name.toLowerCase() === message.user.toLowerCase())
      if (entry && verifyNtlmV2(entry[1], message.user, message.domain, challenge, message.ntResponse)) {
        state.user = entry[0]
        return { kind: 'authenticated', user: entry[0] }
      }
    } catch {
      // a malformed message is a failed logon
    }
  }
  // AUTHENTICATE without a challenge on this connection: the handshake crossed connections.
  state.challenge = undefined
  state.user = undefined
  return { kind: 'refused', wwwAuthenticate: 'NTLM' }
}
