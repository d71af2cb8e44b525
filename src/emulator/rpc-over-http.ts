import type { Socket } from 'node:net'
import { peekSocket } from '../front/peek.js'
import type { RequestLine } from '../front/request-line.js'
import { pumpBytes, type EchoBody } from './exchange-server.js'

/**
 * answerRpcOverHttp plays Exchange's RPC proxy (rpcproxy.dll) for one RPC over HTTP request:
 * RPC_IN_DATA reads its Content-Length bytes and answers a JSON echo; RPC_OUT_DATA answers
 * `?bytes=N` bytes. The socket holds the request from its first byte. After an empty RPC_IN_DATA
 * (a logon leg) the connection stays open and `next` gets whatever follows, as IIS would parse
 * it: a request smuggled behind it reaches the emulator, so tests can see that it did not.
 */
export function answerRpcOverHttp (socket: Socket, line: RequestLine, name: string, connection: number, next: (leftover: Buffer) => void): void {
  peekSocket<number>(socket, { timeoutMs: 30_000, maxBytes: 64 * 1024 }, (bytes) => {
    const end = bytes.indexOf('\r\n\r\n')
    return end === -1 ? { state: 'partial' } : { state: 'complete', value: end + 4 }
  }, (outcome) => {
    if (!outcome.ok) {
      socket.destroy()
      return
    }
    const head = outcome.bytes.subarray(0, outcome.value).toString('latin1')
    const headers: Record<string, string> = {}
    for (const headerLine of head.split('\r\n').slice(1)) {
      const colon = headerLine.indexOf(':')
      if (colon > 0) headers[headerLine.slice(0, colon).trim().toLowerCase()] = headerLine.slice(colon + 1).trim()
    }
    const url = new URL(line.target, 'http://emulator')
    if (line.method === 'RPC_OUT_DATA') {
      const total = Number(url.searchParams.get('bytes') ?? 0)
      socket.write(`HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nX-Backend: ${name}\r\nContent-Length: ${total}\r\n\r\n`)
      pumpBytes(socket, total)
      return
    }
    const expected = Number(headers['content-length'] ?? 0)
    let bodyBytes = outcome.bytes.length - outcome.value
    let leftover = bodyBytes > expected ? outcome.bytes.subarray(outcome.value + expected) : Buffer.alloc(0)
    const finish = (): void => {
      socket.off('data', onData)
      socket.pause()
      const json = JSON.stringify({ server: name, method: line.method, url: line.target, headers, bodyBytes: Math.min(bodyBytes, expected), tls: undefined, connection } satisfies EchoBody)
      const response = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Backend: ${name}\r\nContent-Length: ${Buffer.byteLength(json)}\r\n\r\n${json}`
      // An empty request is a leg of the logon (NTLM): the connection stays for the next one.
      // A channel that ran its course ends its connection.
      if (expected > 0) {
        socket.end(response)
        return
      }
      socket.write(response)
      next(leftover)
    }
    const onData = (chunk: Buffer): void => {
      const before = bodyBytes
      bodyBytes += chunk.length
      if (bodyBytes >= expected) {
        leftover = chunk.subarray(Math.max(0, expected - before))
        finish()
      }
    }
    if (bodyBytes >= expected) {
      finish()
      return
    }
    socket.on('data', onData)
    socket.resume()
  })
}
