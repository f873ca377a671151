import type { TagChange } from '../contracts/tag-change.js'
import type { TagChangeSink } from './sink.js'

export interface ProgressSnapshot {
  readonly events: number
  readonly invalid: number
  readonly duplicates: number
  readonly users: number
  readonly tagChanges: number
}

/**
 * Console sink. `changes`: every tag change as one JSON line on stdout (for piping). `summary`: a
 * live progress line (events/s, users, tag changes) and a few recent changes per interval, so a
 * person watching sees users' tags move.
 */
export class StdoutSink implements TagChangeSink {
  readonly name = 'stdout'
  private readonly mode: 'summary' | 'changes'
  private readonly intervalMs: number
  private readonly out: NodeJS.WriteStream
  private pending: TagChange[] = []
  private samples: TagChange[] = []
  private sampleCount = 0
  private timer: NodeJS.Timeout | undefined
  private last: { at: number; events: number } | undefined

  constructor(options: { mode: 'summary' | 'changes'; intervalMs: number; out?: NodeJS.WriteStream }) {
    this.mode = options.mode
    this.intervalMs = options.intervalMs
    this.out = options.out ?? process.stdout
  }

  /** Starts the periodic summary; `snapshot` reads the engine's counters. */
  start(snapshot: () => ProgressSnapshot): void {
    if (this.mode !== 'summary') return
    this.last = { at: Date.now(), events: snapshot().events }
    this.timer = setInterval(() => this.report(snapshot()), this.intervalMs)
    this.timer.unref()
  }

  write(change: TagChange): void {
    if (this.mode === 'changes') {
      this.pending.push(change)
      return
    }
    // Reservoir of the interval's changes: a fair sample of what is happening, not only the last few.
    this.sampleCount++
    if (this.samples.length < 4) this.samples.push(change)
    else {
      const j = Math.floor(Math.random() * this.sampleCount)
      if (j < 4) this.samples[j] = change
    }
  }

  async flush(): Promise<void> {
    if (this.pending.length === 0) return
    const text = this.pending.map((c) => JSON.stringify(c)).join('\n') + '\n'
    this.pending = []
    if (!this.out.write(text)) await new Promise<void>((resolve) => this.out.once('drain', () => resolve()))
  }

  private report(s: ProgressSnapshot): void {
    const now = Date.now()
    const last = this.last ?? { at: now, events: s.events }
    const rate = ((s.events - last.events) * 1000) / Math.max(1, now - last.at)
    this.last = { at: now, events: s.events }
    const lines = [
      `[tagstream] ${fmt(rate)} events/s | ${fmt(s.events)} events | ${fmt(s.users)} users | ${fmt(s.tagChanges)} tag changes | ${fmt(s.invalid)} dead-lettered | ${fmt(s.duplicates)} duplicates`,
      ...this.samples.map((c) => `    ${c.userId} ${c.op.padEnd(7)} ${c.tag} ${describe(c)}  (${causeText(c)})`),
    ]
    this.samples = []
    this.sampleCount = 0
    this.out.write(lines.join('\n') + '\n')
  }

  async close(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    await this.flush()
  }
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

function describe(c: TagChange): string {
  if (c.op === 'entered') return `= ${String(c.to)}`
  if (c.op === 'left') return `(was ${String(c.from)})`
  return `${String(c.from)} -> ${String(c.to)}`
}

function causeText(c: TagChange): string {
  switch (c.cause.kind) {
    case 'event':
      return `event ${c.cause.eventId}`
    case 'timer':
      return `timer ${c.cause.name} at ${c.at}`
    case 'rescore':
      return 'rescore'
    case 'definition':
      return `definition v${c.cause.version}`
  }
}
