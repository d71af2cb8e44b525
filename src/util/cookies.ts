// One reading of the Cookie request header, used both to find casgate's cookies and to take
// them out of what Exchange receives. Two parsers that disagree are a bypass: the old reader
// accepted "a=x CasgateSession=v" as a session (it looked for the name after a space) while
// the stripper kept it (the pair starts with "a="), so the session reached Exchange.
//
// RFC 6265 §4.2.1: cookie-string = cookie-pair *( ";" SP cookie-pair ). Pairs are separated by
// ';' only; whitespace around a pair is dropped (browsers and old clients differ on the SP),
// never used as a separator. "a=x CasgateSession=v" is one cookie named "a" with the value
// "x CasgateSession=v". Node joins repeated Cookie header lines with "; " in request.headers,
// which this reading handles like one line; a flat raw header list keeps them apart.

/** CookiePair is one name=value of a Cookie header, both trimmed of surrounding whitespace. */
export interface CookiePair {
  name: string
  value: string
}

// What ASP.NET's String.Trim() takes off a cookie piece: Unicode white space, U+0085 and U+00A0
// included (Node hands header bytes over as latin1), so both ends read the same names.
const WHITESPACE = /^[\s\x85]+|[\s\x85]+$/g

/** cookiePairs splits a Cookie header into its pairs, in order; pieces without '=' are skipped. */
export function cookiePairs (header: string | undefined): CookiePair[] {
  const pairs: CookiePair[] = []
  if (header === undefined || header === '') return pairs
  for (const piece of header.split(';')) {
    const equals = piece.indexOf('=')
    if (equals === -1) continue
    pairs.push({ name: piece.slice(0, equals).replace(WHITESPACE, ''), value: piece.slice(equals + 1).replace(WHITESPACE, '') })
  }
  return pairs
}

/**
 * readCookies returns every value cookie `name` has in a Cookie header (names compare exactly,
 * RFC 6265 §5.4), empty values included: a browser sends one name twice when cookies of two
 * paths or domains match, and callers that must not guess (sessions) refuse that.
 */
export function readCookies (header: string | undefined, name: string): string[] {
  if (header === undefined || !header.includes(name)) return []
  const values: string[] = []
  for (const pair of cookiePairs(header)) if (pair.name === name) values.push(pair.value)
  return values
}

/** readCookie returns the first value of cookie `name` in a Cookie header, or undefined when absent or empty. */
export function readCookie (header: string | undefined, name: string): string | undefined {
  if (header === undefined || !header.includes(name)) return undefined
  for (const pair of cookiePairs(header)) {
    if (pair.name === name) return pair.value === '' ? undefined : pair.value
  }
  return undefined
}

// Beyond white space, a header decoded as UTF-8 turns more bytes into nothing a name is made
// of: what is not a token character (RFC 9110 §5.6.2) at either end is no part of the name.
const NON_TOKEN_EDGES = /^[^!#$%&'*+.^_`|~0-9A-Za-z-]+|[^!#$%&'*+.^_`|~0-9A-Za-z-]+$/g

/**
 * cookieNameKey is a cookie name as the checks that must not be fooled compare it (stripping
 * casgate's cookies, the exploit rules): its token characters, lower-cased, as ASP.NET's
 * case-insensitive cookie collection finds it after String.Trim().
 */
export function cookieNameKey (name: string): string {
  return name.replace(NON_TOKEN_EDGES, '').toLowerCase()
}

/**
 * keepsCookie says whether a pair may travel on: not one of `names` (any case: ASP.NET reads
 * cookie names case-insensitively, so "casgatesession" must not reach Exchange either), and no
 * value that smuggles one of them in ("a=x CasgateSession=v" is not a session, and its value
 * does not reach Exchange either).
 */
function keepsCookie (pair: CookiePair, lowerNames: readonly string[]): boolean {
  const name = cookieNameKey(pair.name)
  const value = pair.value.toLowerCase()
  return !lowerNames.some((own) => name === own || value.includes(`${own}=`))
}

/**
 * removeCookies takes cookies `names` out of every Cookie header of a flat [name, value, …]
 * header list (as sent upstream), with the same reading as readCookie. What remains is
 * rejoined with "; "; a header left empty is removed.
 */
export function removeCookies (headers: string[], names: readonly string[]): void {
  const lowerNames = names.map((name) => name.toLowerCase())
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.length !== 6 || headers[i]!.toLowerCase() !== 'cookie') continue
    const value = headers[i + 1]!
    const lowerValue = value.toLowerCase()
    if (!lowerNames.some((name) => lowerValue.includes(name))) continue
    const kept: string[] = []
    for (const piece of value.split(';')) {
      const trimmed = piece.replace(WHITESPACE, '')
      if (trimmed === '') continue
      const equals = trimmed.indexOf('=')
      // A piece without '=' names no cookie of casgate's; it travels on as it came.
      if (equals !== -1 && !keepsCookie({ name: trimmed.slice(0, equals).replace(WHITESPACE, ''), value: trimmed.slice(equals + 1).replace(WHITESPACE, '') }, lowerNames)) continue
      kept.push(trimmed)
    }
    if (kept.length === 0) headers.splice(i, 2)
    else headers[i + 1] = kept.join('; ')
  }
}
