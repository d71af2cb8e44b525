import type { IncomingHttpHeaders } from 'node:http'
import type { AffinityPolicy } from '../config/schema.js'
import type { ServerPool } from '../upstream/server-pool.js'
import type { Server } from '../upstream/server.js'
import type { AffinityKeys } from './affinity-keys.js'
import type { AssignmentOwner, AssignmentStore } from './assignment-store.js'
import { readCookie } from '../util/cookies.js'
import { normalizeUser } from '../auth/user-name.js'
import { activeSyncIdentity, authorizationIdentity, setCookieValue } from './identity.js'
import { placeKey, type PlacementCandidate } from './placement.js'

/** AffinityRequest is what affinity reads of a request (the RPC tunnel has no headers to offer). */
export interface AffinityRequest {
  url: string
  headers: IncomingHttpHeaders
  /** The client's address (after trusted proxies). */
  client: string | undefined
}

/** AffinityChoice is where a request goes, and a cookie to set when casgate's cookie names another server. */
export interface AffinityChoice {
  backend: Server
  setCookie: string | undefined
}

/** VdirAffinityOptions bind a vdir's policy to its pool and the shared store. */
export interface VdirAffinityOptions {
  vdir: string
  /** The host whose own table the vdir belongs to; undefined for the site-wide table. */
  host?: string | undefined
  policy: AffinityPolicy
  /** affinity cookie: the backend cookie to follow; undefined inserts casgate's own. */
  followCookie: string | undefined
  pool: ServerPool
  store: AssignmentStore
  keys: AffinityKeys
  balanceFactor: number
  cookieName: string
}

/** AffinityServerStats is one server's line of the tuning data. */
export interface AffinityServerStats {
  name: string
  keysHeld: number
  requests: number
  /** This server's part of the vdir's requests, 0–1. */
  share: number
}

const ACTIVE_SYNC = '/microsoft-server-activesync'

/**
 * VdirAffinity decides which server a vdir's request goes to under the vdir's policy and keeps
 * the tuning data (keys held, requests, share per server). Every routed vdir has one; with
 * policy `none` it only counts.
 */
export class VdirAffinity implements AssignmentOwner {
  readonly vdir: string
  readonly host: string | undefined
  readonly id: string
  readonly policy: AffinityPolicy
  readonly pool: ServerPool
  readonly held: Int32Array
  readonly requests: Float64Array
  /** Requests of a keyed policy that carried no key and were balanced instead. */
  unkeyed = 0
  /** New keys placed, and how many of them off their first choice (bounded loads). */
  placed = 0
  spilled = 0
  /** Keys moved because their server was down, drained or excluded. */
  moved = 0
  /** Cookies casgate set. */
  cookiesIssued = 0
  readonly #store: AssignmentStore
  readonly #keys: AffinityKeys
  readonly #prefix: string
  readonly #factor: number
  readonly #followCookie: string | undefined
  readonly #cookieName: string
  /** casgate's cookie value per server index, and back. */
  readonly #cookieValues: string[] = []
  readonly #cookieServers = new Map<string, number>()
  readonly #activeSync: boolean

  constructor (options: VdirAffinityOptions) {
    this.vdir = options.vdir
    this.host = options.host
    this.id = `${options.host ?? '*'} ${options.vdir} ${options.pool.name}`
    this.policy = options.policy
    this.pool = options.pool
    this.held = new Int32Array(options.pool.servers.length)
    this.requests = new Float64Array(options.pool.servers.length)
    this.#store = options.store
    this.#keys = options.keys
    this.#factor = options.balanceFactor
    this.#followCookie = options.followCookie
    this.#cookieName = `${options.cookieName}-${options.pool.name}`
    this.#prefix = options.store.register(this)
    this.#activeSync = options.vdir.toLowerCase() === ACTIVE_SYNC
    if (options.policy === 'cookie' && options.followCookie === undefined) {
      for (const backend of options.pool.servers) {
        const value = options.keys.serverCookie(options.pool.name, backend.name)
        this.#cookieValues[backend.index] = value
        this.#cookieServers.set(value, backend.index)
      }
    }
  }

  /** select picks the server for a request, or undefined when no server can take the vdir. */
  select (request: AffinityRequest): AffinityChoice | undefined {
    const policy = this.policy
    if (policy === 'none') return this.#balanced(undefined)
    if (policy === 'cookie' && this.#followCookie === undefined) return this.#byOwnCookie(request)
    const key = this.keyOf(request)
    if (key === undefined) {
      this.unkeyed++
      return this.#balanced(undefined)
    }
    const backend = this.#assigned(key)
    return backend === undefined ? undefined : { backend, setCookie: undefined }
  }

  /**
   * userEntry says where a user's key sends them on this vdir (authorization policy only: the
   * other policies key on cookies and addresses), and with `clear` forgets it.
   */
  userEntry (user: string, clear: boolean): { vdir: string, host?: string, server: string | undefined } | undefined {
    if (this.policy !== 'authorization') return undefined
    const name = normalizeUser(user)
    if (name === '') return undefined
    const key = this.#prefix + this.#keys.key(`user:${name}`)
    const index = this.#store.get(key)
    if (clear && index !== undefined) this.#store.delete(key)
    return { vdir: this.vdir, ...(this.host !== undefined ? { host: this.host } : {}), server: index === undefined ? undefined : this.pool.servers[index]?.name }
  }

  /** count records one request sent to `backend` (retries count again, on the server they went to). */
  count (backend: Server): void {
    this.requests[backend.index]!++
  }

  /**
   * keyOf is the request's affinity key (vdir prefix + keyed hash of its identity), or undefined
   * when the request carries none: authorization reads the header, then ActiveSync's query;
   * cookie reads the followed backend cookie; source-ip the client address.
   */
  keyOf (request: AffinityRequest): string | undefined {
    let identity: string | undefined
    switch (this.policy) {
      case 'authorization':
        identity = authorizationIdentity(request.headers.authorization)
        if (identity === undefined && this.#activeSync) identity = activeSyncIdentity(request.url)
        break
      case 'cookie': {
        const value = readCookie(request.headers.cookie, this.#followCookie!)
        if (value !== undefined) identity = `cookie:${value}`
        break
      }
      case 'source-ip':
        if (request.client !== undefined) identity = `ip:${request.client}`
        break
    }
    return identity === undefined ? undefined : this.#prefix + this.#keys.key(identity)
  }

  /**
   * learn records that a request on a connection already bound to `backend` (an NTLM logon)
   * speaks for an identity, so that its later connections that carry the identity in a usable
   * form (Basic, ActiveSync's User=) follow. An existing assignment is left alone.
   */
  learn (request: AffinityRequest, backend: Server): void {
    if (this.policy !== 'authorization') return
    const key = this.keyOf(request)
    if (key !== undefined && this.#store.get(key) === undefined) this.#store.set(key, backend.index)
  }

  /** learnFromResponse follows a backend's Set-Cookie: the cookie's value stays with that server. */
  learnFromResponse (setCookie: string | string[] | undefined, backend: Server): void {
    const value = setCookieValue(setCookie, this.#followCookie!)
    if (value !== undefined) this.#store.set(this.#prefix + this.#keys.key(`cookie:${value}`), backend.index)
  }

  /** followsCookies says whether responses must be read for a backend cookie. */
  get followsCookies (): boolean {
    return this.policy === 'cookie' && this.#followCookie !== undefined
  }

  #assigned (key: string): Server | undefined {
    const backends = this.pool.servers
    const current = this.#store.get(key)
    if (current !== undefined) {
      const backend = backends[current]
      if (backend !== undefined && backend.isAvailable(this.vdir)) return backend
    }
    const candidates: PlacementCandidate[] = []
    for (const backend of backends) if (backend.isAvailable(this.vdir)) candidates.push(backend)
    // The hash is placed without the vdir prefix: instances agree whatever order their vdirs have.
    const placement = placeKey(key.slice(1), candidates, this.held, this.#factor)
    if (placement === undefined) return undefined
    if (current !== undefined) this.moved++
    else this.placed++
    if (!placement.firstChoice) this.spilled++
    this.#store.set(key, placement.index)
    return backends[placement.index]
  }

  #byOwnCookie (request: AffinityRequest): AffinityChoice | undefined {
    const value = readCookie(request.headers.cookie, this.#cookieName)
    // A value casgate did not sign matches no server: ignored, the request is balanced anew.
    const index = value === undefined ? undefined : this.#cookieServers.get(value)
    if (index !== undefined) {
      const backend = this.pool.servers[index]!
      if (backend.isAvailable(this.vdir)) return { backend, setCookie: undefined }
      this.moved++
    } else {
      this.unkeyed++
    }
    return this.#balanced(this.#cookieName)
  }

  #balanced (cookieName: string | undefined): AffinityChoice | undefined {
    const backend = this.pool.select({ vdir: this.vdir })
    if (backend === undefined) return undefined
    return { backend, setCookie: cookieName === undefined ? undefined : this.cookieFor(backend) }
  }

  /** cookieFor is the Set-Cookie value naming `backend` in casgate's cookie; undefined unless this vdir inserts one. */
  cookieFor (backend: Server): string | undefined {
    const value = this.#cookieValues[backend.index]
    if (value === undefined) return undefined
    this.cookiesIssued++
    // Path=/ so OWA's and ECP's links across vdirs keep it; no Expires: it ends with the browser.
    return `${this.#cookieName}=${value}; Path=/; Secure; HttpOnly; SameSite=Lax`
  }

  /**
   * imbalance says in words when one server takes far more than its part of the vdir's requests
   * (the carrier-NAT case: one server with most of ActiveSync), with the likely fix.
   */
  #imbalance (servers: AffinityServerStats[], total: number): { imbalance?: string } {
    const serving = this.pool.servers.filter((backend) => backend.isAvailable(this.vdir)).length
    if (total < 100 || serving < 2) return {}
    const busiest = servers.reduce((a, b) => (b.share > a.share ? b : a))
    if (busiest.share <= 1.5 / serving) return {}
    const hint = this.policy === 'source-ip'
      ? 'clients share addresses (NAT, proxies): use affinity authorization (ActiveSync) or cookie (OWA/ECP)'
      : this.policy === 'none' ? 'look at the server\'s health and outstanding requests' : 'a few identities send most requests, or the other servers were out while keys were placed (they return as entries expire)'
    return { imbalance: `${busiest.name} takes ${Math.round(busiest.share * 100)}% of ${this.vdir}'s requests; an even share is ${Math.round(100 / serving)}%. ${hint}` }
  }

  /** snapshot is this vdir's tuning data. */
  snapshot (): object {
    const total = this.requests.reduce((sum, n) => sum + n, 0)
    const servers: AffinityServerStats[] = this.pool.servers.map((backend) => ({
      name: backend.name,
      keysHeld: this.held[backend.index]!,
      requests: this.requests[backend.index]!,
      share: total === 0 ? 0 : Math.round(this.requests[backend.index]! / total * 1000) / 1000
    }))
    return {
      vdir: this.vdir,
      ...(this.host !== undefined ? { host: this.host } : {}),
      policy: this.policy,
      ...(this.policy === 'cookie' ? { cookie: this.#followCookie ?? this.#cookieName, cookieSource: this.#followCookie ? 'backend' : 'casgate' } : {}),
      pool: this.pool.name,
      requests: total,
      keysHeld: this.held.reduce((sum, n) => sum + n, 0),
      busiestShare: servers.reduce((max, server) => Math.max(max, server.share), 0),
      ...this.#imbalance(servers, total),
      placed: this.placed,
      spilled: this.spilled,
      moved: this.moved,
      unkeyedRequests: this.unkeyed,
      ...(this.policy === 'cookie' && !this.#followCookie ? { cookiesIssued: this.cookiesIssued } : {}),
      servers
    }
  }
}
