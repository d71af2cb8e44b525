import type { RulePackData } from './rule-engine.js'

// casgate's Exchange exploit rule pack: data, versioned, one entry per attack, each with where
// its pattern comes from and a corpus of attacks and of legitimate look-alikes (test/rule-pack
// .test.ts proves both; docs/rules.md explains each rule). Patterns are matched on the target
// percent-decoded until stable and case-folded (src/rules/decode.ts), so the double- and
// triple-encoded spellings of every attack are caught without rules of their own.
// Patterns are written to run in linear time on a 16 KB target: no nested quantifiers, and a
// "first occurrence" prefix ((?:(?!x).)*x) where a rule needs "x, then later y". Such a costly
// pattern follows a plain literal condition, so that ordinary requests never reach it.

const EOMT = 'https://github.com/microsoft/CSS-Exchange/blob/main/Security/src/EOMT.ps1'
const EOMT_V2 = 'https://github.com/microsoft/CSS-Exchange/blob/main/Security/src/EOMTv2.ps1'
const MSRC_2021 = 'https://msrc.microsoft.com/blog/2021/03/microsoft-exchange-server-vulnerabilities-mitigations-march-2021/'
const MSRC_2022 = 'https://msrc.microsoft.com/blog/2022/09/customer-guidance-for-reported-zero-day-vulnerabilities-in-microsoft-exchange-server/'
const ZDI_PROXYSHELL = 'https://www.zerodayinitiative.com/blog/2021/8/17/from-pwn2own-2021-a-new-attack-surface-on-microsoft-exchange-proxyshell'
const BLACKHAT_2021 = 'https://i.blackhat.com/USA21/Wednesday-Handouts/us-21-ProxyLogon-Is-Just-The-Tip-Of-The-Iceberg-A-New-Attack-Surface-On-Microsoft-Exchange-Server.pdf'
const SIGNATURE_BASE = 'https://github.com/Neo23x0/signature-base/blob/master/yara/expl_proxyshell.yar'
const CROWDSTRIKE_OWASSRF = 'https://www.crowdstrike.com/blog/owassrf-exploit-analysis-and-recommendations/'

// Legitimate OWA cookies (names as Exchange sets them; values shortened).
const OWA_COOKIES = 'ClientId=5A3F0C2E8B7D4E1F9A6C3B2D1E0F4A5B; X-BackEndCookie=S-1-5-21-1004336348-1177238915-682003330-1106=u56Lnp2ejJqBy8vLycjNzsbSx8bOy9LLy8/M0p7NxsnSz8/Nx8/Jz87JzsbPq8/Gz8vFzsfFy8s=; X-OWA-CANARY=kM2sL0x3p0aQ1nYtZx7WcJ5dE8rT2fH9uV4iB6oA3yG1; PrivateComputer=true; PBack=0'
const REMOTE_POWERSHELL = '/powershell/?serializationLevel=Full;ExchClientVer=15.2.1258.12;clientApplication=ManagementShell;TargetServer=;PSVersion=5.1.17763.592'
const BACKEND_PATH = '[/\\\\](?:powershell|mapi|ews|ecp|owa|oab|rpc|autodiscover|microsoft-server-activesync|api|pushnotifications)'

/** EXCHANGE_RULE_PACK is the built-in exploit rule pack; its version names the month of its last change. */
export const EXCHANGE_RULE_PACK: RulePackData = {
  version: 'exchange-2026.11',
  rules: [
    {
      id: 'proxylogon-anonresource-backend',
      cve: ['CVE-2021-26855'],
      title: 'ProxyLogon: X-AnonResource-Backend cookie',
      source: `${EOMT} (rule "X-AnonResource-Backend Abort - inbound"); ${MSRC_2021}`,
      matches: 'a cookie named X-AnonResource-Backend (any case, any value): the server-side request forgery of CVE-2021-26855 names its target there.',
      leavesAlone: 'every cookie Exchange sets (X-BackEndCookie, X-OWA-CANARY, ClientId, cadata…); a value that merely mentions the name.',
      when: [{ on: 'cookie', name: 'X-AnonResource-Backend' }],
      corpus: {
        attacks: [
          { target: '/ecp/y.js', cookie: 'X-AnonResource=true; X-AnonResource-Backend=localhost/ecp/default.flt?~3; X-BEResource=localhost/owa/auth/logon.aspx?~3' },
          { target: '/owa/auth/x.js', cookie: 'x-anonresource-backend=a]@ex01.contoso.local:444/ecp/proxyLogon.ecp#~1942062522' },
          { target: '/ecp/temp.js', cookie: `${OWA_COOKIES};  X-ANONRESOURCE-BACKEND =localhost%2Fecp%2Fdefault.flt%3F~3` },
          // ASP.NET trims U+00A0 / U+0085 off a name; a byte 0xA0 arrives as U+00A0, UTF-8 NBSP as 'Â\u00a0'.
          { target: '/owa/auth/x.js', cookie: '\u00a0X-AnonResource-Backend=localhost/ecp/default.flt?~3' },
          { target: '/owa/auth/x.js', cookie: 'a=1;\u0085X-AnonResource-Backend\u00c2\u00a0=localhost/ecp/default.flt?~3' }
        ],
        legitimate: [
          { target: '/owa/', cookie: OWA_COOKIES },
          { target: '/owa/', cookie: 'note=X-AnonResource-Backend' }
        ]
      }
    },
    {
      id: 'proxylogon-beresource',
      cve: ['CVE-2021-26855'],
      title: 'ProxyLogon: malformed X-BEResource cookie',
      source: `${EOMT} (rule "X-BEResource Abort - inbound", pattern X-BEResource=(.+)/(.+)~(.+)); ${MSRC_2021}`,
      matches: "an X-BEResource cookie whose decoded value is not the plain `server-fqdn~version` that Exchange writes (BackEndServer's form): Microsoft's pattern `…/…~…` and every other shape (#, @, ?, ports) that turns the cookie into a request to an arbitrary back-end URL.",
      leavesAlone: 'X-BEResource=ex01.contoso.local~1942062522 and other cookies of the same header, also when a later cookie holds "/" and "~" (which Microsoft\'s header-wide pattern would block).',
      when: [{ on: 'cookie', name: 'X-BEResource', pattern: '^(?!$)(?![a-z0-9][a-z0-9._-]*~-?[0-9]+$)' }],
      corpus: {
        attacks: [
          { target: '/ecp/y.js', cookie: 'X-BEResource=localhost/owa/auth/logon.aspx?~1942062522' },
          { target: '/ecp/default.flt', cookie: 'X-BEResource=a]@ex01.contoso.local:444/autodiscover/autodiscover.xml?#~1942062522' },
          { target: '/ecp/x.js', cookie: 'X-BEResource=[name]@ex01.contoso.local/ecp/proxyLogon.ecp#~1941962753' },
          { target: '/ecp/x.js', cookie: 'x-beresource=localhost%252Fecp%252Fdefault.flt%253F~3' },
          { target: '/owa/auth/x.js', cookie: 'X-BEResource=attacker.example#~1942062522' }
        ],
        legitimate: [
          { target: '/ecp/scripts/main.js', cookie: 'X-BEResource=EX01.contoso.local~1942062522' },
          { target: '/ecp/', cookie: 'X-BEResource=ex02.contoso.local~1937997017; other=a/b~c' },
          { target: '/owa/', cookie: OWA_COOKIES }
        ]
      }
    },
    {
      id: 'proxyshell-explicit-logon-ssrf',
      cve: ['CVE-2021-34473', 'CVE-2021-34523', 'CVE-2021-31207'],
      title: 'ProxyShell: autodiscover.json explicit logon reaching another back-end path',
      source: `${ZDI_PROXYSHELL}; ${BLACKHAT_2021}; ${SIGNATURE_BASE}`,
      matches: 'a URI with autodiscover.json, then an @, then a back-end vdir path (/powershell, /mapi, /ews, /ecp, /owa, /oab, /rpc, /autodiscover, /microsoft-server-activesync, /api): the explicit-logon path confusion that sends the rest of the URL to the back end as SYSTEM.',
      leavesAlone: 'Autodiscover v2 as Outlook and phones use it: /autodiscover/autodiscover.json/v1.0/<address>?Protocol=… and ?Email=<address>&Protocol=…, where nothing follows the address but the query.',
      when: [
        { on: 'uri', pattern: 'autodiscover\\.json' },
        { on: 'uri', pattern: `^(?:(?!autodiscover\\.json).)*autodiscover\\.json[^@]*@.*?${BACKEND_PATH}` }
      ],
      corpus: {
        attacks: [
          '/autodiscover/autodiscover.json?@evil.example/ews/exchange.asmx?&Email=autodiscover/autodiscover.json%3F@evil.example',
          '/autodiscover/autodiscover.json?@evil.example/autodiscover/autodiscover.xml?&Email=autodiscover/autodiscover.json%3F@evil.example',
          '/autodiscover/autodiscover.json?@evil.example/mapi/nspi/?&Email=autodiscover/autodiscover.json%3F@evil.example',
          '/autodiscover/autodiscover.json?@evil.example/powershell/?X-Rps-CAT=VgEAVAdXaW5kb3dzQwBBCEtlcmJlcm9z&Email=autodiscover/autodiscover.json%3F@evil.example',
          '/Autodiscover/Autodiscover.JSON%253F%2540evil.example%252FPowerShell%252F',
          '/autodiscover/autodiscover.json?a=b%40evil.example%5Cmapi%5Cemsmdb',
          '/autodiscover/autodiscover.json?@evil.example%0A/powershell/'
        ],
        legitimate: [
          '/autodiscover/autodiscover.json/v1.0/jdoe@contoso.com?Protocol=AutodiscoverV1&RedirectCount=1',
          '/autodiscover/autodiscover.json/v1.0/jdoe%40contoso.com?Protocol=Ews&RedirectCount=1',
          '/autodiscover/autodiscover.json?Email=jdoe%40contoso.com&Protocol=ActiveSync&RedirectCount=1',
          '/Autodiscover/Autodiscover.xml'
        ]
      }
    },
    {
      id: 'proxyshell-email-autodiscover',
      cve: ['CVE-2021-34473'],
      title: 'ProxyShell: Email=autodiscover/… explicit logon address',
      source: `${ZDI_PROXYSHELL}; ${BLACKHAT_2021}; ${SIGNATURE_BASE}`,
      matches: 'a query parameter Email whose value starts with autodiscover/ (or \\ ? #): Exchange removes that "address" from the URL, which leaves an attacker-chosen back-end path.',
      leavesAlone: 'Email=<a real address>, also one whose local part starts with "autodiscover." (autodiscover.admin@contoso.com).',
      when: [{ on: 'uri', pattern: '[?&]email=autodiscover[/\\\\?#]' }],
      corpus: {
        attacks: [
          '/autodiscover/autodiscover.json?Email=autodiscover/autodiscover.json%3f@evil.example',
          '/autodiscover/autodiscover.json?@evil.example&Email=autodiscover%2fautodiscover.json%3F@evil.example&Protocol=XYZ',
          '/autodiscover/autodiscover.json?x=1%26%45mail%3D%2561utodiscover%252Fautodiscover.json'
        ],
        legitimate: [
          '/autodiscover/autodiscover.json?Email=jdoe%40contoso.com&Protocol=ActiveSync&RedirectCount=1',
          '/autodiscover/autodiscover.json?Email=autodiscover.admin%40contoso.com&Protocol=Ews',
          '/owa/?ae=Item&t=IPM.Note&id=RgAAAAAvQ%2FqZk2NhR6v0kb5sY7ceBwB%2BcQ&email=jdoe%40contoso.com'
        ]
      }
    },
    {
      id: 'proxyshell-email-autodiscover-cookie',
      cve: ['CVE-2021-34473'],
      title: 'ProxyShell: Email=autodiscover/… in a cookie',
      source: `${ZDI_PROXYSHELL}; ${BLACKHAT_2021}`,
      matches: 'a request to autodiscover.json with a cookie named Email whose value starts with autodiscover/ (or \\ ? #): Exchange reads the explicit logon address from Params["Email"], which takes cookies (and form fields) as well as the query. A form body is not read at the edge.',
      leavesAlone: 'an Email cookie holding a real address; Email cookies on other paths.',
      when: [
        { on: 'path', pattern: 'autodiscover\\.json' },
        { on: 'cookie', name: 'Email', pattern: '^autodiscover[/\\\\?#]' }
      ],
      corpus: {
        attacks: [
          { target: '/autodiscover/autodiscover.json?@evil.example/PushNotifications/x', cookie: 'Email=autodiscover/autodiscover.json%3F@evil.example' },
          { target: '/autodiscover/autodiscover.json?@evil.example/x', cookie: 'a=1; email=Autodiscover%252Fautodiscover.json' }
        ],
        legitimate: [
          { target: '/autodiscover/autodiscover.json/v1.0/jdoe@contoso.com?Protocol=ActiveSync', cookie: 'Email=jdoe%40contoso.com' },
          { target: '/owa/', cookie: 'Email=autodiscover/x' }
        ]
      }
    },
    {
      id: 'proxyshell-rps-cat',
      cve: ['CVE-2021-34523'],
      title: 'ProxyShell: X-Rps-CAT access token in the URL',
      source: `${ZDI_PROXYSHELL}; ${BLACKHAT_2021}; ${SIGNATURE_BASE}`,
      matches: 'X-Rps-CAT anywhere in the decoded URI: the remote PowerShell back end takes a CommonAccessToken (an identity) from this query parameter when no front end set one.',
      leavesAlone: 'remote PowerShell sessions (/powershell?serializationLevel=…;clientApplication=ManagementShell;…) and everything else: no client sends this parameter.',
      when: [{ on: 'uri', pattern: 'x-rps-cat' }],
      corpus: {
        attacks: [
          '/autodiscover/autodiscover.json?@evil.example/powershell/?X-Rps-CAT=VgEAVAdXaW5kb3dzQwBBCEtlcmJlcm9z&Email=autodiscover/autodiscover.json%3F@evil.example',
          '/powershell/?X-Rps-CAT=VgEAVAdXaW5kb3dzQwBBCEtlcmJlcm9z',
          '/autodiscover/autodiscover.json?@evil.example/powershell/%3FX%252DRps%252DCAT%3DVgEA'
        ],
        legitimate: [REMOTE_POWERSHELL, '/EWS/Exchange.asmx']
      }
    },
    {
      id: 'proxynotshell-autodiscover-powershell',
      cve: ['CVE-2022-41040', 'CVE-2022-41082'],
      title: 'ProxyNotShell: autodiscover and powershell in one URI',
      source: `${EOMT_V2} (rule "PowerShell - inbound", pattern (?=.*autodiscover)(?=.*powershell) on {UrlDecode:{REQUEST_URI}}); ${MSRC_2022}`,
      matches: "both autodiscover and powershell anywhere in the decoded URI, in any order: Microsoft's final mitigation, after `%50owershell` bypassed the first one.",
      leavesAlone: 'Autodiscover and remote PowerShell on their own. Known false positive, as with Microsoft\'s rule: an Autodiscover request for a mailbox whose address contains "powershell".',
      // Microsoft's (?=.*autodiscover)(?=.*powershell) as two conditions: the same test, cheaper.
      when: [{ on: 'uri', pattern: 'autodiscover' }, { on: 'uri', pattern: 'powershell' }],
      corpus: {
        attacks: [
          '/autodiscover/autodiscover.json?@evil.example/owa/&Email=autodiscover/autodiscover.json%3f@evil.example&Protocol=XYZ&FooProtocol=Powershell',
          '/autodiscover/autodiscover.json?a..foo.var/owa/&Email=autodiscover/autodiscover.json?a..foo.var&Protocol=XYZ&FooProtocol=%50owershell',
          '/autodiscover/autodiscover.json?x=%2550owershell',
          '/%2561utodiscover/autodiscover.json?p=%252550owershell',
          '/autodiscover/autodiscover.json?a%0a/powershell',
          '/powershell/?x=%41utodiscover'
        ],
        legitimate: [
          '/autodiscover/autodiscover.json/v1.0/jdoe@contoso.com?Protocol=ActiveSync',
          REMOTE_POWERSHELL,
          '/Autodiscover/Autodiscover.xml'
        ]
      }
    },
    {
      id: 'owassrf-owa-explicit-logon-powershell',
      cve: ['CVE-2022-41080', 'CVE-2022-41082'],
      title: 'OWASSRF: /owa/<address>/powershell',
      source: CROWDSTRIKE_OWASSRF,
      matches: 'a decoded path /owa/…@…/…/powershell: OWA\'s explicit logon (/owa/<address>/) used to reach the remote PowerShell back end, which bypassed the ProxyNotShell URL rewrite.',
      leavesAlone: 'OWA\'s own explicit logon for delegated and shared mailboxes (/owa/shared@contoso.com/, …/service.svc?action=…), and addresses in OWA query strings.',
      when: [
        { on: 'uri', pattern: '[/\\\\]powershell' },
        { on: 'path', pattern: '^[/\\\\]*owa[/\\\\][^@]*@.*?[/\\\\]powershell' }
      ],
      corpus: {
        attacks: [
          '/owa/mastodon@evil.example/powershell',
          '/owa/jdoe@contoso.com/PowerShell?serializationLevel=Full;ExchClientVer=15.2.922.7;clientApplication=ManagementShell;TargetServer=;PSVersion=5.1.17763.592',
          '/owa/jdoe%40contoso.com/powershell',
          '/OWA/jdoe%2540contoso.com%252Fpowershell',
          '/owa/x@y.example\\powershell',
          '/owa/x@y.example%0d%0a/powershell'
        ],
        legitimate: [
          '/owa/jdoe@contoso.com/',
          '/owa/shared%40contoso.com/service.svc?action=FindItem&EP=1&ID=-34&AC=1',
          '/owa/?ae=Item&t=IPM.Note&id=RgAAAAAvQ%2FqZk2NhR6v0kb5sY7ceBwB%2BcQ&email=jdoe%40contoso.com',
          '/owa/auth/logon.aspx?url=https%3a%2f%2fmail.contoso.com%2fowa%2fjdoe%40contoso.com%2fpowershell&reason=0'
        ]
      }
    },
    {
      id: 'powershell-path-outside-powershell-vdir',
      cve: ['CVE-2022-41080', 'CVE-2022-41082'],
      title: 'OWASSRF and kin: /powershell inside another vdir\'s path',
      source: `${CROWDSTRIKE_OWASSRF}; ${MSRC_2022}`,
      matches: 'a decoded path containing /powershell under any published vdir other than /powershell (unpublished paths get casgate\'s 404 before any rule): every known way to remote PowerShell through another protocol\'s front end.',
      leavesAlone: 'the /powershell vdir itself when it is published; /powershell in a query string (a return URL).',
      when: [
        { on: 'vdir', notIn: ['/powershell'] },
        { on: 'uri', pattern: '[/\\\\]powershell' },
        { on: 'path', pattern: '[/\\\\]powershell' }
      ],
      corpus: {
        attacks: [
          '/mapi/nspi/%2fpowershell',
          '/EWS/..%2fpowershell',
          '/Microsoft-Server-ActiveSync/%252FPowerShell',
          '/ecp/x@y.example/powershell/',
          '/autodiscover/x%5Cpowershell'
        ],
        legitimate: [
          REMOTE_POWERSHELL,
          '/owa/auth/logon.aspx?url=https%3a%2f%2fmail.contoso.com%2fpowershell%2f&reason=0',
          '/EWS/Exchange.asmx'
        ]
      }
    }
  ]
}
