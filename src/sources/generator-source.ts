import { setTimeout as sleep } from 'node:timers/promises'
import type { DecodeResult } from '../contracts/validate-event.js'
import { createLiveWorkload, encodeNdjsonLine } from '../workload/generator.js'
import type { Source, SourceRecord } from './source.js'

export interface GeneratorSourceOptions {
  readonly name: string
  readonly decode: (raw: Uint8Array, wallNow: number) => DecodeResult
  readonly users: number
  readonly eventsPerSecond: number
  readonly seed: number
  readonly limit?: number
  readonly timeScale: number
  readonly invalidRatio: number
  /** Simulated time of the stream's first event, epoch ms. */
  readonly startAt: number
  readonly now?: () => number
}

/**
 * The built-in demo stream: realistic shop traffic at a steady wall-clock rate, event time running
 * `timeScale` times faster than the wall clock so that windows expire and users churn within a
 * minute of watching. Records go through the same decoding and validation as any other source.
 * Its position is the number of records produced. Event time is a function of the position
 * (`startAt + position / eventsPerSecond * timeScale`), never of the wall clock, so a restart
 * continues the simulated timeline where it stopped, with fresh event ids.
 */
export class GeneratorSource implements Source {
  readonly name: string
  readonly decode: GeneratorSourceOptions['decode']
  private readonly options: GeneratorSourceOptions
  private readonly now: () => number
  private workload: ReturnType<typeof createLiveWorkload> | undefined
  private position = 0
  private startPosition = 0
  private startedAt = 0

  constructor(options: GeneratorSourceOptions) {
    this.options = options
    this.name = options.name
    this.decode = options.decode
    this.now = options.now ?? Date.now
  }

  async open(position: number): Promise<void> {
    this.position = position
    this.startPosition = position
    this.startedAt = this.now()
    // A new run continues the stream: another seed, and ids prefixed by where this run starts.
    const { seed, users, timeScale, invalidRatio, startAt, eventsPerSecond } = this.options
    this.workload = createLiveWorkload({
      seed: seed + position,
      users,
      timeScale,
      invalidRatio,
      startTs: startAt + (position * 1000 * timeScale) / eventsPerSecond,
    })
  }

  async poll(max: number, waitMs: number): Promise<SourceRecord[] | null> {
    const workload = this.workload
    if (workload === undefined) throw new Error(`generator source ${this.name} is not open`)
    const { limit, eventsPerSecond } = this.options
    if (limit !== undefined && this.position >= limit) return null
    let now = this.now()
    let due = this.startPosition + Math.floor(((now - this.startedAt) * eventsPerSecond) / 1000) - this.position
    if (due <= 0) {
      const untilNext = Math.ceil(((1 - due) * 1000) / eventsPerSecond)
      await sleep(Math.min(waitMs, untilNext))
      now = this.now()
      due = this.startPosition + Math.floor(((now - this.startedAt) * eventsPerSecond) / 1000) - this.position
      if (due <= 0) return []
    }
    let n = Math.min(due, max)
    if (limit !== undefined) n = Math.min(n, limit - this.position)
    const prefix = `r${this.startPosition.toString(36)}.`
    const records: SourceRecord[] = []
    for (let i = 0; i < n; i++) {
      // The simulated clock follows the position, at the configured rate.
      const generated = workload.next((this.position * 1000) / eventsPerSecond)
      // Generated records may share event objects (duplicates): copy, never mutate.
      const record =
        generated.kind === 'event' ? { ...generated, event: { ...generated.event, eventId: prefix + generated.event.eventId } } : generated
      const line = encodeNdjsonLine(record)
      records.push({ value: line.subarray(0, line.length - 1), offset: this.position, nextOffset: this.position + 1 })
      this.position++
    }
    return records
  }

  async close(): Promise<void> {
    this.workload = undefined
  }
}
