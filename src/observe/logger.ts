import { destination as pinoDestination, pino, type Logger, type LoggerOptions } from 'pino'

/**
 * redactedPaths are removed from every log line, wherever a header object is logged:
 * credentials and session cookies must never reach a log file.
 */
export const redactedPaths = [
  'headers.authorization', 'headers["proxy-authorization"]', 'headers.cookie', 'headers["set-cookie"]',
  'req.headers.authorization', 'req.headers["proxy-authorization"]', 'req.headers.cookie',
  'res.headers["set-cookie"]', 'request.headers.authorization', 'request.headers.cookie',
  'authorization', 'cookie', '["set-cookie"]', 'password', 'passphrase'
]

/** LogOptions are the `log` block of the configuration. */
export interface LogOptions {
  level: string
  pretty: boolean
}

/** loggerOptions is what createLogger gives pino; exported for tests that log into a stream. */
export function loggerOptions (options: LogOptions): LoggerOptions {
  return {
    level: options.level,
    base: { service: 'casgate' },
    redact: { paths: redactedPaths, censor: '[redacted]' },
    ...(options.pretty ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' } } } : {})
  }
}

/**
 * createLogger builds the root logger; components take `logger.child({ component })`.
 * To stdout, lines are written in batches of up to 4 KiB rather than one write per access
 * line, flushed at least every second and at exit.
 */
export function createLogger (options: LogOptions, destination?: NodeJS.WritableStream): Logger {
  if (destination) return pino(loggerOptions({ ...options, pretty: false }), destination)
  if (options.pretty) return pino(loggerOptions(options))
  const stream = pinoDestination({ dest: 1, sync: false, minLength: 4096 })
  // A quiet gateway must not keep its last lines (the start line, a health change) buffered.
  setInterval(() => { stream.flush() }, 1_000).unref()
  process.once('exit', () => stream.flushSync())
  return pino(loggerOptions(options), stream)
}
