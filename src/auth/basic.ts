/** BasicCredentials is what an `Authorization: Basic` header carries (RFC 7617). */
export interface BasicCredentials {
  user: string
  password: string
}

/** basicCredentials decodes a Basic Authorization value; undefined for other schemes or no user. */
export function basicCredentials (header: string | undefined): BasicCredentials | undefined {
  if (header === undefined || header.length < 7 || !/^basic\s/i.test(header)) return undefined
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  // RFC 7617: the user name cannot contain a colon; without one there is no password part.
  if (colon <= 0) return undefined
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}
