/**
 * until waits for `predicate` to hold, checking every 20 ms, for at most `timeoutMs`; past it, it
 * throws naming what it waited for (and `detail()`, what was seen instead).
 */
export async function until (what: string, predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, detail = (): string => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what} ${detail()}`.trimEnd())
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
