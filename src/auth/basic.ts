/** BasicCredentials is what an `Authorization: Basic` header carries (RFC 7617). */
export interface BasicCredentials {
  user: string
  password: string
}

// Canonical base64 only (RFC 4648 §4, padded): Node's decoder stops at the first '=' and skips
// what it does not know, so "YWw6cHc==Ym9i…" would read as one user here and as another — or
// as garbage — to Exchange behind. What two readers may read differently is not credentials.
const canonicalBase64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/**
 * basicCredentials decodes a Basic Authorization value; undefined for other schemes, no user, or
 * a value that is not canonical base64.
 */
export function basicCredentials (header: string | undefined): BasicCredentials | undefined {
  if (header === undefined || header.length < 7 || !/^basic\s/i.test(header)) return undefined
  const token = header.slice(6).trim()
  if (!canonicalBase64.test(token)) return undefined
  const decoded = Buffer.from(token, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  // RFC 7617: the user name cannot contain a colon; without one there is no password part.
  if (colon <= 0) return undefined
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}
