import type { DestinationStream } from 'pino'
import type { Logger } from './log.js'

/**
 * Progress of long operations (replays, restores, re-scoring sweeps, tag publications). The code
 * doing the work keeps a counter it would keep anyway (or adds to `Operation.done`); the reporter
 * samples it on a timer: on a terminal it draws a bar with rate and ETA on stderr, otherwise it
 * logs a line every `logIntervalMs`; metrics read `snapshot()` at scrape time. Nothing here runs
 * per event.
 */

/** The operations that report progress: a bounded set, so it can be a metric label. */
export const Operations = {
  REPLAY: 'replay',
  RESTORE: 'restore',
  RESCORE: 'rescore',
  PUBLISH: 'publish',
} as const
export type OperationName = (typeof Operations)[keyof typeof Operations]
export const OPERATION_NAMES: readonly OperationName[] = Object.values(Operations)

/** What an operation's `done` and `total` count. */
export type ProgressUnit = 'bytes' | 'users' | 'events'

export type OperationOutcome = 'completed' | 'stopped' | 'failed'

export interface OperationOptions {
  readonly unit: ProgressUnit
  /** Work expected; a function is read at every sample (it may be known late, or grow). 0: unknown. */
  readonly total?: number | (() => number)
  /** Reads the work done from a counter kept anyway; without it, the worker adds to `Operation.done`. */
  readonly done?: () => number
  /**
   * A routine part of a larger operation (the daily sweeps of a replay): its start, progress and
   * end lines are logged at debug, and it is not drawn on the status line. Its metrics are kept as
   * for any other.
   */
  readonly quiet?: boolean
  /** Fields added to the operation's log lines. */
  readonly fields?: Readonly<Record<string, unknown>>
}

interface Sample {
  readonly at: number
  readonly done: number
}

/** One run of an operation. */
export class Operation {
  readonly name: OperationName
  readonly unit: ProgressUnit
  /** Work done so far: add to it, unless the operation reads a counter (`OperationOptions.done`). */
  done = 0
  /** Work expected (0: unknown). */
  total = 0
  readonly startedAt: number
  endedAt: number | undefined
  outcome: OperationOutcome | undefined
  /** Units per second over the last `RATE_WINDOW_MS`, undefined before two samples apart in time. */
  rate: number | undefined
  readonly quiet: boolean
  readonly fields: Readonly<Record<string, unknown>>
  /** Work done when the run started (a resumed replay starts part-way). */
  readonly initialDone: number
  lastLoggedAt: number
  readonly samples: Sample[] = []
  private readonly readDone: (() => number) | undefined
  private readonly readTotal: (() => number) | undefined
  private readonly reporter: ProgressReporter

  constructor(reporter: ProgressReporter, name: OperationName, options: OperationOptions, now: number) {
    this.reporter = reporter
    this.name = name
    this.unit = options.unit
    this.readDone = options.done
    if (typeof options.total === 'function') this.readTotal = options.total
    else this.total = options.total ?? 0
    this.quiet = options.quiet ?? false
    this.fields = options.fields ?? {}
    this.startedAt = now
    this.lastLoggedAt = now
    this.refresh()
    this.initialDone = this.done
    this.samples.push({ at: now, done: this.done })
  }

  get running(): boolean {
    return this.endedAt === undefined
  }

  /** Reads the counters the operation follows. */
  refresh(): void {
    if (this.readDone !== undefined) this.done = this.readDone()
    if (this.readTotal !== undefined) this.total = this.readTotal()
  }

  /** Done over total, at most 1; undefined while the total is unknown. A completed run is 1. */
  get ratio(): number | undefined {
    if (this.outcome === 'completed') return 1
    if (!(this.total > 0)) return undefined
    return Math.min(1, Math.max(0, this.done / this.total))
  }

  /** Seconds left at the current rate; undefined when the total or the rate is unknown. */
  get etaSeconds(): number | undefined {
    if (!this.running) return 0
    if (!(this.total > 0) || this.rate === undefined || !(this.rate > 0)) return undefined
    return Math.max(0, this.total - this.done) / this.rate
  }

  /** Wall time since the start, or of the whole run once ended, ms. */
  durationMs(now: number): number {
    return (this.endedAt ?? now) - this.startedAt
  }

  /** Ends the run (`completed` by default; a replay cut short by a stop is `stopped`). */
  finish(outcome: OperationOutcome = 'completed'): void {
    this.reporter.finish(this, outcome)
  }
}

/** Rates are measured over this window of samples. */
export const RATE_WINDOW_MS = 10_000

/** What the metrics read (`ProgressReporter` fits). */
export interface OperationsLike {
  /** The running run of each operation, else its last run. */
  snapshot(): readonly OperationSnapshot[]
  /** Runs ended, by operation and outcome. */
  readonly ended: Readonly<Record<OperationName, Readonly<Record<OperationOutcome, number>>>>
}

export interface OperationSnapshot {
  readonly name: OperationName
  readonly unit: ProgressUnit
  readonly running: boolean
  readonly done: number
  readonly total: number
  readonly ratio: number | undefined
  readonly ratePerSecond: number | undefined
  readonly etaSeconds: number | undefined
  readonly durationMs: number
  readonly outcome: OperationOutcome | undefined
}

/** The parts of a tty.WriteStream the status line uses. */
export interface TerminalLike {
  write(text: string): unknown
  readonly columns?: number
}

const CLEAR_LINE = '\r\x1b[2K'

/**
 * A status line at the bottom of a terminal, and a pino destination that keeps it there: each
 * log line clears the status, is written, and the status is drawn again below it.
 */
export class TerminalStatus implements DestinationStream {
  private line = ''
  private readonly out: TerminalLike

  constructor(out: TerminalLike) {
    this.out = out
  }

  get columns(): number {
    return this.out.columns ?? 80
  }

  /** A log line (ends with a newline). */
  write(text: string): void {
    this.out.write(this.line === '' ? text : `${CLEAR_LINE}${text}${this.line}`)
  }

  /** Replaces the status line (cut to the terminal's width). */
  draw(status: string): void {
    const max = Math.max(10, this.columns - 1)
    const line = status.length > max ? status.slice(0, max) : status
    this.out.write(`${CLEAR_LINE}${line}`)
    this.line = line
  }

  clear(): void {
    if (this.line === '') return
    this.out.write(CLEAR_LINE)
    this.line = ''
  }

  get status(): string {
    return this.line
  }
}

export interface ProgressReporterOptions {
  readonly logger: Logger
  /** Draw a status line there (stderr when it is a terminal); without one, progress is logged. */
  readonly terminal?: TerminalStatus
  /** Without a terminal: a progress line per running operation this often. Default 10 s. */
  readonly logIntervalMs?: number
  /** How often counters are sampled (and the status line redrawn). Default 250 ms on a terminal, 1 s otherwise. */
  readonly sampleIntervalMs?: number
  readonly now?: () => number
  /** false: no timer, the caller calls `tick()` (tests). Default true. */
  readonly timer?: boolean
}

function emptyEnded(): Record<OperationName, Record<OperationOutcome, number>> {
  return Object.fromEntries(OPERATION_NAMES.map((n) => [n, { completed: 0, stopped: 0, failed: 0 }])) as Record<
    OperationName,
    Record<OperationOutcome, number>
  >
}

export class ProgressReporter implements OperationsLike {
  readonly ended = emptyEnded()
  private readonly logger: Logger
  private readonly terminal: TerminalStatus | undefined
  private readonly logIntervalMs: number
  private readonly sampleIntervalMs: number
  private readonly now: () => number
  private readonly useTimer: boolean
  private readonly running = new Set<Operation>()
  private readonly last = new Map<OperationName, Operation>()
  private timer: NodeJS.Timeout | undefined

  constructor(options: ProgressReporterOptions) {
    this.logger = options.logger
    this.terminal = options.terminal
    this.logIntervalMs = options.logIntervalMs ?? 10_000
    this.sampleIntervalMs = options.sampleIntervalMs ?? (options.terminal !== undefined ? 250 : 1000)
    this.now = options.now ?? Date.now
    this.useTimer = options.timer ?? true
  }

  /** Starts a run of `name`. Runs of different operations may overlap; each name has one at a time. */
  start(name: OperationName, options: OperationOptions): Operation {
    const previous = this.last.get(name)
    if (previous?.running) previous.finish('stopped')
    const op = new Operation(this, name, options, this.now())
    this.running.add(op)
    this.last.set(name, op)
    this.logger[op.quiet ? 'debug' : 'info']({ operation: name, unit: op.unit, done: op.done, total: op.total, ...op.fields }, `${name} started`)
    if (this.useTimer && this.timer === undefined) {
      this.timer = setInterval(() => this.tick(), this.sampleIntervalMs)
      this.timer.unref()
    }
    return op
  }

  /** Called by `Operation.finish`. */
  finish(op: Operation, outcome: OperationOutcome): void {
    if (!op.running) return
    op.refresh()
    const now = this.now()
    op.endedAt = now
    op.outcome = outcome
    this.running.delete(op)
    this.ended[op.name][outcome]++
    const seconds = (now - op.startedAt) / 1000
    const rate = seconds > 0 ? (op.done - op.initialDone) / seconds : undefined
    if (this.running.size === 0) {
      if (this.timer !== undefined) clearInterval(this.timer)
      this.timer = undefined
      this.terminal?.clear()
    }
    const level = outcome === 'failed' ? 'warn' : op.quiet ? 'debug' : 'info'
    this.logger[level](
      {
        operation: op.name,
        outcome,
        unit: op.unit,
        done: op.done,
        total: op.total,
        durationMs: now - op.startedAt,
        ...(rate !== undefined ? { ratePerSecond: roundRate(rate) } : {}),
        ...op.fields,
      },
      `${op.name} ${outcome === 'completed' ? 'finished' : outcome}`,
    )
  }

  /** Samples every running operation; draws the status line, or logs progress that is due. */
  tick(): void {
    const now = this.now()
    for (const op of this.running) {
      op.refresh()
      const samples = op.samples
      samples.push({ at: now, done: op.done })
      // Keep one sample at or before the window's start as the baseline.
      while (samples.length > 2 && (samples[1] as Sample).at <= now - RATE_WINDOW_MS) samples.shift()
      const base = samples[0] as Sample
      if (now > base.at) op.rate = (op.done - base.done) / ((now - base.at) / 1000)
      if (this.terminal === undefined && now - op.lastLoggedAt >= this.logIntervalMs) {
        op.lastLoggedAt = now
        this.logProgress(op)
      }
    }
    this.draw()
  }

  private logProgress(op: Operation): void {
    const ratio = op.ratio
    const eta = op.etaSeconds
    this.logger[op.quiet ? 'debug' : 'info'](
      {
        operation: op.name,
        unit: op.unit,
        done: op.done,
        total: op.total,
        ...(ratio !== undefined ? { ratio: round(ratio, 4) } : {}),
        ...(op.rate !== undefined ? { ratePerSecond: roundRate(op.rate) } : {}),
        ...(eta !== undefined ? { etaSeconds: round(eta) } : {}),
        ...op.fields,
      },
      `${op.name} ${ratio !== undefined ? `${(ratio * 100).toFixed(1)}%` : `${formatAmount(op.done, op.unit)} done`}`,
    )
  }

  private draw(): void {
    const terminal = this.terminal
    if (terminal === undefined) return
    const ops = [...this.running].filter((op) => !op.quiet)
    if (ops.length === 0) return terminal.clear()
    terminal.draw(ops.length === 1 ? statusLine(ops[0] as Operation, true) : ops.map((op) => statusLine(op, false)).join('  |  '))
  }

  /** The running run of each operation, else its last one. */
  snapshot(): OperationSnapshot[] {
    const now = this.now()
    return [...this.last.values()].map((op) => {
      if (op.running) op.refresh()
      return {
        name: op.name,
        unit: op.unit,
        running: op.running,
        done: op.done,
        total: op.total,
        ratio: op.ratio,
        ratePerSecond: op.rate,
        etaSeconds: op.etaSeconds,
        durationMs: op.durationMs(now),
        outcome: op.outcome,
      }
    })
  }

  /** Stops sampling; running operations are left as they are (their owner ends them). */
  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    this.terminal?.clear()
  }
}

const BAR_WIDTH = 24

/** `replay [#########---------------]  37.5%  3.0 MiB / 8.0 MiB  1.2 MiB/s  ETA 0:04` */
export function statusLine(op: Operation, bar: boolean): string {
  const ratio = op.ratio
  const parts: string[] = [op.name]
  if (bar && ratio !== undefined) {
    const filled = Math.round(ratio * BAR_WIDTH)
    parts.push(`[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`)
  }
  if (ratio !== undefined) parts.push(`${(ratio * 100).toFixed(1).padStart(5)}%`)
  parts.push(op.total > 0 ? `${formatAmount(op.done, op.unit)} / ${formatAmount(op.total, op.unit)}` : formatAmount(op.done, op.unit))
  if (op.rate !== undefined) parts.push(`${formatAmount(op.rate, op.unit)}/s`)
  const eta = op.etaSeconds
  if (eta !== undefined) parts.push(`ETA ${formatDuration(eta)}`)
  return parts.join('  ')
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

export function formatAmount(value: number, unit: ProgressUnit): string {
  if (unit === 'bytes') {
    let v = value
    let i = 0
    while (v >= 1024 && i < BYTE_UNITS.length - 1) {
      v /= 1024
      i++
    }
    return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${BYTE_UNITS[i]}`
  }
  const n = value >= 1e6 ? `${(value / 1e6).toFixed(2)}M` : value >= 1e4 ? `${(value / 1e3).toFixed(1)}k` : String(Math.round(value))
  return `${n} ${unit}`
}

/** `0:07`, `12:30`, `1:02:03` */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const sec = String(s % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`
}

function round(value: number, digits = 1): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

/** Whole units per second, except for slow operations where a tenth still says something. */
function roundRate(rate: number): number {
  return rate >= 100 ? Math.round(rate) : round(rate)
}
