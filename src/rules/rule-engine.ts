import { cookieNameKey, cookiePairs } from '../util/cookies.js'
import { decodeFully } from './decode.js'

// The exploit rule engine: a rule pack is data (src/rules/exchange-pack.ts), compiled once into
// regular expressions and evaluated on every request, RPC channels included. A rule matches
// when all its conditions hold; the first active rule that matches wins.
// Cost: `match` runs on every proxied request, so a target without '%' is matched as it came
// (patterns are case-insensitive), decoding happens at most once per request and only when a
// '%' is present, the path is cut out only when a path condition gets that far, and cookie
// conditions look for the cookie's name in the header before parsing it. The common OWA or
// ActiveSync request allocates nothing here.

/**
 * Condition is one test of a rule, on the request as Exchange will read it:
 * - `uri`: the target (path and query) percent-decoded until stable and case-folded;
 * - `path`: the same, of the path only (what precedes the first raw '?');
 * - `cookie`: the cookie of that name is present (names compare case-insensitively, as
 *   ASP.NET's cookie collection does) and, with `pattern`, its decoded value matches;
 * - `header`: the header is present and, with `pattern`, its decoded value matches;
 * - `vdir`: the published vdir the request falls under is (`in`) or is not (`notIn`) listed.
 * Patterns are regular expression sources written in lower case; they are compiled with the
 * `i` and `s` flags (`.` crosses a decoded %0a, which would otherwise split a match).
 */
export type Condition =
  | { on: 'uri', pattern: string }
  | { on: 'path', pattern: string }
  | { on: 'cookie', name: string, pattern?: string }
  | { on: 'header', name: string, pattern?: string }
  | { on: 'vdir', in?: readonly string[], notIn?: readonly string[] }

/** CorpusSample is a request a rule must block (attacks) or leave alone (legitimate): a target, or a target with a Cookie, headers or method. */
export type CorpusSample = string | { target: string, method?: string, cookie?: string, headers?: Readonly<Record<string, string>> }

/** Rule is one entry of a pack: what it catches, where that comes from, and its test corpus. */
export interface Rule {
  /** Stable id, used in logs, `/status`, 403 answers and `rules.disable`. */
  id: string
  cve: readonly string[]
  title: string
  /** Where the pattern comes from (vendor mitigation or public write-up), as URLs. */
  source: string
  /** What the rule matches, in words (docs/rules.md). */
  matches: string
  /** What legitimate traffic it leaves alone, and any known false positive. */
  leavesAlone: string
  /** All must hold; evaluated cheapest first (vdir, uri, path, header, cookie). */
  when: readonly Condition[]
  corpus: { attacks: readonly CorpusSample[], legitimate: readonly CorpusSample[] }
}

/** RulePackData is a versioned set of rules. */
export interface RulePackData {
  version: string
  rules: readonly Rule[]
}

/** RuleRequest is what a rule sees of a request. */
export interface RuleRequest {
  method: string
  /** The raw request target as on the request line. */
  target: string
  /** Lower-case names, Node's IncomingHttpHeaders shape (repeated Cookie lines joined with '; '). */
  headers: Readonly<Record<string, string | string[] | undefined>>
  /** Canonical published vdir path ('/owa'), or undefined when the target is under none. */
  vdir: string | undefined
}

type Compiled =
  | { kind: 0, in: ReadonlySet<string> | undefined, notIn: ReadonlySet<string> | undefined, seen: Map<string | undefined, boolean> } // vdir
  | { kind: 1, regex: RegExp } // uri
  | { kind: 2, regex: RegExp } // path
  | { kind: 3, name: string, regex: RegExp | undefined } // header
  | { kind: 4, name: string, probe: RegExp, regex: RegExp | undefined } // cookie

interface CompiledRule { rule: Rule, conditions: readonly Compiled[] }

function compilePattern (rule: Rule, pattern: string): RegExp {
  try {
    return new RegExp(pattern, 'is')
  } catch (err) {
    throw new Error(`rule ${rule.id}: invalid pattern ${JSON.stringify(pattern)}`, { cause: err })
  }
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

function lowerSet (list: readonly string[] | undefined): ReadonlySet<string> | undefined {
  return list === undefined ? undefined : new Set(list.map((vdir) => vdir.toLowerCase()))
}

function compile (rule: Rule): CompiledRule {
  if (rule.when.length === 0) throw new Error(`rule ${rule.id}: no conditions`)
  const conditions: Compiled[] = rule.when.map((condition): Compiled => {
    switch (condition.on) {
      case 'vdir': return { kind: 0, in: lowerSet(condition.in), notIn: lowerSet(condition.notIn), seen: new Map() }
      case 'uri': return { kind: 1, regex: compilePattern(rule, condition.pattern) }
      case 'path': return { kind: 2, regex: compilePattern(rule, condition.pattern) }
      case 'header': return { kind: 3, name: condition.name.toLowerCase(), regex: condition.pattern === undefined ? undefined : compilePattern(rule, condition.pattern) }
      case 'cookie': return {
        kind: 4,
        name: condition.name.toLowerCase(),
        probe: new RegExp(escapeRegExp(condition.name), 'i'),
        regex: condition.pattern === undefined ? undefined : compilePattern(rule, condition.pattern)
      }
    }
    throw new Error(`rule ${rule.id}: unknown condition ${JSON.stringify(condition)}`)
  })
  conditions.sort((a, b) => a.kind - b.kind)
  return { rule, conditions }
}

// Vdirs come canonical from the routing table, a handful of strings: the verdict per spelling is
// remembered so that no request pays for lower-casing it.
const VDIR_VERDICTS_MAX = 64

function vdirHolds (condition: { in: ReadonlySet<string> | undefined, notIn: ReadonlySet<string> | undefined, seen: Map<string | undefined, boolean> }, vdir: string | undefined): boolean {
  const known = condition.seen.get(vdir)
  if (known !== undefined) return known
  const key = vdir?.toLowerCase()
  const verdict = !(condition.in !== undefined && (key === undefined || !condition.in.has(key))) &&
    !(condition.notIn !== undefined && key !== undefined && condition.notIn.has(key))
  if (condition.seen.size < VDIR_VERDICTS_MAX) condition.seen.set(vdir, verdict)
  return verdict
}

function headerHolds (value: string | string[] | undefined, regex: RegExp | undefined): boolean {
  if (value === undefined) return false
  if (regex === undefined) return true
  if (typeof value === 'string') return regex.test(decodeFully(value))
  return value.some((one) => regex.test(decodeFully(one)))
}

function cookieHolds (header: string | string[] | undefined, condition: { name: string, probe: RegExp, regex: RegExp | undefined }): boolean {
  if (header === undefined) return false
  const text = typeof header === 'string' ? header : header.join('; ')
  if (!condition.probe.test(text)) return false
  for (const pair of cookiePairs(text)) {
    // No leading or trailing byte can hide a name from a rule (util/cookies.ts cookieNameKey).
    if (cookieNameKey(pair.name) !== condition.name) continue
    if (condition.regex === undefined || condition.regex.test(decodeFully(pair.value))) return true
  }
  return false
}

/**
 * RulePack is a compiled rule pack with some rules switched off. Unknown ids in `disabled` do
 * not throw: they are listed in `unknownIds` for the configuration layer to report.
 */
export class RulePack {
  readonly version: string
  /** Active rules, in pack order. */
  readonly rules: readonly Rule[]
  /** Rules switched off by id. */
  readonly disabled: readonly Rule[]
  /** Ids asked to be disabled that the pack does not have. */
  readonly unknownIds: readonly string[]
  readonly #compiled: readonly CompiledRule[]

  constructor (pack: RulePackData, disabled: readonly string[] = []) {
    const ids = new Set<string>()
    for (const rule of pack.rules) {
      if (ids.has(rule.id)) throw new Error(`rule pack ${pack.version}: rule id ${rule.id} appears twice`)
      ids.add(rule.id)
    }
    const off = new Set(disabled)
    this.version = pack.version
    this.rules = pack.rules.filter((rule) => !off.has(rule.id))
    this.disabled = pack.rules.filter((rule) => off.has(rule.id))
    this.unknownIds = [...off].filter((id) => !ids.has(id))
    this.#compiled = this.rules.map(compile)
  }

  /** match returns the first active rule the request matches, or undefined. */
  match (request: RuleRequest): Rule | undefined {
    const target = request.target
    const encoded = target.includes('%')
    // Without '%', decoding changes nothing but case, and the patterns ignore case.
    let uri: string | undefined = encoded ? undefined : target
    let path: string | undefined
    const compiled = this.#compiled
    for (let r = 0; r < compiled.length; r++) {
      const conditions = compiled[r]!.conditions
      let holds = true
      for (let c = 0; c < conditions.length && holds; c++) {
        const condition = conditions[c]!
        switch (condition.kind) {
          case 0: holds = vdirHolds(condition, request.vdir); break
          case 1: holds = condition.regex.test(uri ??= decodeFully(target)); break
          case 2: holds = condition.regex.test(path ??= pathOf(target, encoded)); break
          case 3: holds = headerHolds(request.headers[condition.name], condition.regex); break
          case 4: holds = cookieHolds(request.headers.cookie, condition); break
        }
      }
      if (holds) return compiled[r]!.rule
    }
    return undefined
  }
}

function pathOf (target: string, encoded: boolean): string {
  const mark = target.indexOf('?')
  const raw = mark === -1 ? target : target.slice(0, mark)
  return encoded ? decodeFully(raw) : raw
}
