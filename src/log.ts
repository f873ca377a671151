import { Type, type Static } from '@sinclair/typebox'
import { pino, type DestinationStream, type Logger } from 'pino'

/**
 * Structured logs: one pino logger for the CLI, the runtime, the engine's lifecycle and fastify.
 * JSON lines on stderr (stdout stays free for results and the stdout sink), level names as
 * strings, ISO times. pino swaps disabled levels for no-ops when the level is set, so a `debug`
 * call at `info` costs a function call and nothing else.
 */

export type { Logger } from 'pino'

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** The `log` section of the configuration (`TAGSTREAM_LOG__LEVEL=debug` overrides the level). */
export const LogConfigSchema = Type.Object(
  {
    level: Type.Union(
      LOG_LEVELS.map((l) => Type.Literal(l)),
      { default: 'info', description: 'Lowest level written to stderr; debug adds one line per HTTP request' },
    ),
    progressIntervalMs: Type.Integer({
      minimum: 100,
      default: 10_000,
      description: 'Without a terminal on stderr, how often long operations (replay, restore, sweeps) log their progress',
    }),
  },
  { default: {}, additionalProperties: false },
)

export type LogConfig = Static<typeof LogConfigSchema>

export interface LoggerOptions {
  readonly level?: LogLevel
  /** Where the JSON lines go; default stderr, written synchronously (see `stderrDestination`). */
  readonly destination?: DestinationStream
  /** Fields on every line (default: `{ pid }`). */
  readonly base?: Record<string, unknown>
}

/**
 * stderr, written synchronously: log volume is low (lifecycle, progress, errors), and a line
 * written just before `process.exit` (a shutdown timeout, a fatal error) must not be lost.
 */
export function stderrDestination(): DestinationStream {
  return pino.destination({ dest: 2, sync: true })
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: options.base ?? { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? stderrDestination(),
  )
}

/** A logger that writes nothing (tests, library use without a logger). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
