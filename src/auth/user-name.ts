/**
 * normalizeUser folds the spellings of one Windows account together: CONTOSO\jdoe, jdoe@contoso.com
 * and JDoe all become "jdoe". Two accounts that share a name in different domains then share a
 * server, which is harmless: affinity decides where, never whether.
 */
export function normalizeUser (name: string): string {
  let user = name.trim()
  const backslash = user.lastIndexOf('\\')
  if (backslash !== -1) user = user.slice(backslash + 1)
  const at = user.indexOf('@')
  if (at > 0) user = user.slice(0, at)
  return user.toLowerCase()
}
