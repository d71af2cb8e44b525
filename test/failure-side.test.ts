import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { Lease } from '../src/upstream/lease.js'
import { Server } from '../src/upstream/server.js'
import { UpstreamExchange } from '../src/proxy/upstream-exchange.js'
import type { Dispatcher } from 'undici'

// A failure is the side's that failed: when the client's request body breaks off (its connection
// went away), undici reports the upload's error as if the backend had reset it. UpstreamExchange
// must tell the proxy it was the client, so passive health never blames a healthy server.

/** exchangeFor runs a real HTTP request whose client sends half its body and leaves. */
async function brokenUpload (): Promise<{ req: IncomingMessage, res: ServerResponse }> {
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      req.on('error', () => undefined)
      req.once('aborted', () => resolve({ req, res }))
    })
    server.listen(0, '127.0.0.1', () => {
      const client = httpRequest({ port: (server.address() as AddressInfo).port, method: 'POST', headers: { 'content-length': '1000' } })
      client.on('error', () => undefined)
      client.write('half', () => setTimeout(() => client.destroy(), 20))
    })
    onTestFinished(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  })
}

describe('UpstreamExchange classifies a failure by the side that failed', () => {
  it('reports a broken-off request body as the client\'s abort, not the backend\'s failure', async () => {
    const { req, res } = await brokenUpload()
    const seen: string[] = []
    const events = { onFailure: () => { seen.push('backend') }, onClientAbort: () => { seen.push('client') } }
    const exchange = new UpstreamExchange(res, events, new Lease(new Server(new URL('http://ex1.test'), 0, { connectionsPerServer: 1, longPollConnectionsPerServer: 1 }), 'request', '/EWS', () => undefined), '/EWS')
    exchange.request = req
    exchange.onResponseError({} as Dispatcher.DispatchController, Object.assign(new Error('aborted'), { code: 'ECONNRESET' }))
    expect(seen).toEqual(['client'])
  })

  it('still reports a backend failure as the backend\'s when the client is whole', async () => {
    const seen: string[] = []
    const server = createServer((req, res) => {
      const events = { onFailure: () => { seen.push('backend'); res.end() }, onClientAbort: () => { seen.push('client') } }
      const exchange = new UpstreamExchange(res, events, new Lease(new Server(new URL('http://ex1.test'), 0, { connectionsPerServer: 1, longPollConnectionsPerServer: 1 }), 'request', '/EWS', () => undefined), '/EWS')
      req.resume()
      req.on('end', () => {
        exchange.request = req
        exchange.onResponseError({} as Dispatcher.DispatchController, Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>((resolve) => { server.close(() => resolve()) }))
    await new Promise<void>((resolve) => {
      const client = httpRequest({ port: (server.address() as AddressInfo).port, method: 'POST', headers: { 'content-length': '2' } }, (response) => { response.resume(); response.on('end', () => resolve()) })
      client.end('ok')
    })
    expect(seen).toEqual(['backend'])
  })
})
