/**
 * addressKey is what per-address limits (connections, lockout) count by: an IPv4 address (also when a dual-stack
 * listener reports it as ::ffff:a.b.c.d), or the /64 of an IPv6 address. A /64 is what one phone
 * or one LAN gets and its hosts pick addresses in it at will (RFC 7421, RFC 8981), so counting
 * single IPv6 addresses would limit nothing.
 */
export function addressKey (address: string): string {
  if (!address.includes(':')) return address
  const lower = address.toLowerCase().replace(/%.*$/, '')
  if (lower.startsWith('::ffff:') && lower.includes('.')) return lower.slice(7)
  const [head = '', tail] = lower.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  // `::` stands for as many zero groups as are missing; a trailing a.b.c.d is two groups.
  const missing = 8 - left.length - right.length - (right.at(-1)?.includes('.') === true ? 1 : 0)
  const groups = [...left, ...Array<string>(Math.max(missing, 0)).fill('0'), ...right]
  return groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, '')).join(':') + '::/64'
}
