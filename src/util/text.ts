/** hasControlCharacters says whether text holds C0 controls or DEL (never valid in a user name or URL path). */
export function hasControlCharacters (text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return true
  }
  return false
}
