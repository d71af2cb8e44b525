import type { z } from 'zod'
import type { ConfigIssue } from '../errors/errors.js'

// Turns zod's issues into lines an admin can act on: the key path, what was expected, what
// came, and the fix (with a "did you mean" for misspelt keys).

type Path = readonly PropertyKey[]

/** formatPath renders ['hosts', 0, 'mode'] as hosts[0].mode, and record keys as vdirs./owa. */
export function formatPath (path: Path): string {
  let out = ''
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`
    else out += out ? `.${String(part)}` : String(part)
  }
  return out
}

/** describeValue shows what came, short enough for one line. */
export function describeValue (value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null'
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : `a list of ${value.length}`
  if (typeof value === 'object') return 'a mapping'
  const text = JSON.stringify(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

function valueAt (root: unknown, path: Path): unknown {
  let value: unknown = root
  for (const part of path) {
    if (value === null || typeof value !== 'object') return undefined
    value = (value as Record<PropertyKey, unknown>)[part]
  }
  return value
}

interface SchemaDef { type: string, shape?: Record<string, z.ZodType>, innerType?: z.ZodType, element?: z.ZodType, valueType?: z.ZodType, options?: z.ZodType[], in?: z.ZodType }

function defOf (schema: z.ZodType): SchemaDef {
  return (schema as unknown as { _zod: { def: SchemaDef } })._zod.def
}

/** knownKeysAt lists the keys an object schema accepts at a path (all union branches merged). */
export function knownKeysAt (schema: z.ZodType, path: Path): string[] {
  const def = defOf(schema)
  switch (def.type) {
    case 'optional': case 'default': case 'nullable': case 'readonly':
      return def.innerType ? knownKeysAt(def.innerType, path) : []
    case 'pipe':
      return def.in ? knownKeysAt(def.in, path) : []
    case 'union':
      return [...new Set((def.options ?? []).flatMap((option) => knownKeysAt(option, path)))]
    case 'object': {
      if (path.length === 0) return Object.keys(def.shape ?? {})
      const child = def.shape?.[String(path[0])]
      return child ? knownKeysAt(child, path.slice(1)) : []
    }
    case 'array':
      return def.element && path.length > 0 ? knownKeysAt(def.element, path.slice(1)) : []
    case 'record':
      return def.valueType && path.length > 0 ? knownKeysAt(def.valueType, path.slice(1)) : []
    default:
      return []
  }
}

/** editDistance is the Levenshtein distance, case-insensitive. */
export function editDistance (a: string, b: string): number {
  a = a.toLowerCase()
  b = b.toLowerCase()
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost)
    }
    previous = current
  }
  return previous[b.length]!
}

/** closest returns the candidate nearest to `word`, when it is near enough to be a typo. */
export function closest (word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of candidates) {
    const distance = editDistance(word, candidate)
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined
}

const unknownKeyHints: Record<string, string> = {
  passphrase: 'passphrases are never read from the YAML; use passphraseFile (a file readable by casgate only) or passphraseEnv (an environment variable)',
  password: 'passwords are never read from the YAML; use passphraseFile or passphraseEnv'
}

// What other products call a setting, mapped to ours.
const valueHints: Record<string, Record<string, string>> = {
  mode: {
    bridging: 'SSL bridging is mode: reencrypt here',
    'ssl-bridging': 'SSL bridging is mode: reencrypt here',
    bridge: 'SSL bridging is mode: reencrypt here',
    ssl_bridge: 'NetScaler\'s SSL_BRIDGE (no termination) is mode: passthrough here',
    tcp: 'TCP pass-through of TLS is mode: passthrough here',
    termination: 'SSL termination with plain HTTP to the backends is mode: offload'
  }
}

function unitHint (path: Path): string {
  const key = String(path[path.length - 1])
  return key.endsWith('Ms') ? ' of milliseconds (3600000 is one hour)' : ''
}

interface RawIssue {
  code: string
  path: PropertyKey[]
  message: string
  keys?: string[]
  expected?: string
  values?: unknown[]
  errors?: RawIssue[][]
}

function issueToLines (issue: RawIssue, schema: z.ZodType, input: unknown): ConfigIssue[] {
  const path = issue.path
  const got = valueAt(input, path)
  switch (issue.code) {
    case 'unrecognized_keys':
      return (issue.keys ?? []).map((key) => {
        const suggestion = closest(key, knownKeysAt(schema, path))
        // Blocks with a password of their own (state.redis) name their keys: passwordFile, passwordEnv.
        const fix = (key === 'password' && knownKeysAt(schema, path).includes('passwordFile') ? 'passwords are never read from the YAML; use passwordFile (a file readable by casgate only) or passwordEnv (an environment variable)' : undefined) ??
          unknownKeyHints[key] ??
          (suggestion ? `did you mean "${suggestion}"? Rename or remove the key` : `remove it; accepted keys here: ${knownKeysAt(schema, path).join(', ')}`)
        return { path: formatPath([...path, key]), message: 'unknown key', fix }
      })
    case 'invalid_type':
      if (got === undefined) {
        return [{ path: formatPath(path), message: `is required (expected ${issue.expected})`, fix: `add ${formatPath(path)}` }]
      }
      return [{ path: formatPath(path), message: `expected ${issue.expected}, got ${describeValue(got)}`, fix: `write ${formatPath(path)} as a ${issue.expected}${unitHint(path)}` }]
    case 'invalid_value': {
      const allowed = (issue.values ?? []).map((v) => String(v))
      const suggestion = typeof got === 'string' ? closest(got, allowed) : undefined
      const known = typeof got === 'string' ? valueHints[String(path[path.length - 1])]?.[got.toLowerCase()] : undefined
      return [{
        path: formatPath(path),
        message: `expected one of ${allowed.join(' | ')}, got ${describeValue(got)}`,
        fix: known ?? (suggestion ? `did you mean "${suggestion}"?` : `use one of ${allowed.join(', ')}`)
      }]
    }
    case 'invalid_union': {
      // Report the branch that came closest: the fewest problems wins.
      const branches = (issue.errors ?? []).slice().sort((a, b) => a.length - b.length)
      const best = branches[0]
      if (!best || best.length === 0) {
        return [{ path: formatPath(path), message: `does not match any accepted form, got ${describeValue(got)}` }]
      }
      return best.flatMap((inner) => issueToLines({ ...inner, path: [...path, ...inner.path] }, schema, input))
    }
    case 'invalid_format': {
      // A list entry (urls[1]) takes the hint of its list.
      const key = String([...path].reverse().find((part) => typeof part === 'string') ?? '')
      return [{ path: formatPath(path), message: `${issue.message}, got ${describeValue(got)}`, fix: formatFixes[key] ?? `rewrite ${formatPath(path)} in that form` }]
    }
    case 'too_big': case 'too_small':
      return [{ path: formatPath(path), message: `${issue.message.replace(/^Too (big|small): /, '')}, got ${describeValue(got)}`, fix: `change ${formatPath(path)} to fit` }]
    default:
      return [{ path: formatPath(path), message: `${issue.message.replace(/^Invalid input: /, '')}, got ${describeValue(got)}` }]
  }
}

/** formatFixes say how to write a key whose text has a required form. */
const formatFixes: Record<string, string> = {
  affinityCookie: 'write the cookie name exactly as the backend sets it, e.g. X-OWA-Session (no spaces, commas, semicolons or quotes)',
  cookieName: 'use a name such as CasgateAffinity (no spaces, commas, semicolons or quotes)',
  urls: 'write ldaps://dc1.contoso.local:636 (no path: the bind name says where users are)',
  secretEnv: 'use a variable name such as CASGATE_AFFINITY_SECRET',
  passphraseEnv: 'use a variable name such as CASGATE_PFX_PASSPHRASE',
  passwordEnv: 'use a variable name such as CASGATE_REDIS_PASSWORD',
  bindName: 'write {user}@contoso.com for Active Directory, or uid={user},ou=people,dc=contoso,dc=com for a DN',
  realm: 'use plain text such as Exchange'
}

/** zodIssuesToConfigIssues converts a failed parse into config issues, in document order. */
export function zodIssuesToConfigIssues (error: z.ZodError, schema: z.ZodType, input: unknown): ConfigIssue[] {
  return (error.issues as unknown as RawIssue[]).flatMap((issue) => issueToLines(issue, schema, input))
}
