import { basicCredentials } from './basic.js'
import { ntlmMessageType, ntlmToken, parseAuthenticate } from './ntlm-message.js'

// A logon attempt that Exchange checks instead of casgate still names its user: Basic carries
// it in clear, an NTLM AUTHENTICATE message (type 3) in its user field. Both are password
// guesses when Exchange answers 401, and both meet the lockout. Kerberos names nobody casgate
// can read, and NTLM's NEGOTIATE and an anonymous AUTHENTICATE attempt no password.

/** claimedUser is the user a logon attempt in an Authorization value names, or undefined. */
export function claimedUser (authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined
  const basic = basicCredentials(authorization)
  if (basic !== undefined) return basic.password === '' ? undefined : basic.user
  const token = ntlmToken(authorization)
  if (token === undefined || ntlmMessageType(token) !== 3) return undefined
  try {
    const user = parseAuthenticate(token).user
    return user === '' ? undefined : user
  } catch {
    return undefined
  }
}
