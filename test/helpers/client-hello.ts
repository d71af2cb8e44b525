import { createServer, type AddressInfo } from 'node:net'
import { connect } from 'node:tls'
import { parseClientHello } from '../../src/front/client-hello.js'

/** captureClientHello records the ClientHello a real node:tls client sends for `servername`. */
export async function captureClientHello (servername?: string): Promise<Buffer> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      server.once('connection', (socket) => {
        let bytes = Buffer.alloc(0)
        socket.on('data', (chunk: Buffer) => {
          bytes = Buffer.concat([bytes, chunk])
          if (parseClientHello(bytes).state === 'complete') {
            resolve(bytes)
            socket.destroy()
          }
        })
      })
      const client = connect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}) })
      client.on('error', () => undefined)
      setTimeout(() => reject(new Error('no hello captured')), 5_000).unref()
    })
  } finally {
    server.close()
  }
}

/** splitIntoRecords re-frames a single-record ClientHello as several TLS records of `size` bytes. */
export function splitIntoRecords (hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3))
  const records: Buffer[] = []
  for (let offset = 0; offset < body.length; offset += size) {
    const piece = body.subarray(offset, offset + size)
    const header = Buffer.from([22, 3, 1, 0, 0])
    header.writeUInt16BE(piece.length, 3)
    records.push(header, piece)
  }
  return Buffer.concat(records)
}
