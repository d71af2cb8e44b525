// The reading the exploit rules match on. Exchange decodes what it is sent more than once: IIS
// (HTTP.sys) percent-decodes the path, ASP.NET's HttpUtility.UrlDecode decodes query values
// again (and understands IIS's own %uXXXX form), and Exchange's front end decodes explicit-logon
// addresses once more. ProxyNotShell's first URL Rewrite mitigation was bypassed with
// `%50owershell` precisely because it matched the raw URI; Microsoft's final rule matches
// {UrlDecode:{REQUEST_URI}} (CSS-Exchange Security/src/EOMTv2.ps1). casgate goes further and
// decodes until nothing changes, so %252F, %25252e and mixtures are read the way the deepest
// decoder behind it could read them.

/** MAX_DECODE_ROUNDS bounds the decoding: no decoder behind casgate decodes more than three times. */
export const MAX_DECODE_ROUNDS = 5

function hexValue (c: number): number {
  if (c >= 48 && c <= 57) return c - 48 // 0-9
  const lower = c | 0x20
  if (lower >= 97 && lower <= 102) return lower - 87 // a-f
  return -1
}

function byteAt (text: string, i: number): number {
  // %XX at i, or -1 when the escape is malformed (left as it came).
  if (i + 2 >= text.length || text.charCodeAt(i) !== 37) return -1
  const high = hexValue(text.charCodeAt(i + 1))
  const low = hexValue(text.charCodeAt(i + 2))
  return high < 0 || low < 0 ? -1 : (high << 4) | low
}

function unicodeEscapeAt (text: string, i: number): number {
  // IIS / ASP.NET %uXXXX: HttpUtility.UrlDecode turns %u0040 into '@'.
  if (i + 5 >= text.length) return -1
  const u = text.charCodeAt(i + 1)
  if (u !== 117 && u !== 85) return -1
  let value = 0
  for (let k = i + 2; k < i + 6; k++) {
    const digit = hexValue(text.charCodeAt(k))
    if (digit < 0) return -1
    value = (value << 4) | digit
  }
  return value
}

/**
 * decodeOnce percent-decodes `text` one level. Runs of %XX bytes are read as UTF-8 (invalid
 * sequences become U+FFFD, as .NET's decoder does); %uXXXX is read as one UTF-16 unit;
 * malformed escapes ('%zz', a trailing '%') stay as they are; '+' stays '+'.
 */
export function decodeOnce (text: string): string {
  let first = text.indexOf('%')
  if (first === -1) return text
  let out = ''
  let copied = 0
  const bytes: number[] = []
  while (first !== -1) {
    let i = first
    const unit = unicodeEscapeAt(text, i)
    if (unit >= 0) {
      out += text.slice(copied, i) + String.fromCharCode(unit)
      copied = i + 6
      first = text.indexOf('%', copied)
      continue
    }
    let byte = byteAt(text, i)
    if (byte < 0) {
      first = text.indexOf('%', i + 1)
      continue
    }
    out += text.slice(copied, i)
    bytes.length = 0
    let ascii = true
    while (byte >= 0) {
      bytes.push(byte)
      if (byte >= 0x80) ascii = false
      i += 3
      byte = byteAt(text, i)
    }
    if (ascii) {
      for (let k = 0; k < bytes.length; k++) out += String.fromCharCode(bytes[k]!)
    } else {
      out += Buffer.from(bytes).toString('utf8')
    }
    copied = i
    first = text.indexOf('%', copied)
  }
  return out + text.slice(copied)
}

/**
 * decodeFully percent-decodes `text` repeatedly until it is stable (at most MAX_DECODE_ROUNDS
 * rounds) and lower-cases the result, so that rules written in lower case match every spelling
 * Exchange treats alike (IIS and .NET compare paths with OrdinalIgnoreCase). Malformed escapes
 * are left in place, '+' stays '+', and it never throws.
 */
export function decodeFully (text: string): string {
  let current = text
  for (let round = 0; round < MAX_DECODE_ROUNDS && current.includes('%'); round++) {
    const next = decodeOnce(current)
    if (next === current) break
    current = next
  }
  return current.toLowerCase()
}
