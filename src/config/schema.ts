import { z } from 'zod'

// Defaults live next to their field, with the unit in the name. `.describe()` is the reference text.

/** FAMILIAR_FOR_MS is how long a source stays familiar after a success (30 days), FAMILIAR_MAX_ENTRIES how many pairs are kept. */
export const FAMILIAR_FOR_MS = 30 * 24 * 60 * 60_000
export const FAMILIAR_MAX_ENTRIES = 100_000

const filePath = z.string().min(1)

/**
 * secretSource names where a passphrase comes from. A passphrase is never written in the YAML
 * itself: configuration files end up in backups, tickets and chat.
 */
/** Fields every certificate block has besides its files. */
const certificateCommon = {
  ca: z.union([filePath, z.array(filePath)]).optional()
    .describe('PEM root certificate(s) clients trust for this certificate when it comes from an internal CA; used to check the chain (public roots are known).')
}

const secretSource = {
  passphraseFile: filePath.optional().describe('File holding the passphrase (first line, trailing newline ignored).'),
  passphraseEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional()
    .describe('Environment variable holding the passphrase.')
}

export const pfxCertificateSchema = z.strictObject({
  pfx: filePath.describe('PKCS#12 / PFX bundle with the private key, the certificate and its chain.'),
  ...secretSource,
  ...certificateCommon
})

export const pemCertificateSchema = z.strictObject({
  cert: filePath.describe('PEM certificate; may also contain the intermediates after the leaf.'),
  key: filePath.describe('PEM private key (PKCS#1, PKCS#8 or encrypted PKCS#8).'),
  chain: z.union([filePath, z.array(filePath)]).optional().describe('PEM intermediate certificate(s) to serve after the leaf.'),
  ...secretSource,
  ...certificateCommon
})

/** certificateSchema accepts either a PFX bundle or PEM files. */
export const certificateSchema = z.union([pfxCertificateSchema, pemCertificateSchema])

export const listenSchema = z.strictObject({
  host: z.string().default('0.0.0.0').describe('Address to listen on (default 0.0.0.0).'),
  port: z.number().int().min(0).max(65535).default(443).describe('TCP port for client traffic (default 443).'),
  idleTimeoutMs: z.number().int().positive().default(120_000)
    .describe('How long a client connection may sit idle outside a request (default 120 s).'),
  headersTimeoutMs: z.number().int().positive().default(30_000)
    .describe('How long a client may take to send request headers (default 30 s).'),
  handshakeTimeoutMs: z.number().int().positive().default(10_000)
    .describe('How long a client may take to send its ClientHello and complete the TLS handshake (default 10 s).'),
  // Kerberos tickets grow with the user's group memberships; a user in a few hundred groups sends
  // a Negotiate header past Node's 16 KiB, and Microsoft raises HTTP.sys to 64 KiB for them (KB2020943).
  maxHeaderBytes: z.number().int().min(8 * 1024).max(1024 * 1024).default(64 * 1024)
    .describe('Largest request line plus headers a client may send, in bytes (default 65536, 64 KiB, as KB2020943 sets HTTP.sys\'s MaxRequestBytes for Kerberos tokens of users in many groups). Larger requests are answered 431 CASGATE_ERR_HEADERS_TOO_LARGE and the connection is closed. The backends must accept as much (MaxFieldLength/MaxRequestBytes on Exchange).'),
  maxConnections: z.number().int().positive().default(50_000)
    .describe('Most client connections open at once, all addresses together; beyond it new connections are closed at accept, before TLS, and a warning is logged at most once a minute (default 50000; each connection costs a file descriptor, two for passthrough: raise the process\'s descriptor limit to match).'),
  maxConnectionsPerAddress: z.number().int().positive().default(5_000)
    .describe('Most client connections open at once from one address (IPv6: one /64, the prefix one phone or one LAN gets, RFC 7421: its hosts pick new addresses in it at will); beyond it new connections from that address are closed at accept and a warning is logged at most once a minute per address (default 5000: carrier-grade NAT puts thousands of phones, each holding an ActiveSync Ping, and office NAT puts hundreds of Outlooks with several connections each behind one address). Addresses in trustProxy are not limited per address.'),
  workers: z.union([z.number().int().min(1).max(256), z.literal('auto')]).default(1)
    .describe('Processes serving clients (default 1). auto: one per core (os.availableParallelism()). With more than one, a primary process probes health once for all, serves the admin listener with every worker\'s figures merged, and shares among the workers what must count site-wide: lockout, the Basic cache, sign-outs and affinity placements. maxConnections, maxConnectionsPerAddress and the pools\' connection budgets are divided among the workers, so that together they keep the configured totals.'),
  shutdownGraceMs: z.number().int().min(0).default(30_000)
    .describe('On SIGTERM/SIGINT: stop accepting, let requests in flight finish for up to this long, then close the rest (default 30 s).'),
  defaultHost: z.string().optional()
    .describe('Host name whose host block takes connections without SNI (default: the first offload/reencrypt host).')
})

export const vdirSchema = z.strictObject({
  pool: z.string().optional().describe('Pool serving this virtual directory (default: the only pool, when there is one).'),
  enabled: z.boolean().optional().describe('Whether the path is published (Exchange profile default).'),
  timeoutMs: z.number().int().positive().optional()
    .describe('Longest silence tolerated from the backend: waiting for headers, or between body chunks (Exchange profile default).'),
  healthPath: z.string().startsWith('/').optional().describe('Managed Availability health page (default /<vdir>/healthcheck.htm).'),
  affinity: z.enum(['none', 'authorization', 'cookie', 'source-ip']).optional()
    .describe('Which requests stay on one server: none (balance every request), authorization (the user behind the Authorization header; ActiveSync also User=/DeviceId=), cookie (a cookie names the server), source-ip (the client address; all users behind one NAT land on one server). Exchange profile default: ActiveSync authorization, OWA/ECP cookie, the rest none.'),
  affinityCookie: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a cookie name (letters, digits and !#$%&\'*+-.^_`|~)').optional()
    .describe('affinity cookie: follow this cookie set by the backends (each value stays with the server that set it) instead of inserting casgate\'s own signed cookie.'),
  cspScriptSrcAttrNone: z.boolean().optional()
    .describe('Response hardening: append script-src-attr \'none\' to the Content-Security-Policy of the vdir\'s HTML responses (adding one when there is none), Microsoft\'s mitigation for CVE-2026-42897 in OWA: inline event-handler attributes stop running, script files and blocks still do (default false; set it on /owa until the security update is installed).'),
  longPoll: z.boolean().optional()
    .describe('Whether the vdir holds requests open (long polls): they then use the pool\'s longPollConnectionsPerServer budget, not the interactive one (Exchange profile default: ActiveSync, EWS, MAPI and RPC true, the rest false).'),
  preauth: z.enum(['forms', 'basic', 'none']).optional()
    .describe('Preauthentication at casgate when a preauth block exists: forms (casgate\'s login page, then Basic to Exchange), basic (401 + Basic, checked before forwarding), none. Exchange profile default: OWA/ECP forms, ActiveSync and EWS basic, the rest none.')
})

export const hostSchema = z.strictObject({
  names: z.array(z.string().min(1)).min(1).describe('Host names (SNI) of this block; `*.domain` wildcards allowed.'),
  mode: z.enum(['offload', 'reencrypt', 'passthrough'])
    .describe('offload: TLS ends here, plain HTTP to the backends; reencrypt: TLS ends here, HTTPS to the backends; passthrough: TLS is not terminated, bytes go to a backend chosen by SNI (client certificates reach Exchange).'),
  certificate: certificateSchema.optional().describe('offload/reencrypt: the certificate served for these names, with its full chain.'),
  extendedProtection: z.boolean().default(true)
    .describe('Whether Exchange Extended Protection (channel binding) is on for these names (default true, Exchange\'s default since 2019 CU14). Offload is refused with it; reencrypt needs the very certificate the backends serve.'),
  pool: z.string().optional().describe('passthrough: the pool whose servers receive the connections; offload/reencrypt: the pool of this host\'s vdirs that name none.'),
  vdirs: z.record(z.string(), vdirSchema).optional()
    .describe('offload/reencrypt: this host\'s own virtual directories, as the site-wide vdirs block (which, over the Exchange profile, is their default) with these changes. Without vdirs, publish and pool the host publishes the site-wide table.'),
  publish: z.array(z.string().min(1)).min(1).optional()
    .describe('offload/reencrypt: publish only these vdirs of the host\'s table, e.g. [/autodiscover] (listed ones are published even where the profile has them off, like /ecp); every other path on this host gets casgate\'s 404.'),
  balance: z.enum(['source-ip', 'least-connections']).optional()
    .describe('passthrough: source-ip (rendezvous hashing of the client address, the only key at layer 4) or least-connections (default source-ip).'),
  idleTimeoutMs: z.number().int().positive().optional()
    .describe('passthrough: how long a connection may be silent both ways (default 70 min, longer than an ActiveSync Ping).'),
  clientCertificate: z.strictObject({
    ca: z.union([filePath, z.array(filePath)]).describe('PEM CA certificate(s) that issue the users\' certificates.'),
    crl: z.union([filePath, z.array(filePath)]).optional().describe('PEM certificate revocation list(s) of that CA; revoked certificates are refused (reloaded with SIGHUP).')
  }).optional()
    .describe('offload/reencrypt: require a client certificate from this CA at the TLS handshake, a second factor besides the password. Per host name: TLS 1.3 cannot ask for one later, so give the hosts that need it names of their own.'),
  monitorVdir: z.string().startsWith('/').optional()
    .describe('passthrough: the vdir whose health page says whether a server may take connections (default /Microsoft-Server-ActiveSync).')
})

export const poolSchema = z.strictObject({
  servers: z.array(z.string().min(1)).min(1).describe('Backend base URLs, e.g. https://ex1.contoso.local.'),
  balance: z.enum(['round-robin', 'least-outstanding']).default('least-outstanding')
    .describe('How a request picks a server (default least-outstanding).'),
  ca: z.union([filePath, z.array(filePath)]).optional()
    .describe('reencrypt: PEM CA certificate(s) that signed the backends\' certificates (default: the system roots).'),
  serverName: z.string().optional()
    .describe('reencrypt: TLS server name (SNI) sent to the backends and checked against their certificates (default: the host of each server URL).'),
  clientCertificate: certificateSchema.optional()
    .describe('reencrypt: certificate casgate presents to the backends.'),
  insecureSkipVerify: z.boolean().default(false)
    .describe('INSECURE, labs only: do not verify the backends\' certificates (default false).'),
  connectionsPerServer: z.number().int().positive().default(256)
    .describe('Most upstream connections to each server for interactive requests (OWA, ECP, Autodiscover, OAB, EWS and ActiveSync commands): one per request in flight (default 256).'),
  longPollConnectionsPerServer: z.number().int().positive().default(20_000)
    .describe('Most upstream connections to each server for long polls (ActiveSync Ping, EWS streaming, MAPI NotificationWait: the vdirs marked longPoll), a budget apart so that held requests never take interactive ones\' connections (default 20000, an Exchange site\'s phones on one instance; each held request also holds a client connection: see listen.maxConnections and the process\'s descriptor limit).'),
  queueTimeoutMs: z.number().int().min(0).default(5_000)
    .describe('How long a request waits for a free upstream connection of its budget before casgate answers 503 with Retry-After (default 5 s; HAProxy\'s "timeout queue").'),
  connectTimeoutMs: z.number().int().positive().default(5_000)
    .describe('How long to wait for a backend connection, TLS included (default 5 s).')
})

export const healthSchema = z.strictObject({
  enabled: z.boolean().default(true).describe('Probe every (server, vdir) pair in use (default true).'),
  intervalMs: z.number().int().positive().default(10_000).describe('Time between probes of one (server, vdir), jittered ±10% (default 10 s).'),
  timeoutMs: z.number().int().positive().default(5_000).describe('How long a probe may take (default 5 s).'),
  rise: z.number().int().positive().default(2).describe('Consecutive good probes that bring a server back (default 2).'),
  fall: z.number().int().positive().default(3).describe('Consecutive failed probes that take a server out (default 3).'),
  expectBody: z.string().default('200 OK').describe('Text the health page must contain (Managed Availability writes "200 OK"; default "200 OK").')
})

export const adminSchema = z.strictObject({
  host: z.string().default('127.0.0.1').describe('Address of the admin listener (default 127.0.0.1; keep it on loopback or a management network).'),
  port: z.number().int().min(0).max(65535).default(9090).describe('Port of the admin listener (default 9090).'),
  tokenFile: filePath.optional().describe('File holding the admin token (at least 32 characters) every request must carry as Authorization: Bearer. Default: <stateDir>/admin-token, generated (mode 0600) at first start.'),
  tokenEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional()
    .describe('Environment variable holding the admin token.'),
  names: z.array(z.string().min(1)).default([])
    .describe('Host names the admin listener may be reached by, besides its own address (and localhost on loopback): any other Host header is refused, so that a web page cannot reach it by DNS rebinding.')
})

export const affinitySchema = z.strictObject({
  secretFile: filePath.optional()
    .describe('File holding the affinity secret (HMAC key for identity hashes and cookie signatures; at least 32 characters). Instances sharing it place users alike. Default: derived from the first terminated host\'s private key, so instances with the same certificate agree.'),
  secretEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional()
    .describe('Environment variable holding the affinity secret.'),
  maxEntries: z.number().int().positive().default(500_000)
    .describe('Most remembered assignments (user/device/address/cookie → server) over all vdirs; the least recently used go first (default 500,000; about 130 bytes each, allocated as the store fills).'),
  idleTtlMs: z.number().int().positive().default(2 * 60 * 60_000)
    .describe('How long an assignment is kept without requests (default 2 h, longer than an ActiveSync Ping interval).'),
  balanceFactor: z.number().min(1).max(10).default(1.1)
    .describe('Bounded loads: a new key goes to its rendezvous-hash server unless that server already holds more than this factor times the average keys per server, then to its next choice (default 1.1; higher keeps more keys on their first choice, so instances agree more; lower balances tighter).'),
  cookieName: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a cookie name').default('CasgateAffinity')
    .describe('Name prefix of casgate\'s own affinity cookie; the pool name is appended (default CasgateAffinity).')
})

export const ldapSchema = z.strictObject({
  urls: z.array(z.string().regex(/^ldaps?:\/\/[^/\s]+\/?$/i, 'must be ldap://host[:port] or ldaps://host[:port]')).min(1)
    .describe('LDAP servers, tried in order (e.g. ldaps://dc1.contoso.local:636).'),
  bindName: z.string().includes('{user}', { message: 'must contain {user}' })
    .describe('Name the user binds as, {user} replaced by the name typed: {user}@contoso.com (Active Directory UPN) or uid={user},ou=people,dc=contoso,dc=com.'),
  ca: z.union([filePath, z.array(filePath)]).optional().describe('PEM CA certificate(s) of the LDAP servers (ldaps:// or startTls).'),
  startTls: z.boolean().default(false).describe('Upgrade ldap:// connections with StartTLS (default false).'),
  timeoutMs: z.number().int().positive().default(5_000).describe('Connect and bind timeout per server (default 5 s).')
})

export const lockoutSchema = z.strictObject({
  userThreshold: z.number().int().positive().default(5).describe('Failed logons of one user within windowMs that lock it for unfamiliar sources, and of one familiar source (device or address) that lock that source only (default 5; keep it below Active Directory\'s own lockout threshold).'),
  addressThreshold: z.number().int().positive().default(20).describe('Failed logons from one client address (IPv6: its /64) within windowMs that lock the address for users it is not familiar to (default 20).'),
  windowMs: z.number().int().positive().default(15 * 60_000).describe('Window in which failures count (default 15 min).'),
  lockoutMs: z.number().int().positive().default(15 * 60_000).describe('First lockout; each further one doubles it (default 15 min).'),
  maxLockoutMs: z.number().int().positive().default(4 * 60 * 60_000).describe('Longest lockout (default 4 h).'),
  familiarForMs: z.number().int().min(0).default(FAMILIAR_FOR_MS)
    .describe('Smart lockout: an address or ActiveSync device a user signed in from (checked by casgate) stays familiar this long after the last success, and keeps working while the user is locked for everyone else (default 30 days; 0 turns it off: every source counts as unfamiliar).'),
  familiarMaxEntries: z.number().int().positive().default(FAMILIAR_MAX_ENTRIES)
    .describe('Familiar (user, source) pairs remembered, as keyed hashes; the least recently used go first (default 100000, about 130 bytes each).')
})

/** bearerAlgorithms are the asymmetric JWS algorithms a Bearer token may be signed with; HS* and none are never accepted (RFC 8725 §3.1, §3.2). */
const bearerAlgorithms = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const

const bearerList = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)])

/**
 * bearerSchema checks Bearer tokens (hybrid modern authentication) at the edge: signature, issuer,
 * audience and lifetime. Exchange still checks them again; this keeps other tenants' and forged
 * tokens from reaching it at all.
 */
export const bearerSchema = z.strictObject({
  issuer: bearerList
    .describe('Accepted iss claim(s), exactly as Entra ID writes them: https://sts.windows.net/<tenant-id>/ for the v1.0 tokens Outlook gets for on-premises Exchange, https://login.microsoftonline.com/<tenant-id>/v2.0 for v2.0 tokens. No default; the tenant ID is what keeps other tenants\' tokens out.'),
  audience: bearerList
    .describe('Accepted aud claim(s): the on-premises URLs registered as service principal names of Office 365 Exchange Online (e.g. https://mail.contoso.com), or its app ID 00000002-0000-0ff1-ce00-000000000000. List every form your clients use. No default.'),
  jwks: z.union([
    z.strictObject({
      file: filePath.describe('JSON Web Key Set file, read at start (its keys do not rotate by themselves: prefer url).')
    }),
    z.strictObject({
      url: z.string().regex(/^https?:\/\/[^\s/]+/i, 'must be an https:// URL')
        .describe('JSON Web Key Set URL, e.g. https://login.microsoftonline.com/<tenant-id>/discovery/v2.0/keys. https only; plain http:// is accepted for loopback addresses (127.0.0.1, ::1, localhost) only.'),
      timeoutMs: z.number().int().positive().max(60_000).default(5_000)
        .describe('How long one fetch of the key set may take; a token that needs it then fails as jwks-unavailable (default 5 s).'),
      cacheMaxAgeMs: z.number().int().positive().default(24 * 60 * 60_000)
        .describe('How long fetched keys are used before they are fetched again (default 24 h, the refresh Microsoft recommends).'),
      cooldownMs: z.number().int().min(1_000).default(30_000)
        .describe('After a fetch, how long a token naming an unknown key (kid) waits before it may trigger another fetch, so forged kids cannot flood the key server (default 30 s).')
    })
  ]).describe('Where the signing keys come from: { file: path } or { url: https://… }.'),
  clockToleranceMs: z.number().int().min(0).max(60 * 60_000).default(5 * 60_000)
    .describe('Clock skew tolerated on exp and nbf (default 5 min, like Microsoft.IdentityModel\'s ClockSkew).'),
  algorithms: z.array(z.enum(bearerAlgorithms)).min(1).default(['RS256'])
    .describe('Accepted signature algorithms (default [RS256], what Entra ID signs with); HS* and none are refused.')
})

export const preauthSchema = z.strictObject({
  usersFile: filePath.optional().describe('Local users file: one "user:$scrypt$…" line each (casgate users add FILE USER writes them).'),
  ldap: ldapSchema.optional().describe('Check passwords by binding to LDAP (Active Directory) as the user.'),
  secretFile: filePath.optional().describe('File holding the session secrets, one per line (at least 32 characters each): the first encrypts new session cookies and keys the CSRF and lockout hashes, every line opens cookies (rotation: add the new secret as first line, drop the old one after the session lifetime). Instances sharing it accept each other\'s sessions. Default: a random secret generated at first start into <stateDir>/session-secret (mode 0600); never derived from the TLS key, which Exchange servers hold too.'),
  secretEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name').optional()
    .describe('Environment variable holding the session secrets (one per line, as secretFile).'),
  realm: z.string().regex(/^[^"\\]+$/, 'must not contain quotes or backslashes').default('Exchange').describe('Basic realm shown by clients (default Exchange).'),
  exclusionPreset: z.enum(['exchange-v1', 'none']).default('exchange-v1')
    .describe('Built-in paths never preauthenticated (federation, hybrid, mailbox moves, health pages, OPTIONS, Bearer); exchange-v1 is the only version yet (default).'),
  exclude: z.array(z.string().startsWith('/')).default([]).describe('More paths never preauthenticated (and everything under them), case-insensitive.'),
  idleTimeoutMs: z.number().int().positive().default(30 * 60_000).describe('A forms session ends after this long without requests (default 30 min).'),
  absoluteTimeoutMs: z.number().int().positive().default(8 * 60 * 60_000).describe('A forms session ends this long after logon, however active (default 8 h).'),
  cookieName: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'must be a cookie name').default('CasgateSession').describe('Name of the session cookie (default CasgateSession).'),
  basicCacheTtlMs: z.number().int().min(0).default(5 * 60_000)
    .describe('How long a successful Basic check is remembered (as a keyed hash), so ActiveSync does not reach LDAP on every request (default 5 min; 0 turns it off).'),
  lockout: lockoutSchema.default(lockoutSchema.parse({})),
  bearer: bearerSchema.optional()
    .describe('Check Bearer tokens (hybrid modern authentication) at the edge against the tenant\'s keys, issuer and audience. Without it, only the token\'s shape is checked here and Exchange validates it.')
})

export const rulesSchema = z.strictObject({
  disable: z.array(z.string().regex(/^[a-z0-9-]+$/, 'is a rule id such as proxylogon-beresource')).default([])
    .describe('Rule ids of the Exchange exploit rule pack to switch off (default none). Each one switched off is logged as a warning at every start and shown by casgate check: only for a legitimate client a rule blocks, until the pack is fixed.')
})

export const hstsSchema = z.strictObject({
  maxAgeSeconds: z.number().int().min(0).default(31_536_000).describe('max-age of Strict-Transport-Security (default 1 year).'),
  includeSubDomains: z.boolean().default(false).describe('Add includeSubDomains: every name under the published ones must then speak HTTPS (default false).')
})

export const logSchema = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')
    .describe('Log level (default info).'),
  pretty: z.boolean().default(false).describe('Human-readable coloured lines instead of JSON (default false).')
})

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')

export const redisSchema = z.strictObject({
  url: z.string().optional()
    .describe('One Valkey/Redis server: redis://host[:port][/db], or rediss://… for TLS. A user name (Redis 6 ACL) may be written in it (redis://casgate@host), never a password: passwordFile or passwordEnv. Either url or sentinels.'),
  sentinels: z.array(z.strictObject({
    host: z.string().min(1).describe('Sentinel host name or address.'),
    port: z.number().int().min(1).max(65535).default(26379).describe('Sentinel port (default 26379).')
  })).min(1).optional()
    .describe('Redis Sentinels that name the current master (with name); casgate follows a failover. Either url or sentinels.'),
  name: z.string().min(1).optional().describe('sentinels: the master\'s name as the Sentinels know it (sentinel monitor <name> …).'),
  username: z.string().min(1).optional().describe('ACL user (Redis 6+) casgate authenticates as (default: none, or the one in url).'),
  passwordFile: filePath.optional().describe('File holding the password (requirepass, or the ACL user\'s), first line. Never written in the YAML or the URL.'),
  passwordEnv: envName.optional().describe('Environment variable holding the password.'),
  tls: z.union([z.boolean(), z.strictObject({
    caFile: filePath.optional().describe('PEM CA certificate(s) that signed the server\'s certificate (default: the system roots).'),
    serverName: z.string().min(1).optional().describe('Name checked against the server\'s certificate and sent as SNI (default: the host connected to).'),
    certFile: filePath.optional().describe('PEM client certificate, when the server requires one (tls-auth-clients).'),
    keyFile: filePath.optional().describe('PEM private key of certFile.')
  })]).optional()
    .describe('TLS to the server (and to the Sentinels): true, or { caFile, serverName, certFile, keyFile }. A url says it with rediss:// (default off). State records carry keyed hashes, never passwords, but TLS keeps them and the Redis password off the network.'),
  keyPrefix: z.string().min(1).default('casgate:').describe('Prefix of every key casgate uses, so that several sites (or other applications) can share one server (default casgate:).'),
  historyMs: z.number().int().positive().default(8 * 60 * 60_000)
    .describe('How long recorded state stays in Redis for an instance that starts or comes back to catch up on (default 8 h, a forms session\'s absolute lifetime and twice the longest lockout); at most 200,000 records are kept whatever their age.'),
  timeoutMs: z.number().int().positive().max(60_000).default(1_000)
    .describe('Longest wait for one Redis command or connection: beyond it Redis counts as unreachable, state is kept and counted locally and re-synced when Redis answers again (default 1 s; requests never wait for Redis).')
})

export const stateSchema = z.strictObject({
  redis: redisSchema.optional().describe('Share site-wide state (lockout, the Basic cache, sign-outs, drains, spilled affinity) with the other casgate instances through a Valkey/Redis server.')
})

export const configSchema = z.strictObject({
  listen: listenSchema.default(listenSchema.parse({})),
  hosts: z.array(hostSchema).min(1).describe('Published host names, their certificates and SSL mode.'),
  pools: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/, 'pool names use letters, digits, - and _'), poolSchema)
    .describe('Named groups of Client Access servers.'),
  vdirs: z.record(z.string(), vdirSchema).default({})
    .describe('Per virtual directory settings over the built-in Exchange profile, keyed by path (/owa).'),
  health: healthSchema.default(healthSchema.parse({})).describe('Active monitors of Managed Availability health pages.'),
  certificateCheckIntervalMs: z.number().int().positive().default(60 * 60_000)
    .describe('How often the Extended Protection comparison with the backends\' certificates repeats, to catch a backend renewed without casgate (default 1 h).'),
  admin: adminSchema.optional().describe('Plain-HTTP status listener (JSON): connection counts, backends. Off unless configured.'),
  affinity: affinitySchema.default(affinitySchema.parse({})).describe('Where assignments are kept and how new keys are placed (per-vdir policy: vdirs.<path>.affinity).'),
  preauth: preauthSchema.optional().describe('Preauthentication at the edge: credential provider, session, exclusions, lockout. Without it nothing is preauthenticated.'),
  rules: rulesSchema.default(rulesSchema.parse({}))
    .describe('The Exchange exploit rule pack (ProxyLogon, ProxyShell, ProxyNotShell, OWASSRF…): every request is matched before anything else, a match answers 403 CASGATE_ERR_BLOCKED. Passthrough hosts cannot be filtered.'),
  hsts: hstsSchema.optional()
    .describe('Send Strict-Transport-Security on every response of the terminated hosts (browsers then refuse plain HTTP and certificate warnings for these names). Off unless configured.'),
  stateDir: filePath.optional()
    .describe('Directory where casgate keeps what must survive a restart (the generated session secret), relative to the configuration file. Default: $STATE_DIRECTORY (systemd StateDirectory=), else "state" next to the configuration file.'),
  trustProxy: z.array(z.string()).default([])
    .describe('Addresses of proxies in front of casgate whose X-Forwarded-For is trusted (default none).'),
  log: logSchema.default(logSchema.parse({})),
  state: stateSchema.optional()
    .describe('State shared by several casgate instances of one site. Without it each instance keeps its own (one instance, or instances that need not agree).')
})

/** RawConfig is the validated configuration as written, before paths and profiles are resolved. */
export type RawConfig = z.infer<typeof configSchema>
export type CertificateConfig = z.infer<typeof certificateSchema>
export type PoolConfig = z.infer<typeof poolSchema>
export type HostConfig = z.infer<typeof hostSchema>
export type SslMode = HostConfig['mode']
export type AdminConfig = z.infer<typeof adminSchema>
export type HealthConfig = z.infer<typeof healthSchema>
export type AffinityConfig = z.infer<typeof affinitySchema>
export type PreauthConfig = z.infer<typeof preauthSchema>
export type LdapConfig = z.infer<typeof ldapSchema>
export type LockoutConfig = z.infer<typeof lockoutSchema>
export type RulesConfig = z.infer<typeof rulesSchema>
export type HstsConfig = z.infer<typeof hstsSchema>
export type RedisConfig = z.infer<typeof redisSchema>
export type PreauthPolicy = NonNullable<z.infer<typeof vdirSchema>['preauth']>
export type AffinityPolicy = NonNullable<z.infer<typeof vdirSchema>['affinity']>
