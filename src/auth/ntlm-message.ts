// NTLM message framing (MS-NLMP §2.2.1): enough to tell the three messages apart and to read
// who an AUTHENTICATE message speaks for. Used by the emulated Exchange server and, for
// affinity, to key a client by identity rather than by the (ever-changing) token.

export const NTLMSSP_SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1')

/** NtlmMessageType is 1 (NEGOTIATE), 2 (CHALLENGE) or 3 (AUTHENTICATE). */
export type NtlmMessageType = 1 | 2 | 3

/** ntlmToken returns the NTLM token carried by an Authorization or WWW-Authenticate value. */
export function ntlmToken (header: string | undefined): Buffer | undefined {
  if (!header) return undefined
  const match = /^\s*(NTLM|Negotiate)\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header)
  if (!match) return undefined
  const token = Buffer.from(match[2]!, 'base64')
  if (token.subarray(0, 8).equals(NTLMSSP_SIGNATURE)) return token
  // Negotiate wraps NTLM in SPNEGO (RFC 4178: an InitialContextToken, 0x60, or a NegTokenResp,
  // 0xa1): the NTLM message is an OCTET STRING inside, whole, so its offsets hold from its
  // signature on. Kerberos inside SPNEGO carries no NTLMSSP and stays unread.
  if (token[0] !== 0x60 && token[0] !== 0xa1) return undefined
  const at = token.indexOf(NTLMSSP_SIGNATURE)
  return at === -1 ? undefined : token.subarray(at)
}

/** ntlmMessageType tells which NTLM message a token is, or undefined for anything else. */
export function ntlmMessageType (token: Buffer): NtlmMessageType | undefined {
  if (token.length < 12 || !token.subarray(0, 8).equals(NTLMSSP_SIGNATURE)) return undefined
  const type = token.readUInt32LE(8)
  return type === 1 || type === 2 || type === 3 ? type : undefined
}

/** field reads a (length, maxLength, offset) security buffer at `at`. */
export function ntlmField (token: Buffer, at: number): Buffer {
  if (token.length < at + 8) throw new Error('truncated NTLM message')
  const length = token.readUInt16LE(at)
  const offset = token.readUInt32LE(at + 4)
  if (offset + length > token.length) throw new Error('NTLM field outside the message')
  return token.subarray(offset, offset + length)
}

const UNICODE = 0x00000001

/** AuthenticateMessage is what an NTLM AUTHENTICATE (type 3) message carries. */
export interface AuthenticateMessage {
  user: string
  domain: string
  workstation: string
  ntResponse: Buffer
  lmResponse: Buffer
  flags: number
}

/** parseAuthenticate reads an AUTHENTICATE message; throws on a malformed one. */
export function parseAuthenticate (token: Buffer): AuthenticateMessage {
  if (ntlmMessageType(token) !== 3) throw new Error('not an NTLM AUTHENTICATE message')
  if (token.length < 64) throw new Error('truncated NTLM message')
  const flags = token.readUInt32LE(60)
  const text = (bytes: Buffer): string => bytes.toString(flags & UNICODE ? 'utf16le' : 'latin1')
  return {
    lmResponse: ntlmField(token, 12),
    ntResponse: ntlmField(token, 20),
    domain: text(ntlmField(token, 28)),
    user: text(ntlmField(token, 36)),
    workstation: text(ntlmField(token, 44)),
    flags
  }
}
