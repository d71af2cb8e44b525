// Reads the status of each response Exchange sends down an Outlook Anywhere connection, without
// touching the bytes (they are relayed as they come). Responses arrive in the order of the
// requests, so the n-th status answers the n-th request: a 401 to a request that carried Basic
// credentials is a failed logon, counted like any other (preauth lockout). Framing is followed
// for Content-Length bodies and for responses without a body; a chunked or close-delimited body
// ends the watch for that connection (nothing after it can be attributed with certainty).

/** MAX_RESPONSE_HEAD bounds what is buffered to find one status line and its headers. */
const MAX_RESPONSE_HEAD = 64 * 1024

/**
 * ResponseStatusWatch follows one upstream byte stream and calls `onStatus` once per final
 * response (1xx skipped), in order.
 */
export class ResponseStatusWatch {
  readonly #onStatus: (status: number) => void
  #head: Buffer | undefined = Buffer.alloc(0)
  #bodyLeft = 0
  /** Set when framing can no longer be followed. */
  #lost = false

  constructor (onStatus: (status: number) => void) {
    this.#onStatus = onStatus
  }

  /** watching says whether statuses are still being read. */
  get watching (): boolean {
    return !this.#lost
  }

  /** between says whether the stream sits between responses (false once framing is lost). */
  get between (): boolean {
    return !this.#lost && this.#bodyLeft === 0 && this.#head!.length === 0
  }

  /** feed looks at the next chunk of the upstream stream. */
  feed (chunk: Buffer): void {
    let at = 0
    while (!this.#lost && at < chunk.length) {
      if (this.#bodyLeft > 0) {
        const n = Math.min(this.#bodyLeft, chunk.length - at)
        this.#bodyLeft -= n
        at += n
        continue
      }
      const rest = chunk.subarray(at)
      const buffered = this.#head!.length
      const head = buffered === 0 ? rest : Buffer.concat([this.#head!, rest])
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) {
        if (head.length > MAX_RESPONSE_HEAD) this.#lost = true
        else this.#head = Buffer.from(head)
        return
      }
      at += end + 4 - buffered
      this.#head = Buffer.alloc(0)
      this.#read(head.subarray(0, end).toString('latin1'))
    }
  }

  #read (text: string): void {
    const lines = text.split('\r\n')
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)
    if (!status) {
      this.#lost = true
      return
    }
    const code = Number(status[1])
    if (code >= 100 && code < 200) return
    this.#onStatus(code)
    if (code === 204 || code === 304) return
    let length: number | undefined
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!
      const colon = line.indexOf(':')
      const name = line.slice(0, colon).trim().toLowerCase()
      if (name === 'transfer-encoding') {
        this.#lost = true
        return
      }
      if (name === 'content-length') length = Number(line.slice(colon + 1).trim())
    }
    if (length === undefined || !Number.isSafeInteger(length) || length < 0) {
      this.#lost = true
      return
    }
    this.#bodyLeft = length
  }
}
