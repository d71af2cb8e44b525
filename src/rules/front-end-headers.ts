// Headers that Exchange's own front end (the Client Access "CAFE" HttpProxy) writes on the
// request it sends to a back end, or that Exchange servers send each other. The back end trusts
// them: X-CommonAccessToken *is* the caller's identity, X-IsFromCafe switches off checks meant
// for browsers, msExchLogonMailbox names whose mailbox to open (ProxyLogon sent
// `msExchLogonMailbox: S-1-5-20` through its SSRF to log on to /ecp as SYSTEM).
//
// The list is read from HttpProxy itself: ProxyRequestHandler.ShouldCopyHeaderToServerRequest
// (the names it refuses to copy from a client: X-CommonAccessToken, X-IsFromCafe,
// X-SourceCafeServer, msExchProxyUri, X-MSExchangeActivityCtx, X-Backend-Diag-*), the
// protocol handlers' overrides of it (OWA, ECP/EWS, ActiveSync, MAPI, RPC) and the headers
// AddProtocolSpecificHeadersToServerRequest and the native proxy module set. Orange Tsai quotes
// the base list in "A New Attack Surface on MS Exchange, Part 1" (blog.orange.tw, 2021-08).
// Because CAFE itself drops or overwrites every one of these on the way to the back end, no
// client can depend on sending them: stripping them at the edge cannot break a client, and it
// keeps them from any path that reaches a back end without CAFE's filter (an SSRF such as
// ProxyLogon's X-BEResource, or a mis-published back-end site on port 444).
// Deliberately NOT here: client-request-id and return-client-request-id (Outlook and EWS
// clients send them), X-AnchorMailbox, X-PublicFolderMailbox, X-PreferServerAffinity (EWS
// streaming affinity, documented by Microsoft), and the X-BackEndCookie cookie of OWA.

/** FrontEndHeader is one header only Exchange's front end may set, with where Exchange sets or reads it. */
export interface FrontEndHeader {
  /** Canonical spelling; a trailing '*' makes it a prefix. */
  name: string
  /** Where Exchange sets or trusts it (HttpProxy class, or the component that reads it). */
  setBy: string
}

/** FRONT_END_HEADER_REFERENCE lists every front-end-only header with its origin, for docs and `casgate check`. */
export const FRONT_END_HEADER_REFERENCE: readonly FrontEndHeader[] = [
  { name: 'X-CommonAccessToken', setBy: 'ProxyRequestHandler: the serialized identity of the caller; a client copy is refused (400) since 2021' },
  { name: 'X-IsFromCafe', setBy: 'ProxyRequestHandler: marks a proxied request (ECP canary, ActiveSync, RPC proxy trust it)' },
  { name: 'X-SourceCafeServer', setBy: 'ProxyRequestHandler: FQDN of the front end' },
  { name: 'msExchProxyUri', setBy: 'ProxyRequestHandler: the URL the client asked the front end for' },
  { name: 'X-MSExchangeActivityCtx', setBy: 'ProxyRequestHandler: activity context between Exchange servers' },
  { name: 'X-Backend-Diag-*', setBy: 'ProxyRequestHandler: back-end diagnostics, honoured for Managed Availability probes only' },
  { name: 'X-IsFromBackend', setBy: 'WellKnownHeader: marks a request from a back end' },
  { name: 'X-CafeProxyHandler', setBy: 'NativeProxyHelper: "NativeHttpProxy" marks the native proxy module' },
  { name: 'X-ProxyTargetServer', setBy: 'NativeProxyHelper: the back end the native proxy sends the request to' },
  { name: 'X-ProxyTargetServerVersion', setBy: 'NativeProxyHelper: version of that back end' },
  { name: 'X-ProxyTargetUrlAbsPath', setBy: 'NativeProxyHelper: path on that back end' },
  { name: 'TestBackEndUrl', setBy: 'ProxyRequestHandler: test hook that replaces the back-end URL (TestBackEndSupportEnabled)' },
  { name: 'X-vDirObjectId', setBy: 'ProxyRequestHandler: the front-end vdir whose settings apply (ActiveSync reads it)' },
  { name: 'X-WLID-MemberName', setBy: 'ProxyRequestHandler: Live ID member name' },
  { name: 'RPSMemberName', setBy: 'ProxyRequestHandler: Live ID member name' },
  { name: 'RPSPUID', setBy: 'OWA/ECP handlers: Live ID PUID' },
  { name: 'RPSOrgIdPUID', setBy: 'OWA handler: Live ID organisation PUID' },
  { name: 'RPSEnv', setBy: 'ECP handler: Live ID environment' },
  { name: 'X-MissingDirectoryUserObjectHint', setBy: 'ProxyRequestHandler: directory lookup hint' },
  { name: 'X-OrganizationContext', setBy: 'ProxyRequestHandler: tenant context' },
  { name: 'X-GCC-ProxyInfo', setBy: 'ProxyRequestHandler: signed proxy information between front ends' },
  { name: 'X-OWA-ProxyUri', setBy: 'OwaProxyRequestHandler: the front end URL OWA builds links from' },
  { name: 'X-OWA-ProxyVersion', setBy: 'OwaProxyRequestHandler: front-end version' },
  { name: 'X-OWA-ProxySid', setBy: 'OwaProxyRequestHandler: SID of the signed-in user' },
  { name: 'X-OWA-ProxyCanary', setBy: 'OWA proxy: the canary of the proxied session' },
  { name: 'X-OWA-ProxyWebPart', setBy: 'OwaProxyRequestHandler: web part request flag' },
  { name: 'X-OWA-ExplicitLogonUser', setBy: 'OwaProxyRequestHandler: the mailbox of an explicit logon (/owa/<address>/)' },
  { name: 'X-LogonType', setBy: 'OwaProxyRequestHandler: public or private logon' },
  { name: 'X-OwaLanguageProxySerializedSecurityContext', setBy: 'OwaLanguagePostProxyRequestHandler: serialized security context' },
  { name: 'msExchLogonAccount', setBy: 'EcpProxyRequestHandler: SID of the signed-in account' },
  { name: 'msExchLogonMailbox', setBy: 'EcpProxyRequestHandler: SID whose mailbox ECP opens (ProxyLogon sent S-1-5-20)' },
  { name: 'msExchTargetMailbox', setBy: 'EcpProxyRequestHandler: SID of the target mailbox' },
  { name: 'msExchCafeForceRouteToLogonAccount', setBy: 'EcpProxyRequestHandler: routing override' },
  { name: 'X-EAS-Proxy', setBy: 'EasProxyRequestHandler: SID and name of the proxied ActiveSync user' },
  { name: 'X-EAS-DC-Proxy', setBy: 'ActiveSync: cross-datacenter proxy marker' },
  { name: 'X-EAS-BasicAuth-Proxy', setBy: 'ActiveSync: Basic credentials were checked by the proxying server' },
  { name: 'X-DatabaseGuid', setBy: 'MapiProxyRequestHandler / RpcHttpProxyRequestHandler: the mailbox database' },
  { name: 'X-RpcHttpProxyServerTarget', setBy: 'RpcHttpProxyRequestHandler: the RPC server to reach' },
  { name: 'X-AssociationGuid', setBy: 'RpcHttpProxyRequestHandler: pairs RPC_IN_DATA with RPC_OUT_DATA' },
  { name: 'X-RpcHttpProxyLogonUserName', setBy: 'RpcHttpProxyRequestHandler: the authenticated user (base64)' },
  { name: 'X-AuthenticateOnly', setBy: 'RPC preauthentication between front end and back end' }
]

const exact = new Set<string>()
const prefixes: string[] = []
for (const { name } of FRONT_END_HEADER_REFERENCE) {
  if (name.endsWith('*')) prefixes.push(name.slice(0, -1).toLowerCase())
  else exact.add(name.toLowerCase())
}

/** FRONT_END_ONLY_HEADERS names every front-end-only header (prefix entries end with '*'), for docs and check output. */
export const FRONT_END_ONLY_HEADERS: readonly string[] = FRONT_END_HEADER_REFERENCE.map((header) => header.name)

/**
 * isFrontEndOnlyHeader says whether a client's header (name in lower case, as Node gives it)
 * is one only Exchange's front end may set, and must therefore not be forwarded.
 */
export function isFrontEndOnlyHeader (lowerCaseName: string): boolean {
  if (exact.has(lowerCaseName)) return true
  for (let i = 0; i < prefixes.length; i++) {
    if (lowerCaseName.startsWith(prefixes[i]!)) return true
  }
  return false
}
