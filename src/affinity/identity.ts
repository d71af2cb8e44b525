import { basicCredentials } from '../auth/basic.js'
import { ntlmMessageType, ntlmToken, parseAuthenticate } from '../auth/ntlm-message.js'
import { normalizeUser } from '../auth/user-name.js'

// Who a request speaks for, as a plain string such as "user:jdoe". Only ever fed to an HMAC
// (affinity-keys.ts): neither the identity nor the credential it came from is kept or logged.

/**
 * authorizationIdentity reads the identity behind an Authorization header: the Basic user name,
 * the user of an NTLM AUTHENTICATE message (its token changes on every handshake), or the
 * Bearer token itself (hashed by the caller). NTLM NEGOTIATE messages and Kerberos tokens name
 * nobody usable: undefined.
 */
export function authorizationIdentity (header: string | undefined): string | undefined {
  if (header === undefined || header.length < 7) return undefined
  const space = header.indexOf(' ')
  if (space === -1) return undefined
  const scheme = header.slice(0, space).toLowerCase()
  const credentials = header.slice(space + 1).trim()
  if (credentials === '') return undefined
  if (scheme === 'basic') {
    const basic = basicCredentials(header)
    const user = basic === undefined ? '' : normalizeUser(basic.user)
    return user === '' ? undefined : `user:${user}`
  }
  if (scheme === 'bearer') return `bearer:${credentials}`
  if (scheme === 'ntlm' || scheme === 'negotiate') {
    const token = ntlmToken(header)
    if (token === undefined || ntlmMessageType(token) !== 3) return undefined
    try {
      const user = normalizeUser(parseAuthenticate(token).user)
      return user === '' ? undefined : `user:${user}`
    } catch {
      return undefined
    }
  }
  return undefined
}

function queryParameter (query: string, name: string): string | undefined {
  for (const pair of query.split('&')) {
    const equals = pair.indexOf('=')
    if (equals === -1 || pair.length - 1 === equals) continue
    if (pair.slice(0, equals).toLowerCase() !== name) continue
    try {
      return decodeURIComponent(pair.slice(equals + 1).replace(/\+/g, ' '))
    } catch {
      return undefined
    }
  }
  return undefined
}

/**
 * activeSyncIdentity reads an ActiveSync request's User= (else DeviceId=) query parameter, or the
 * DeviceId of the base64-encoded query some devices send instead (MS-ASHTTP 2.2.1.1.1.1:
 * version, command, locale, then the length-prefixed device ID).
 */
export function activeSyncIdentity (url: string): string | undefined {
  const mark = url.indexOf('?')
  if (mark === -1 || mark === url.length - 1) return undefined
  const query = url.slice(mark + 1)
  if (query.includes('=')) {
    const user = queryParameter(query, 'user')
    if (user !== undefined && normalizeUser(user) !== '') return `user:${normalizeUser(user)}`
    const device = queryParameter(query, 'deviceid')
    return device === undefined || device.trim() === '' ? undefined : `device:${device.trim().toLowerCase()}`
  }
  let encoded: Buffer
  try {
    encoded = Buffer.from(decodeURIComponent(query), 'base64')
  } catch {
    return undefined
  }
  if (encoded.length < 5) return undefined
  const length = encoded[4]!
  if (length === 0 || encoded.length < 5 + length) return undefined
  return `device:${encoded.subarray(5, 5 + length).toString('hex')}`
}

/** setCookieValue returns the value a Set-Cookie header (or list of them) gives cookie `name`. */
export function setCookieValue (headers: string | string[] | undefined, name: string): string | undefined {
  if (headers === undefined) return undefined
  for (const header of Array.isArray(headers) ? headers : [headers]) {
    const equals = header.indexOf('=')
    if (equals === -1 || header.slice(0, equals).trim() !== name) continue
    const end = header.indexOf(';', equals)
    const value = (end === -1 ? header.slice(equals + 1) : header.slice(equals + 1, end)).trim()
    // A backend clears a cookie with an empty value (or an expiry in the past): nothing to follow.
    if (value === '' || /;\s*max-age=0\b/i.test(header)) return undefined
    return value
  }
  return undefined
}
