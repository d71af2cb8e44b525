import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

/** curl runs the real curl binary and returns its stdout; -sS so errors reach stderr. */
export async function curl (args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('curl', ['-sS', '--max-time', '30', ...args], { maxBuffer: 64 * 1024 * 1024 })
  return stdout
}
