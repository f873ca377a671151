import { describe, expect, it } from 'vitest'
import { createLogger, type Logger } from '../src/log.js'
import { ProgressReporter, TerminalStatus, formatAmount, formatDuration, type TerminalLike } from '../src/progress.js'

/** A logger whose JSON lines land in `lines` (parsed). */
function capture(level: 'info' | 'debug' = 'info'): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  const logger = createLogger({ level, destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } })
  return { logger, lines }
}

/** A fake terminal: every write, raw. */
class FakeTerminal implements TerminalLike {
  readonly writes: string[] = []
  constructor(readonly columns = 100) {}
  write(text: string): boolean {
    this.writes.push(text)
    return true
  }
}

const CLEAR = '\r\x1b[2K'

describe('ProgressReporter without a terminal: log lines', () => {
  it('logs start, a progress line per interval with rate and ETA, and the end', () => {
    let now = 1_000_000
    const { logger, lines } = capture()
    const progress = new ProgressReporter({ logger, logIntervalMs: 2000, now: () => now, timer: false })
    let rows = 0
    const op = progress.start('replay', { unit: 'events', total: 1000, done: () => rows, fields: { files: 1 } })
    expect(lines).toEqual([
      expect.objectContaining({ level: 'info', operation: 'replay', unit: 'events', done: 0, total: 1000, files: 1, msg: 'replay started' }),
    ])
    now += 1000
    rows = 100
    progress.tick()
    // Not yet an interval since the start: sampled, not logged.
    expect(lines).toHaveLength(1)
    expect(op.rate).toBe(100)
    expect(op.etaSeconds).toBe(9)
    now += 1000
    rows = 250
    progress.tick()
    expect(lines).toHaveLength(2)
    expect(lines[1]).toEqual(
      expect.objectContaining({
        level: 'info',
        operation: 'replay',
        done: 250,
        total: 1000,
        ratio: 0.25,
        ratePerSecond: 125,
        etaSeconds: 6,
        msg: 'replay 25.0%',
      }),
    )
    now += 500
    rows = 1000
    op.finish()
    expect(lines[2]).toEqual(
      expect.objectContaining({ level: 'info', operation: 'replay', outcome: 'completed', done: 1000, total: 1000, durationMs: 2500, ratePerSecond: 400, msg: 'replay finished' }),
    )
    expect(op.running).toBe(false)
    expect(op.ratio).toBe(1)
    expect(op.etaSeconds).toBe(0)
    expect(progress.ended.replay).toEqual({ completed: 1, stopped: 0, failed: 0 })
  })

  it('measures the rate over the last 10 s, from where a resumed operation started', () => {
    let now = 0
    const { logger } = capture()
    const progress = new ProgressReporter({ logger, now: () => now, timer: false })
    // A replay resumed at byte 500 of 2000: the rate counts only what this run read.
    const op = progress.start('replay', { unit: 'bytes', total: 2000 })
    op.done = 500
    expect(op.initialDone).toBe(0)
    const resumed = progress.start('replay', { unit: 'bytes', total: 2000, done: () => 500 })
    expect(op.outcome).toBe('stopped')
    expect(resumed.initialDone).toBe(500)
    let done = 500
    const ticks: [number, number][] = [
      [5000, 1000], // 100/s
      [10_000, 1000], // stalled
      [15_000, 1100], // the first 5 s are out of the window: (1100 - 1000) / 10 s
    ]
    const rates: (number | undefined)[] = []
    const reader = progress.start('replay', { unit: 'bytes', total: 2000, done: () => done })
    for (const [at, d] of ticks) {
      now = at
      done = d
      progress.tick()
      rates.push(reader.rate)
    }
    expect(rates).toEqual([100, 50, 10])
    expect(reader.etaSeconds).toBe(90)
  })

  it('says nothing of ratio or ETA while the total is unknown, and logs failures as warnings', () => {
    let now = 0
    const { logger, lines } = capture()
    const progress = new ProgressReporter({ logger, logIntervalMs: 1000, now: () => now, timer: false })
    const op = progress.start('publish', { unit: 'users' })
    now = 1000
    op.done = 20
    progress.tick()
    expect(op.ratio).toBeUndefined()
    expect(op.etaSeconds).toBeUndefined()
    expect(lines[1]).toEqual(expect.objectContaining({ operation: 'publish', done: 20, total: 0, ratePerSecond: 20, msg: 'publish 20 users done' }))
    expect(lines[1]).not.toHaveProperty('ratio')
    expect(lines[1]).not.toHaveProperty('etaSeconds')
    op.finish('failed')
    expect(lines[2]).toEqual(expect.objectContaining({ level: 'warn', operation: 'publish', outcome: 'failed', msg: 'publish failed' }))
    expect(progress.ended.publish).toEqual({ completed: 0, stopped: 0, failed: 1 })
  })

  it('logs quiet operations (a replay\'s daily sweeps) at debug only, progress lines included', () => {
    for (const level of ['info', 'debug'] as const) {
      let now = 0
      const { logger, lines } = capture(level)
      const progress = new ProgressReporter({ logger, logIntervalMs: 1000, now: () => now, timer: false })
      const op = progress.start('rescore', { unit: 'users', total: 10, quiet: true })
      now = 1000
      op.done = 5
      progress.tick()
      op.finish()
      expect(lines.map((l) => [l.level, l.msg])).toEqual(
        level === 'info'
          ? []
          : [
              ['debug', 'rescore started'],
              ['debug', 'rescore 50.0%'],
              ['debug', 'rescore finished'],
            ],
      )
    }
  })

  it('samples on its own timer, and stops it when nothing runs', async () => {
    const { logger, lines } = capture()
    const progress = new ProgressReporter({ logger, logIntervalMs: 100, sampleIntervalMs: 20 })
    const op = progress.start('restore', { unit: 'users', total: 100 })
    op.done = 40
    await new Promise((r) => setTimeout(r, 300))
    const progressLines = lines.filter((l) => l.msg === 'restore 40.0%')
    expect(progressLines.length).toBeGreaterThanOrEqual(1)
    op.finish()
    const count = lines.length
    await new Promise((r) => setTimeout(r, 150))
    expect(lines).toHaveLength(count)
  })
})

describe('ProgressReporter on a terminal: a status line', () => {
  it('draws a bar with rate and ETA, keeps it below log lines, and clears it at the end', () => {
    let now = 0
    const tty = new FakeTerminal(100)
    const terminal = new TerminalStatus(tty)
    const lines: string[] = []
    const logger = createLogger({
      destination: {
        write: (s: string) => {
          lines.push(s)
          terminal.write(s)
        },
      },
    })
    const progress = new ProgressReporter({ logger, terminal, logIntervalMs: 1000, now: () => now, timer: false })
    const op = progress.start('replay', { unit: 'bytes', total: 4 * 1024 * 1024 })
    tty.writes.length = 0
    now = 2000
    op.done = 1024 * 1024
    progress.tick()
    const status = 'replay  [######------------------]   25.0%  1.0 MiB / 4.0 MiB  512.0 KiB/s  ETA 0:06'
    expect(tty.writes).toEqual([`${CLEAR}${status}`])
    expect(terminal.status).toBe(status)
    // No progress log lines on a terminal, however long it runs.
    now = 60_000
    progress.tick()
    expect(lines).toHaveLength(1)

    // A log line clears the status, is written, and the status comes back under it.
    tty.writes.length = 0
    logger.info('hello')
    expect(tty.writes).toHaveLength(1)
    const written = tty.writes[0] as string
    expect(written.startsWith(CLEAR)).toBe(true)
    expect(written.endsWith(`\n${terminal.status}`)).toBe(true)
    expect(JSON.parse(written.slice(CLEAR.length, written.indexOf('\n')))).toEqual(expect.objectContaining({ msg: 'hello' }))

    tty.writes.length = 0
    op.finish()
    // Cleared first, then the end line written on a clean line.
    expect(tty.writes[0]).toBe(CLEAR)
    expect(tty.writes[1]).toMatch(/^\{.*"msg":"replay finished"\}\n$/)
    expect(terminal.status).toBe('')
  })

  it('puts concurrent operations on one line without bars, leaves quiet ones out, cuts to the width', () => {
    let now = 0
    const tty = new FakeTerminal(60)
    const terminal = new TerminalStatus(tty)
    const { logger } = capture()
    const progress = new ProgressReporter({ logger, terminal, now: () => now, timer: false })
    const replay = progress.start('replay', { unit: 'bytes', total: 1000 })
    progress.start('rescore', { unit: 'users', total: 50, quiet: true })
    const publish = progress.start('publish', { unit: 'users', total: 200 })
    now = 1000
    replay.done = 500
    publish.done = 20
    progress.tick()
    const full = 'replay   50.0%  500 B / 1000 B  500 B/s  ETA 0:01  |  publish   10.0%  20 users / 200 users  20 users/s  ETA 0:09'
    expect(terminal.status).toBe(full.slice(0, 59))
  })
})

describe('formatting', () => {
  it('shows bytes in binary units and counts compactly', () => {
    expect(formatAmount(512, 'bytes')).toBe('512 B')
    expect(formatAmount(1536, 'bytes')).toBe('1.5 KiB')
    expect(formatAmount(3 * 1024 ** 3, 'bytes')).toBe('3.0 GiB')
    expect(formatAmount(9999, 'users')).toBe('9999 users')
    expect(formatAmount(12_345, 'users')).toBe('12.3k users')
    expect(formatAmount(2_500_000, 'events')).toBe('2.50M events')
  })

  it('shows durations as m:ss or h:mm:ss', () => {
    expect(formatDuration(7.4)).toBe('0:07')
    expect(formatDuration(750)).toBe('12:30')
    expect(formatDuration(3723)).toBe('1:02:03')
  })
})
