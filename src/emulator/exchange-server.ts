import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net'
import { createServer as createTlsServer, type TLSSocket } from 'node:tls'
import { peekSocket } from '../front/peek.js'
import { answerRpcOverHttp } from './rpc-over-http.js'
import { inspectRequestLine, MAX_REQUEST_LINE, RPC_METHODS, type RequestLine } from '../front/request-line.js'
import { exchangeProfile } from '../config/exchange-profile.js'
import { basicCredentials } from '../auth/basic.js'
import { escapeHtml } from '../util/html.js'
import { answerNtlm, type NtlmConnectionState, type NtlmDirectory } from './ntlm-server.js'

// An emulated Exchange Client Access server for the demo, the tests and the benchmark. It
// answers what a load balancer sees of Exchange: Managed Availability health pages per vdir,
// and an echo of what reached it, so a test can see exactly what casgate forwarded.
//
// Test endpoints under any vdir:
//   /<vdir>/__casgate/bytes?n=N     N bytes of body, streamed in 64 KiB chunks
//   /<vdir>/__casgate/hold?ms=N     answers after N ms (a long poll); with &release=1 also at releaseHeld()
//   /<vdir>/__casgate/reset         drops the connection without an answer
//   /<vdir>/__casgate/redirect?to=P 302 to P (a logon redirect, for cookie round trips)
//   /<vdir>/__casgate/cookie?name=N&value=V  sets cookie N=V (a backend's session cookie)
//   RPC_IN_DATA /rpc/…              reads Content-Length bytes, answers a JSON echo
//   RPC_OUT_DATA /rpc/…?bytes=N     answers N bytes (Outlook Anywhere's two channels)
//   anything else                   JSON echo: method, url, headers, body length, TLS facts

/** EmulatorTls makes the emulator speak HTTPS (re-encrypt backends). */
export interface EmulatorTls {
  certPem: string
  keyPem: string
  /**
   * Ask clients for a certificate, verified against this CA: /Microsoft-Server-ActiveSync then
   * answers 403 (as IIS with "Require SSL client certificates") to anyone without a valid one,
   * its health page included.
   */
  clientCa?: string
}

/** EmulatorOptions configure one emulated server. */
export interface EmulatorOptions {
  name: string
  tls?: EmulatorTls
  host?: string
  port?: number
  /** Require Windows authentication (NTLM) on every vdir but the health pages, as IIS does. */
  ntlm?: NtlmDirectory
}

/** EchoBody is the JSON the emulator answers ordinary requests with. */
export interface EchoBody {
  server: string
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  bodyBytes: number
  tls: { servername: string | false | null | undefined, clientCertificate: string | string[] | undefined } | undefined
  connection: number
  /** The user the connection authenticated as (NTLM), if any. */
  user?: string
}

const CHUNK = Buffer.alloc(64 * 1024, 'x')

/** pumpBytes writes `total` bytes of filler with backpressure, then ends the stream. */
export function pumpBytes (out: NodeJS.WritableStream, total: number): void {
  let left = total
  const pump = (): void => {
    while (left > 0) {
      const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left)
      left -= chunk.length
      if (!out.write(chunk)) {
        out.once('drain', pump)
        return
      }
    }
    out.end()
  }
  pump()
}

/** ExchangeEmulator is one emulated Client Access server on loopback. */
export class ExchangeEmulator {
  readonly name: string
  /** The HTTP server requests reach; it never listens itself (see #listener). */
  readonly server: Server
  /** Accepts connections and reads the first request line, as IIS's HTTP.sys does for RPC. */
  readonly #listener: NetServer
  readonly #sockets = new Set<Socket>()
  /** Requests received, health probes excluded, for tests that check where traffic went. */
  requests = 0
  /** Every request received ("METHOD target"), health probes excluded, pipelined ones included. */
  readonly seen: string[] = []
  /** Health page requests (load balancer probes). */
  healthProbes = 0
  /** Held requests whose client went away before the answer (the proxy aborted upstream). */
  abandoned = 0
  #down = new Set<string>()
  /** Answers of requests held until releaseHeld(). */
  readonly #held = new Set<() => void>()
  #connections = 0
  #connectionIds = new WeakMap<Socket, number>()
  #ntlm = new WeakMap<Socket, NtlmConnectionState>()
  #address: AddressInfo | undefined

  constructor (readonly options: EmulatorOptions) {
    this.name = options.name
    // Exchange set up for Kerberos tokens of users in many groups (KB2020943) takes 64 KiB of headers.
    this.server = createHttpServer({ maxHeaderSize: 64 * 1024 }, (req, res) => this.#handle(req, res))
    this.server.keepAliveTimeout = 120_000
    this.server.emit('listening') // starts Node's connection tracking; the listener is #listener
    const accept = (socket: Socket): void => this.#accept(socket)
    this.#listener = options.tls
      ? createTlsServer({
        cert: options.tls.certPem,
        key: options.tls.keyPem,
        ...(options.tls.clientCa ? { ca: options.tls.clientCa, requestCert: true, rejectUnauthorized: false } : {})
      }).on('secureConnection', accept)
      : createNetServer(accept)
    this.#listener.on('tlsClientError', () => undefined)
    // Raw TCP connections too, so that close() also ends those still in their TLS handshake.
    this.#listener.on('connection', (raw: Socket) => {
      this.#sockets.add(raw)
      raw.once('close', () => this.#sockets.delete(raw))
    })
  }

  #accept (socket: Socket): void {
    this.#connectionIds.set(socket, ++this.#connections)
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
    socket.on('error', () => socket.destroy())
    this.#route(socket)
  }

  /** route reads the next request line: RPC over HTTP is answered here, the rest by the HTTP server. */
  #route (socket: Socket): void {
    peekSocket<RequestLine>(socket, { timeoutMs: 30_000, maxBytes: MAX_REQUEST_LINE }, inspectRequestLine, (outcome) => {
      if (outcome.ok && RPC_METHODS.has(outcome.value.method)) {
        socket.unshift(outcome.bytes)
        this.requests++
        this.seen.push(`${outcome.value.method} ${outcome.value.target}`)
        answerRpcOverHttp(socket, outcome.value, this.name, this.#connectionIds.get(socket) ?? 0, (leftover) => {
          if (leftover.length > 0) socket.unshift(leftover)
          this.#route(socket)
        })
        return
      }
      if (outcome.bytes.length === 0) {
        socket.destroy()
        return
      }
      socket.unshift(outcome.bytes)
      this.server.emit('connection', socket)
      socket.resume()
    })
  }

  /** start listens on loopback (port 0 unless told otherwise). */
  async start (): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.#listener.once('error', reject)
      this.#listener.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => resolve())
    })
    this.#address = this.#listener.address() as AddressInfo
    return this
  }

  /** url is the base URL casgate's pool lists for this server. */
  get url (): string {
    if (!this.#address) throw new Error(`${this.name} is not started`)
    const host = this.#address.family === 'IPv6' ? `[${this.#address.address}]` : this.#address.address
    return `${this.options.tls ? 'https' : 'http'}://${host}:${this.#address.port}`
  }

  /** setHealthy makes /<vdir>/healthcheck.htm answer 200 (true) or 404 (false), as Managed Availability does. */
  setHealthy (vdir: string, healthy: boolean): void {
    if (healthy) this.#down.delete(vdir.toLowerCase())
    else this.#down.add(vdir.toLowerCase())
  }

  /** releaseHeld answers every request held with ?release=1; returns how many there were. */
  releaseHeld (): number {
    const held = [...this.#held]
    this.#held.clear()
    for (const answer of held) answer()
    return held.length
  }

  async close (): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#listener.close(() => resolve()))
    for (const socket of this.#sockets) socket.destroy()
    this.server.close()
    await closed
  }

  #handle (req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('x-backend', this.name)
    if (req.headers['x-emulator-hop'] !== undefined) {
      // A backend-private hop-by-hop header, for tests that check the proxy drops it.
      res.setHeader('connection', 'keep-alive, x-backend-private')
      res.setHeader('x-backend-private', '1')
    }
    const url = new URL(req.url ?? '/', 'http://emulator')
    const segments = url.pathname.split('/')
    const vdir = `/${segments[1] ?? ''}`.toLowerCase()
    const rest = segments.slice(2).join('/').toLowerCase()

    if (this.options.tls?.clientCa && vdir === '/microsoft-server-activesync' && !(req.socket as TLSSocket).authorized) {
      if (rest === 'healthcheck.htm') this.healthProbes++
      res.writeHead(403, { 'content-type': 'text/html', 'content-length': '33' }).end('403.7 - Client certificate needed')
      return
    }
    if (rest === 'healthcheck.htm') {
      this.healthProbes++
      const known = exchangeProfile.some((p) => p.path.toLowerCase() === vdir)
      if (!known || this.#down.has(vdir)) {
        res.writeHead(404, { 'content-type': 'text/html' }).end('<html><body>404 - Not Found</body></html>')
      } else {
        res.writeHead(200, { 'content-type': 'text/html' }).end(`200 OK<br/>${this.name}`)
      }
      return
    }
    this.requests++
    this.seen.push(`${req.method ?? ''} ${req.url ?? ''}`)
    let user: string | undefined
    if (this.options.ntlm) {
      let state = this.#ntlm.get(req.socket)
      if (!state) this.#ntlm.set(req.socket, state = {})
      const outcome = answerNtlm(this.options.ntlm, this.name, state, req.headers.authorization)
      if (outcome.kind !== 'authenticated') {
        // Drain the body so the connection (and with it the handshake) survives.
        req.resume()
        req.on('end', () => res.writeHead(401, { 'www-authenticate': outcome.wwwAuthenticate, 'content-length': '0' }).end())
        return
      }
      user = outcome.user
    }
    if (rest === '__casgate/bytes') {
      this.#sendBytes(res, Number(url.searchParams.get('n') ?? 0))
      return
    }
    if (rest === '__casgate/hold') {
      const answer = (): void => this.#echo(req, res, 0, user)
      const timer = setTimeout(answer, Number(url.searchParams.get('ms') ?? 0))
      // ?release=1 (with a long ms as its bound): held until releaseHeld(), as Exchange holds a
      // Ping until mail arrives — tests need not guess how long setting up a crowd takes.
      if (url.searchParams.has('release')) this.#held.add(answer)
      res.once('close', () => {
        if (!res.writableFinished) this.abandoned++
        clearTimeout(timer)
        this.#held.delete(answer)
      })
      return
    }
    if (rest === '__casgate/reset') {
      req.socket.destroy()
      return
    }
    if (rest === '__casgate/redirect') {
      res.writeHead(302, { location: url.searchParams.get('to') ?? '/', 'content-length': '0' }).end()
      return
    }
    if (rest === '__casgate/cookie') {
      res.setHeader('set-cookie', `${url.searchParams.get('name') ?? 'session'}=${url.searchParams.get('value') ?? ''}; Path=/; Secure; HttpOnly`)
      this.#echo(req, res, 0, user)
      return
    }
    if ((vdir === '/owa') && (rest === '' || url.pathname === '/owa') && req.method === 'GET' && String(req.headers.accept ?? '').includes('text/html')) {
      this.#owaPage(req, res)
      return
    }
    let bodyBytes = 0
    req.on('data', (chunk: Buffer) => { bodyBytes += chunk.length })
    req.on('end', () => this.#echo(req, res, bodyBytes, user))
  }

  #sendBytes (res: ServerResponse, total: number): void {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
    pumpBytes(res, total)
  }

  #echo (req: IncomingMessage, res: ServerResponse, bodyBytes: number, user?: string): void {
    const socket = req.socket as TLSSocket
    const peer = this.options.tls?.clientCa ? socket.getPeerCertificate() : undefined
    const body: EchoBody = {
      server: this.name,
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      bodyBytes,
      tls: this.options.tls ? { servername: socket.servername, clientCertificate: peer?.subject?.CN } : undefined,
      connection: this.#connectionIds.get(socket) ?? 0,
      ...(user !== undefined ? { user } : {})
    }
    const json = JSON.stringify(body)
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) }).end(json)
  }

  #owaPage (req: IncomingMessage, res: ServerResponse): void {
    const rows = Object.entries(req.headers)
      .filter(([name]) => name.startsWith('x-forwarded') || name === 'host' || name === 'user-agent')
      .map(([name, value]) => `<tr><th>${escapeHtml(name)}</th><td>${escapeHtml(String(value))}</td></tr>`).join('')
    // With casgate's forms preauthentication, the logon reaches Exchange as Basic: show who.
    const signedIn = basicCredentials(req.headers.authorization)?.user
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Outlook on the web (emulated)</title>
<style>body{font:16px system-ui,sans-serif;margin:3rem;color:#222}th{text-align:left;padding-right:1rem}code{background:#eee;padding:0 .3rem}</style></head>
<body><h1>Outlook on the web <small>(emulated)</small></h1>
<p>This page was served by <strong id="backend">${escapeHtml(this.name)}</strong> behind casgate. Reload: OWA keeps you on one server (casgate's affinity cookie).</p>
${signedIn !== undefined ? `<p>Exchange received your logon as <strong id="user">${escapeHtml(signedIn)}</strong> (Basic, from casgate's sign-in form). <a href="/owa/logoff.owa">Sign out</a></p>` : ''}
<table>${rows}</table>
<p>Health pages: <code>/owa/healthcheck.htm</code>, <code>/Microsoft-Server-ActiveSync/healthcheck.htm</code>, …</p>
</body></html>`)
  }
}
