import type { Dispatcher } from 'undici'
import { DelegatingHandler } from './delegating-handler.js'

/**
 * RetryElsewhere gives a request one more server when its first fails before any of the response
 * started (HAProxy's "option redispatch" with "retries 1"). `attempt` decides and does it: it
 * returns true when it moved the request's lease to another server and dispatched it there again
 * with this same handler, false to let the failure reach the client. Only requests that may be
 * repeated (idempotent, no body, not on a pinned connection) are ever wrapped.
 */
export class RetryElsewhere extends DelegatingHandler {
  readonly #attempt: (err: Error, handler: Dispatcher.DispatchHandler) => boolean
  #retried = false

  constructor (inner: Dispatcher.DispatchHandler, attempt: (err: Error, handler: Dispatcher.DispatchHandler) => boolean) {
    super(inner)
    this.#attempt = attempt
  }

  override onResponseError (controller: Dispatcher.DispatchController, err: Error): void {
    if (!this.responded && !this.#retried) {
      this.#retried = true
      if (this.#attempt(err, this)) return
    }
    super.onResponseError(controller, err)
  }
}
