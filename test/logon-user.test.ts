import { describe, expect, it } from 'vitest'
import { claimedUser } from '../src/auth/logon-user.js'
import { authenticateHeader, frameAuthenticate, negotiateHeader } from './helpers/ntlm-client.js'

// Which user a logon that Exchange checks names: the key of the lockout for guesses casgate does
// not check itself. Negotiate wraps NTLM in SPNEGO; a guess wrapped so must name its user too.

/** spnego wraps an NTLM message the way Windows' Negotiate does: a NegTokenResp (0xa1) holding it as an OCTET STRING. */
function spnego (ntlm: Buffer): string {
  const der = (tag: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([tag, 0x82, body.length >> 8, body.length & 0xff]), body])
  return `Negotiate ${der(0xa1, der(0x30, der(0xa2, der(0x04, ntlm)))).toString('base64')}`
}

const challenge = (): string => {
  const message = Buffer.alloc(48)
  message.write('NTLMSSP\0', 0, 'latin1')
  message.writeUInt32LE(2, 8)
  message.writeUInt16LE(0, 40)
  message.writeUInt32LE(48, 44)
  return `NTLM ${message.toString('base64')}`
}

describe('claimedUser', () => {
  it('reads Basic, NTLM AUTHENTICATE and SPNEGO-wrapped AUTHENTICATE; nothing else names a user', () => {
    expect(claimedUser(`Basic ${Buffer.from('CONTOSO\\jdoe:guess').toString('base64')}`)).toBe('CONTOSO\\jdoe')
    expect(claimedUser(`Basic ${Buffer.from('jdoe:').toString('base64')}`)).toBeUndefined()
    const authenticate = authenticateHeader(challenge(), 'jdoe', 'guess', 'CONTOSO')
    expect(claimedUser(authenticate)).toBe('jdoe')
    expect(claimedUser(spnego(Buffer.from(authenticate.slice(5), 'base64')))).toBe('jdoe')
    expect(claimedUser(negotiateHeader())).toBeUndefined()
    // An anonymous AUTHENTICATE attempts no password; Kerberos in SPNEGO carries no NTLMSSP.
    expect(claimedUser(`NTLM ${frameAuthenticate(Array.from({ length: 6 }, () => Buffer.alloc(0)), 0x00000001).toString('base64')}`)).toBeUndefined()
    expect(claimedUser(`Negotiate ${Buffer.from([0x60, 0x82, 0x00, 0x10, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02, 0xa0, 0x04, 0x30, 0x02, 0x01, 0x00]).toString('base64')}`)).toBeUndefined()
    expect(claimedUser('Bearer eyJ.eyJ.c2ln')).toBeUndefined()
    expect(claimedUser(undefined)).toBeUndefined()
  })
})
