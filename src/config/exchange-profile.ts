import type { AffinityPolicy, PreauthPolicy } from './schema.js'

/** VdirProfile is the built-in default for one Exchange virtual directory. */
export interface VdirProfile {
  /** Canonical spelling of the path, as Exchange publishes it. */
  path: string
  enabled: boolean
  timeoutMs: number
  /** Why the defaults are what they are, shown by `casgate check`. */
  note: string
  /** Exchange holds requests open here (long polls, channels): shorter timeouts cut them. */
  longPoll?: boolean
  /** Default affinity; `none` unless said otherwise. */
  affinity?: AffinityPolicy
  /** Default preauthentication when a preauth block exists; `none` unless said otherwise. */
  preauth?: PreauthPolicy
}

/**
 * LONG_POLL_MINIMUM_MS is the shortest timeout casgate accepts silently on a long-poll vdir:
 * Microsoft asks load balancers for 15–30 minutes of idle time, and EWS streaming
 * notifications hold a request for 30.
 */
export const LONG_POLL_MINIMUM_MS = 30 * 60_000

const MINUTE = 60_000
const HOUR = 60 * MINUTE

/**
 * exchangeProfile lists the Client Access virtual directories with defaults an internet-facing
 * listener wants. Timeouts are longer than Exchange's own so that casgate never cuts a long
 * poll first: ActiveSync Ping holds a request up to 59 minutes, EWS streaming notifications up
 * to 30, MAPI NotificationWait and Outlook Anywhere RPC channels for hours.
 * /ecp and /powershell are administration surfaces: off unless the config publishes them.
 * Affinity: Exchange 2016+ needs none at layer 7, but an ActiveSync device that moves server
 * re-creates its mailbox notification subscription, so it stays with its server by identity
 * (not by address: a carrier NAT puts every phone behind one). OWA and ECP keep a browser on
 * one server by cookie, which saves re-rendering and re-authenticating forms sessions.
 * Preauthentication: browsers get casgate's form, clients that answer Basic (ActiveSync, EWS)
 * get Basic; Outlook's MAPI and RPC cannot answer either, nor can Autodiscover and OAB clients
 * be relied on to, so they pass to Exchange's own authentication.
 */
export const exchangeProfile: readonly VdirProfile[] = [
  { path: '/owa', enabled: true, timeoutMs: 5 * MINUTE, note: 'Outlook on the web', affinity: 'cookie', preauth: 'forms' },
  { path: '/ecp', enabled: false, timeoutMs: 5 * MINUTE, note: 'admin center; publish deliberately', affinity: 'cookie', preauth: 'forms' },
  { path: '/Microsoft-Server-ActiveSync', enabled: true, timeoutMs: 65 * MINUTE, note: 'Ping holds up to 59 min', longPoll: true, affinity: 'authorization', preauth: 'basic' },
  { path: '/EWS', enabled: true, timeoutMs: 35 * MINUTE, note: 'streaming notifications hold up to 30 min', longPoll: true, preauth: 'basic' },
  { path: '/autodiscover', enabled: true, timeoutMs: 2 * MINUTE, note: 'short request/response' },
  { path: '/mapi', enabled: true, timeoutMs: 2 * HOUR, note: 'NotificationWait long polls', longPoll: true },
  { path: '/rpc', enabled: true, timeoutMs: 8 * HOUR, note: 'Outlook Anywhere channels live for hours', longPoll: true },
  { path: '/oab', enabled: true, timeoutMs: 10 * MINUTE, note: 'offline address book downloads' },
  { path: '/powershell', enabled: false, timeoutMs: 30 * MINUTE, note: 'remote management; publish deliberately' }
]

/** healthPathFor gives Managed Availability's health page of a virtual directory. */
export function healthPathFor (vdirPath: string): string {
  return `${vdirPath}/healthcheck.htm`
}
