import type { Worker } from 'node:cluster'

interface Question {
  pending: Set<Worker>
  answers: unknown[]
  done: () => void
}

/**
 * WorkerQuestions asks every worker one question (its figures for /status, where a user's
 * affinity keys point) and gathers the answers: those that do not answer within `timeoutMs`, or
 * exit first, are left out, so that the admin listener never hangs on a worker.
 */
export class WorkerQuestions {
  readonly #open = new Map<number, Question>()
  readonly #timeoutMs: number
  #next = 0

  constructor (timeoutMs: number) {
    this.#timeoutMs = timeoutMs
  }

  /** ask sends each worker the question numbered `id` (through `send`) and resolves with the answers that came. */
  async ask<T> (workers: Iterable<Worker>, send: (worker: Worker, id: number) => void): Promise<T[]> {
    const id = this.#next++
    const question: Question = { pending: new Set(workers), answers: [], done: () => undefined }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.#timeoutMs)
      question.done = () => { clearTimeout(timer); resolve() }
      this.#open.set(id, question)
      if (question.pending.size === 0) question.done()
      for (const worker of question.pending) send(worker, id)
    })
    this.#open.delete(id)
    return question.answers as T[]
  }

  /** answer takes a worker's answer to question `id` (late or repeated ones are dropped). */
  answer (worker: Worker, id: number, answer: unknown): void {
    const question = this.#open.get(id)
    if (!question?.pending.delete(worker)) return
    question.answers.push(answer)
    if (question.pending.size === 0) question.done()
  }

  /** gone stops waiting for a worker that exited. */
  gone (worker: Worker): void {
    for (const question of this.#open.values()) if (question.pending.delete(worker) && question.pending.size === 0) question.done()
  }
}
