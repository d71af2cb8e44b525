import { expect } from 'vitest'

/** Answer is what signInByForm needs of a response. */
export interface FormAnswer {
  status: number
  text: string
  headers: Record<string, string | string[] | undefined>
}

/**
 * signInByForm signs in through casgate's form, as a browser does (the page, its CSRF token and
 * cookie, the post), with `ask` sending each request; resolves with the session's Cookie header.
 */
export async function signInByForm (ask: (path: string, headers?: Record<string, string>, body?: string) => Promise<FormAnswer>, user: string, password: string): Promise<string> {
  const cookies = new Map<string, string>()
  const jar = (setCookie: string | string[] | undefined): void => {
    for (const line of [setCookie ?? []].flat()) {
      const [pair = ''] = line.split(';')
      cookies.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1))
    }
  }
  const header = (): string => [...cookies].filter(([, value]) => value !== '').map(([name, value]) => `${name}=${value}`).join('; ')
  const page = await ask('/casgate/logon?url=%2Fowa%2F')
  jar(page.headers['set-cookie'])
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)![1]!
  const form = new URLSearchParams({ csrf, url: '/owa/', username: user, password }).toString()
  const signedIn = await ask('/casgate/logon', { cookie: header(), 'content-type': 'application/x-www-form-urlencoded', origin: 'https://mail.contoso.test' }, form)
  expect(signedIn.status).toBe(303)
  jar(signedIn.headers['set-cookie'])
  return header()
}
