// What preauthentication decides about a request: pass it on (maybe with credentials and cookies
// of casgate's), or answer it here.

/** GateAnswer is what casgate answers itself when a request may not pass. */
export interface GateAnswer {
  status: number
  headers: Record<string, string | string[]>
  body: string
  /** Why, for the access log (never the credentials). */
  reason: string
}

/** GatePass lets a request through, maybe with credentials and cookies of casgate's. */
export interface GatePass {
  /** Authorization to send to Exchange instead of the client's (forms: Basic from the session). */
  authorization: string | undefined
  /** Set-Cookie values for the response (a refreshed session). */
  setCookies: string[] | undefined
  /** The user casgate authenticated, for the access log. */
  user: string | undefined
  /** Why the request was not preauthenticated, when excluded. */
  excluded: string | undefined
}

export type GateOutcome = { pass: GatePass } | { answer: GateAnswer }

/** PASS_UNCHANGED lets a request through as it came. */
export const PASS_UNCHANGED: { pass: GatePass } = { pass: { authorization: undefined, setCookies: undefined, user: undefined, excluded: undefined } }
