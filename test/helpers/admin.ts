import type { Gateway } from '../../src/gateway/gateway.js'

/**
 * admin asks a gateway's admin listener, with its token: GET without `body`, else a POST of the
 * body as JSON (how the listener takes changes).
 */
export async function admin (gateway: Gateway, path: string, body?: object): Promise<{ status: number, json: Record<string, unknown> }> {
  const response = await fetch(`http://127.0.0.1:${gateway.adminAddress!.port}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${gateway.config.admin!.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  return { status: response.status, json: await response.json() as Record<string, unknown> }
}
