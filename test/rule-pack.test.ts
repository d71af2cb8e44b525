import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { exchangeProfile } from '../src/config/exchange-profile.js'
import { decodeFully, decodeOnce } from '../src/rules/decode.js'
import { EXCHANGE_RULE_PACK } from '../src/rules/exchange-pack.js'
import { FRONT_END_ONLY_HEADERS, isFrontEndOnlyHeader } from '../src/rules/front-end-headers.js'
import { RulePack, type CorpusSample, type Rule, type RulePackData, type RuleRequest } from '../src/rules/rule-engine.js'

// The rule pack judged on its own corpus and on realistic Exchange traffic: every attack of a
// rule is caught by that rule (also double/triple-encoded and in other case), every legitimate
// look-alike of every rule passes the whole pack, and a rule switched off by id lets its attacks
// through. Requests go over the socket in the lead's tests; here the engine is exercised directly.

const vdirPaths = exchangeProfile.map((vdir) => vdir.path)

/** vdirOf finds the vdir the way the routing table does: the raw first segment, any case. */
function vdirOf (target: string): string | undefined {
  const end = target.slice(1).search(/[/?#]/)
  const first = (end === -1 ? target : target.slice(0, end + 1)).toLowerCase()
  return vdirPaths.find((path) => path.toLowerCase() === first)
}

function request (sample: CorpusSample): RuleRequest {
  if (typeof sample === 'string') return { method: 'GET', target: sample, headers: {}, vdir: vdirOf(sample) }
  const headers: Record<string, string> = { ...sample.headers }
  if (sample.cookie !== undefined) headers.cookie = sample.cookie
  return { method: sample.method ?? 'GET', target: sample.target, headers, vdir: vdirOf(sample.target) }
}

function only (rule: Rule): RulePack {
  return new RulePack({ version: 'test', rules: [rule] })
}

const full = new RulePack(EXCHANGE_RULE_PACK)
const OWA_COOKIE_HEADER = 'ClientId=5A3F0C2E8B7D4E1F9A6C3B2D1E0F4A5B; X-BackEndCookie=S-1-5-21-1004336348-1177238915-682003330-1106=u56Lnp2ejJqBy8vLycjNzsbSx8bOy9LLy8/M0p7NxsnSz8/Nx8/Jz87JzsbPq8/Gz8vFzsfFy8s=; X-OWA-CANARY=kM2sL0x3p0aQ1nYtZx7WcJ5dE8rT2fH9uV4iB6oA3yG1; PrivateComputer=true; PBack=0; X-OWA-JS-PSD=1'
const REMOTE_POWERSHELL_SESSION = '/PowerShell/?serializationLevel=Full;ExchClientVer=15.2.1258.12;clientApplication=ManagementShell;TargetServer=;PSVersion=5.1.17763.592'

// Percent-encodes the characters attacks depend on (keeping the leading '/'), then encodes
// every '%' again `levels - 1` times: %2F, %252F, %25252F.
function encoded (text: string, levels: number): string {
  let out = text[0] + text.slice(1).replace(/[/@?&=.\\aop]/gi, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'))
  for (let level = 1; level < levels; level++) out = out.replace(/%/g, '%25')
  return out
}

function mixedCase (text: string): string {
  let upper = false
  return text.replace(/[a-z]/gi, (c) => {
    upper = !upper
    return upper ? c.toUpperCase() : c.toLowerCase()
  })
}

describe('decodeFully', () => {
  it('decodes until stable, case-folds, and leaves what is not an escape alone', () => {
    expect(decodeFully('/OWA/jdoe%2540contoso.com%252Fpowershell')).toBe('/owa/jdoe@contoso.com/powershell')
    expect(decodeFully('/x%25252e%25252E%2525252F')).toBe('/x../')
    expect(decodeFully('%50owershell')).toBe('powershell')
    expect(decodeFully('%u0040%U002F')).toBe('@/') // IIS / ASP.NET %uXXXX
    expect(decodeFully('%C3%A9t%C3%89')).toBe('été')
    expect(decodeFully('%zz%2%')).toBe('%zz%2%')
    expect(decodeFully('a+b%2Bc')).toBe('a+b+c')
    expect(decodeFully('%c0%af')).toBe('\ufffd\ufffd') // overlong '/' is not '/'
    expect(decodeFully('%0a%00')).toBe('\n\0')
    expect(decodeOnce('%2541')).toBe('%41')
  })

  it('stops after a bounded number of rounds', () => {
    let deep = '%41'
    for (let i = 0; i < 8; i++) deep = deep.replace(/%/g, '%25')
    expect(decodeFully(deep)).toContain('%')
  })

  it('never throws and always returns lower case (property)', () => {
    fc.assert(fc.property(fc.string({ unit: fc.constantFrom('%', '2', '5', 'F', 'u', 'c', '0', 'A', 'z', '/', '@', 'É', '\ud800') }), (text) => {
      const out = decodeFully(text)
      expect(out).toBe(out.toLowerCase())
      if (!text.includes('%')) expect(out).toBe(text.toLowerCase())
    }), { numRuns: 500 })
  })
})

describe('the Exchange rule pack', () => {
  it('has a version, unique ids, a CVE, a source and a corpus per rule', () => {
    expect(EXCHANGE_RULE_PACK.version).toMatch(/^exchange-\d{4}\.\d{2}$/)
    expect(full.rules.length).toBeGreaterThanOrEqual(8)
    for (const rule of EXCHANGE_RULE_PACK.rules) {
      expect(rule.cve.length, rule.id).toBeGreaterThan(0)
      for (const cve of rule.cve) expect(cve).toMatch(/^CVE-\d{4}-\d+$/)
      expect(rule.source, rule.id).toMatch(/^https:\/\//)
      expect(rule.corpus.attacks.length, rule.id).toBeGreaterThanOrEqual(2)
      expect(rule.corpus.legitimate.length, rule.id).toBeGreaterThanOrEqual(2)
    }
  })

  for (const rule of EXCHANGE_RULE_PACK.rules) {
    describe(rule.id, () => {
      it('catches every attack of its corpus, alone and in the whole pack', () => {
        for (const sample of rule.corpus.attacks) {
          expect(only(rule).match(request(sample))?.id, JSON.stringify(sample)).toBe(rule.id)
          expect(full.match(request(sample)), JSON.stringify(sample)).toBeDefined()
        }
      })

      it('lets every legitimate look-alike of its corpus through the whole pack', () => {
        for (const sample of rule.corpus.legitimate) {
          expect(full.match(request(sample))?.id, JSON.stringify(sample)).toBeUndefined()
        }
      })

      it('catches its attacks double- and triple-encoded and in any case', () => {
        for (const sample of rule.corpus.attacks) {
          const variants: CorpusSample[] = typeof sample === 'string'
            ? [encoded(sample, 2), encoded(sample, 3), sample.toUpperCase(), mixedCase(sample)]
            : [
                { ...sample, cookie: sample.cookie?.toUpperCase() },
                { ...sample, cookie: mixedCase(sample.cookie ?? '') }
              ]
          for (const variant of variants) {
            expect(only(rule).match(request(variant))?.id, JSON.stringify(variant)).toBe(rule.id)
          }
        }
      })

      it('lets its attacks through once switched off by id', () => {
        const pack = new RulePack(EXCHANGE_RULE_PACK, [rule.id])
        expect(pack.rules.map((active) => active.id)).not.toContain(rule.id)
        expect(pack.disabled.map((off) => off.id)).toEqual([rule.id])
        expect(pack.unknownIds).toEqual([])
        for (const sample of rule.corpus.attacks) expect(pack.match(request(sample))?.id).not.toBe(rule.id)
      })
    })
  }

  it('catches the encodings named in the issue', () => {
    const caught = [
      '/owa/jdoe%2540contoso.com%252Fpowershell',
      '/autodiscover/autodiscover%25252ejson?@evil.example%252Fmapi%252Fnspi',
      '/autodiscover/autodiscover.json?%2540evil.example/%2550owershell',
      '/Autodiscover/Autodiscover.json?Email=Autodiscover%25252FAutodiscover.json%25253F%252540evil.example',
      '/mapi/%25252Fpowershell'
    ]
    for (const target of caught) expect(full.match(request(target)), target).toBeDefined()
  })

  it('lets realistic Exchange traffic through', () => {
    const legitimate: CorpusSample[] = [
      { target: '/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe@contoso.com&DeviceId=ApplF17XK0Q2HG7F&DeviceType=iPhone', method: 'POST', headers: { 'ms-asprotocolversion': '16.1' } },
      '/Microsoft-Server-ActiveSync?Cmd=Ping&User=CONTOSO%5Cjdoe&DeviceId=androidc1234&DeviceType=Android',
      '/Microsoft-Server-ActiveSync?jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25lBBA%2FqZk2NhR6v0kb5sY7ceBw%3D%3D',
      '/owa/?ae=Item&t=IPM.Note&id=RgAAAAAvQ%2FqZk2NhR6v0kb5sY7ceBwB%2BcQ&email=jdoe%40contoso.com',
      '/owa/jdoe@contoso.com/',
      '/owa/service.svc?action=GetAccessTokenforResource&UA=0&app=Mail',
      '/owa/auth/logon.aspx?replaceCurrent=1&url=https%3a%2f%2fmail.contoso.com%2fowa%2f',
      { target: '/owa/service.svc?action=FindItem&EP=1&ID=-34&AC=1', method: 'POST', cookie: OWA_COOKIE_HEADER, headers: { 'x-owa-canary': 'kM2sL0x3p0aQ1nYtZx7WcJ5dE8rT2fH9uV4iB6oA3yG1', 'x-owa-actionname': 'FindItem' } },
      { target: '/EWS/Exchange.asmx', method: 'POST', headers: { 'x-anchormailbox': 'jdoe@contoso.com', 'x-preferserveraffinity': 'true' }, cookie: 'X-BackEndOverrideCookie=EX01.contoso.local~1942062522' },
      '/EWS/mrsproxy.svc',
      { target: '/mapi/emsmdb/?MailboxId=f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f@contoso.com', method: 'POST', headers: { 'x-requesttype': 'Execute', 'x-clientinfo': '{2F94A2BF-A2E6-4CCC-BF98-B5F22C542226}:1' } },
      '/mapi/nspi/?MailboxId=f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f@contoso.com',
      { target: '/rpc/rpcproxy.dll?f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f@contoso.com:6001', method: 'RPC_IN_DATA' },
      '/autodiscover/autodiscover.json/v1.0/jdoe@contoso.com?Protocol=AutodiscoverV1&RedirectCount=1',
      '/autodiscover/autodiscover.json?Email=jdoe%40contoso.com&Protocol=ActiveSync&RedirectCount=1',
      { target: '/Autodiscover/Autodiscover.xml', method: 'POST' },
      '/autodiscover/autodiscover.svc/wssecurity',
      '/OAB/4b3c2d1e-0f1e-2d3c-4b5a-69788796a5b4/oab.xml',
      '/ecp/?rfr=owa&p=PersonalSettings/Password.aspx',
      { target: '/ecp/', cookie: 'msExchEcpCanary=Zx7WcJ5dE8rT2fH9uV4iB6oA3yG1.; X-BEResource=ex01.contoso.local~1942062522' },
      REMOTE_POWERSHELL_SESSION
    ]
    for (const sample of legitimate) expect(full.match(request(sample))?.id, JSON.stringify(sample)).toBeUndefined()
  })

  it('reads every Cookie line and every spelling of a cookie name', () => {
    const attack: RuleRequest = { method: 'GET', target: '/ecp/y.js', headers: { cookie: ['ClientId=ABC', ' x-AnonResource-BACKEND = localhost/ecp/default.flt?~3'] }, vdir: '/ecp' }
    expect(full.match(attack)?.id).toBe('proxylogon-anonresource-backend')
    // One cookie named "a" whose value holds the name: ASP.NET reads it as "a" too.
    expect(full.match({ ...attack, headers: { cookie: 'a=x X-AnonResource-Backend=y' } })).toBeUndefined()
  })

  it('switches every rule off, and reports ids it does not know', () => {
    const ids = EXCHANGE_RULE_PACK.rules.map((rule) => rule.id)
    const none = new RulePack(EXCHANGE_RULE_PACK, [...ids, 'no-such-rule', 'proxylogon'])
    expect(none.rules).toEqual([])
    expect(none.unknownIds).toEqual(['no-such-rule', 'proxylogon'])
    expect(none.version).toBe(EXCHANGE_RULE_PACK.version)
    for (const rule of EXCHANGE_RULE_PACK.rules) {
      for (const sample of rule.corpus.attacks) expect(none.match(request(sample))).toBeUndefined()
    }
  })

  it('never throws on arbitrary requests (property)', () => {
    const text = fc.string({ unit: fc.constantFrom('/', '%', '2', '5', 'F', '@', '?', '&', '=', '\\', 'a', 'o', 'w', ';', '~', 'x', 'powershell', 'autodiscover.json', 'X-BEResource', 'email=') })
    fc.assert(fc.property(text, text, (tail, cookie) => {
      const verdict = full.match({ method: 'GET', target: '/' + tail, headers: { cookie }, vdir: vdirOf('/' + tail) })
      expect(verdict === undefined || typeof verdict.id === 'string').toBe(true)
    }), { numRuns: 1000 })
  })
})

describe('the rule engine', () => {
  const rule = (when: Rule['when'], id = 'r'): Rule => ({ id, cve: ['CVE-2000-0001'], title: id, source: 'https://example.test/', matches: '', leavesAlone: '', when, corpus: { attacks: [], legitimate: [] } })
  const pack = (...rules: Rule[]): RulePackData => ({ version: 'test-1', rules })

  it('matches headers by name, on their decoded value, and vdirs in or out of a list', () => {
    const engine = new RulePack(pack(
      rule([{ on: 'header', name: 'X-Evil', pattern: '^bad/' }], 'header'),
      rule([{ on: 'vdir', in: ['/OWA'] }, { on: 'uri', pattern: 'secret' }], 'vdir-in')
    ))
    const base = { method: 'GET', target: '/', headers: {}, vdir: undefined }
    expect(engine.match({ ...base, headers: { 'x-evil': 'BAD%252Fthing' } })?.id).toBe('header')
    expect(engine.match({ ...base, headers: { 'x-evil': ['fine', 'bad/'] } })?.id).toBe('header')
    expect(engine.match({ ...base, headers: { 'x-evil': 'fine' } })).toBeUndefined()
    expect(engine.match({ ...base, target: '/owa/secret', vdir: '/owa' })?.id).toBe('vdir-in')
    expect(engine.match({ ...base, target: '/ews/secret', vdir: '/EWS' })).toBeUndefined()
    expect(engine.match({ ...base, target: '/x/secret', vdir: undefined })).toBeUndefined()
  })

  it('returns the first matching rule in pack order', () => {
    const engine = new RulePack(pack(rule([{ on: 'uri', pattern: 'a' }], 'first'), rule([{ on: 'uri', pattern: 'a' }], 'second')))
    expect(engine.match({ method: 'GET', target: '/a', headers: {}, vdir: undefined })?.id).toBe('first')
  })

  it('refuses a pack with a repeated id, an empty rule or a bad pattern, naming the rule', () => {
    expect(() => new RulePack(pack(rule([{ on: 'uri', pattern: 'a' }], 'x'), rule([{ on: 'uri', pattern: 'b' }], 'x')))).toThrow(/x appears twice/)
    expect(() => new RulePack(pack(rule([], 'empty')))).toThrow(/empty: no conditions/)
    expect(() => new RulePack(pack(rule([{ on: 'uri', pattern: '(' }], 'broken')))).toThrow(/rule broken: invalid pattern/)
  })
})

describe('front-end-only headers', () => {
  it('names the headers Exchange\'s front end sets, any case, and the X-Backend-Diag- prefix', () => {
    for (const name of FRONT_END_ONLY_HEADERS) {
      if (name.endsWith('*')) continue
      expect(isFrontEndOnlyHeader(name.toLowerCase()), name).toBe(true)
    }
    for (const name of ['x-commonaccesstoken', 'x-isfromcafe', 'x-sourcecafeserver', 'msexchproxyuri', 'x-backend-diag-', 'x-backend-diag-latency', 'msexchlogonmailbox', 'x-proxytargetserver', 'testbackendurl']) {
      expect(isFrontEndOnlyHeader(name), name).toBe(true)
    }
  })

  it('leaves the headers real clients send', () => {
    const clientHeaders = ['authorization', 'cookie', 'host', 'client-request-id', 'return-client-request-id', 'x-anchormailbox', 'x-publicfoldermailbox',
      'x-preferserveraffinity', 'x-owa-canary', 'x-owa-actionname', 'x-owa-urlpostdata', 'x-requesttype', 'x-requestid', 'x-clientinfo', 'x-clientapplication',
      'ms-asprotocolversion', 'x-ms-policykey', 'x-forwarded-for', 'x-backendcookie', 'x-backend', 'user-agent']
    for (const name of clientHeaders) expect(isFrontEndOnlyHeader(name), name).toBe(false)
  })
})

describe('docs/rules.md', () => {
  it('documents the pack version, every rule with its CVEs, and every front-end-only header', () => {
    const docs = readFileSync('docs/rules.md', 'utf8')
    expect(docs).toContain(EXCHANGE_RULE_PACK.version)
    for (const rule of EXCHANGE_RULE_PACK.rules) {
      expect(docs, rule.id).toContain(`\`${rule.id}\``)
      for (const cve of rule.cve) expect(docs, `${rule.id} ${cve}`).toContain(cve)
    }
    for (const name of FRONT_END_ONLY_HEADERS) expect(docs, name).toContain(`\`${name}\``)
  })
})
