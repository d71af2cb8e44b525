import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import type { EchoBody } from '../src/emulator/exchange-server.js'
import { labClient, labPki, startEmulators, startLabGateway } from './helpers/lab.js'

const MB = 1024 * 1024
const TRANSFER = 384 * MB
// Far below the transfer size: a proxy that buffered a body would blow through it.
const GROWTH_LIMIT = 160 * MB

function zeroes (total: number): Readable {
  const chunk = Buffer.alloc(64 * 1024)
  let left = total
  return new Readable({
    read () {
      if (left <= 0) return this.push(null)
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left)
      left -= piece.length
      this.push(piece)
    }
  })
}

/** watchRss samples resident memory until stopped and returns the peak growth. */
function watchRss (): () => number {
  global.gc?.()
  const start = process.memoryUsage().rss
  let peak = start
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  return () => {
    clearInterval(timer)
    return Math.max(peak, process.memoryUsage().rss) - start
  }
}

describe.each(['offload', 'reencrypt'] as const)('streaming through casgate (%s)', (mode) => {
  async function setup () {
    const pki = await labPki()
    const servers = await startEmulators(1, mode === 'reencrypt' ? { certPem: pki.server.certPem + pki.intermediate.certPem, keyPem: pki.server.keyPem } : undefined)
    const gateway = await startLabGateway({ mode, servers: servers.map((s) => s.url) })
    return { gateway, client: await labClient() }
  }

  it(`uploads ${TRANSFER / MB} MB with bounded memory`, async () => {
    const { gateway, client } = await setup()
    const stop = watchRss()
    const response = await client.request({
      origin: `https://127.0.0.1:${gateway.address.port}`,
      path: '/EWS/upload',
      method: 'POST',
      headers: { host: 'mail.contoso.test', 'content-type': 'application/octet-stream', 'content-length': String(TRANSFER) },
      body: zeroes(TRANSFER)
    })
    const echo = await response.body.json() as EchoBody
    const growth = stop()
    expect(response.statusCode).toBe(200)
    expect(echo.bodyBytes).toBe(TRANSFER)
    expect(growth).toBeLessThan(GROWTH_LIMIT)
  }, 120_000)

  it(`downloads ${TRANSFER / MB} MB with bounded memory`, async () => {
    const { gateway, client } = await setup()
    const stop = watchRss()
    const response = await client.request({
      origin: `https://127.0.0.1:${gateway.address.port}`,
      path: `/oab/__casgate/bytes?n=${TRANSFER}`,
      method: 'GET',
      headers: { host: 'mail.contoso.test' }
    })
    let received = 0
    await pipeline(response.body, new Writable({ write (chunk: Buffer, _e, done) { received += chunk.length; done() } }))
    const growth = stop()
    expect(response.statusCode).toBe(200)
    expect(response.headers['content-length']).toBe(String(TRANSFER))
    expect(received).toBe(TRANSFER)
    expect(growth).toBeLessThan(GROWTH_LIMIT)
  }, 120_000)
})
