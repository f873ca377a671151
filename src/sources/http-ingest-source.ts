import { REJECT_REASON_LIST, type RejectReason } from '../contracts/input-event.js'
import type { DecodeResult } from '../contracts/validate-event.js'
import { ErrorCodes, TagstreamError } from '../errors.js'
import type { Source, SourceRecord } from './source.js'

export interface HttpIngestSourceOptions {
  /** The source's name: its position is stored under it, and commit notifications are keyed by it. */
  readonly name: string
  /** The decoder of this source; the HTTP route validates with the same one before offering. */
  readonly decode: (raw: Uint8Array, wallNow: number) => DecodeResult
  /** Records the queue holds before offers are refused (HTTP 429). */
  readonly capacity: number
}

export type OfferResult =
  | { readonly accepted: true; readonly firstPosition: number; readonly lastPosition: number }
  | {
      readonly accepted: false
      /**
       * `full`: not enough room now (retry later); `too_large`: more records than the queue can ever
       * hold (split the batch); `closed`: not open yet, ended or closed.
       */
      readonly reason: 'full' | 'too_large' | 'closed'
      readonly queued: number
      readonly capacity: number
    }

/** Plain counters, read by the metrics at scrape time. */
export interface HttpIngestStats {
  /** Records taken into the queue. */
  acceptedRecords: number
  /** Valid records refused because the queue was full (the whole batch is refused). */
  refusedRecords: number
  /** Records the HTTP route rejected before offering them, by reason (never reach the engine). */
  readonly invalid: Record<RejectReason, number>
}

/** The subset of the engine the source listens to. */
export interface CommitNotifier {
  onCommitted(listener: (positions: ReadonlyMap<string, number>) => void): void
}

interface Waiter {
  readonly position: number
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
  readonly signal: AbortSignal | undefined
  readonly onAbort: (() => void) | undefined
}

/**
 * A source fed by HTTP requests: a bounded in-memory queue of records. Its position is a counter of
 * the records ever accepted, stored by the engine with the state they produced, so a restart
 * continues the count. Records accepted but not committed live only in memory: a client that needs
 * durability waits for the commit (`waitCommitted`), and may resend on failure (the engine
 * deduplicates by event id).
 */
export class HttpIngestSource implements Source {
  readonly name: string
  readonly decode: HttpIngestSourceOptions['decode']
  readonly capacity: number
  readonly stats: HttpIngestStats

  private queue: SourceRecord[] = []
  private head = 0
  /** Position of the next accepted record. */
  private next = 0
  /** Everything below this position is committed. */
  private committedNext = 0
  private state: 'new' | 'open' | 'ended' | 'closed' = 'new'
  /** Resolves a waiting `poll` when records arrive or the source ends. */
  private wake: (() => void) | undefined
  private readonly waiters: Waiter[] = []
  private drainedWaiters: (() => void)[] = []
  private readonly attachedTo = new WeakSet<CommitNotifier>()

  constructor(options: HttpIngestSourceOptions) {
    if (!Number.isInteger(options.capacity) || options.capacity < 1) {
      throw new RangeError(`capacity must be a positive integer, got ${options.capacity}`)
    }
    this.name = options.name
    this.decode = options.decode
    this.capacity = options.capacity
    this.stats = {
      acceptedRecords: 0,
      refusedRecords: 0,
      invalid: Object.fromEntries(REJECT_REASON_LIST.map((r) => [r, 0])) as Record<RejectReason, number>,
    }
  }

  /** Records waiting for the engine. */
  get queued(): number {
    return this.queue.length - this.head
  }

  /** Position the next accepted record will get. */
  get nextPosition(): number {
    return this.next
  }

  /** Every position below this one is committed. */
  get committedPosition(): number {
    return this.committedNext
  }

  /** Whether offers are taken (open, not ended). */
  get accepting(): boolean {
    return this.state === 'open'
  }

  /** Resolves `waitCommitted` calls from the engine's commits. Idempotent per engine. */
  attach(engine: CommitNotifier): void {
    if (this.attachedTo.has(engine)) return
    this.attachedTo.add(engine)
    engine.onCommitted((positions) => this.committed(positions))
  }

  /** Commit notification: `positions` maps source names to their committed next position. */
  committed(positions: ReadonlyMap<string, number>): void {
    const p = positions.get(this.name)
    if (p === undefined || p <= this.committedNext) return
    this.committedNext = p
    // Waiters are kept sorted by position: resolve from the front.
    let n = 0
    while (n < this.waiters.length && (this.waiters[n] as Waiter).position < p) n++
    if (n === 0) return
    for (const w of this.waiters.splice(0, n)) {
      w.signal?.removeEventListener('abort', w.onAbort as () => void)
      w.resolve()
    }
  }

  async open(position: number): Promise<void> {
    if (this.state !== 'new') throw new TagstreamError(ErrorCodes.ENGINE_STATE, `ingest source ${this.name} was already opened`)
    this.next = position
    this.committedNext = position
    this.state = 'open'
  }

  /** Takes the whole batch or none of it (so a client retries a batch, never a part of one). */
  offer(records: readonly Buffer[]): OfferResult {
    const queued = this.queued
    if (this.state !== 'open') return { accepted: false, reason: 'closed', queued, capacity: this.capacity }
    if (records.length > this.capacity) {
      this.stats.refusedRecords += records.length
      return { accepted: false, reason: 'too_large', queued, capacity: this.capacity }
    }
    if (queued + records.length > this.capacity) {
      this.stats.refusedRecords += records.length
      return { accepted: false, reason: 'full', queued, capacity: this.capacity }
    }
    const first = this.next
    for (const value of records) {
      const offset = this.next++
      this.queue.push({ value, offset, nextOffset: offset + 1 })
    }
    this.stats.acceptedRecords += records.length
    if (records.length > 0) this.wakeUp()
    return { accepted: true, firstPosition: first, lastPosition: this.next - 1 }
  }

  /** Counts a record the route rejected before offering (for the metrics). */
  countInvalid(reason: RejectReason): void {
    this.stats.invalid[reason]++
  }

  async poll(max: number, waitMs: number): Promise<SourceRecord[] | null> {
    if (this.state === 'new') throw new TagstreamError(ErrorCodes.ENGINE_STATE, `ingest source ${this.name} is not open`)
    if (this.queued === 0) {
      if (this.state !== 'open') return null
      if (waitMs > 0) await this.waitForRecords(waitMs)
      if (this.queued === 0) return this.state === 'open' ? [] : null
    }
    const end = Math.min(this.queue.length, this.head + max)
    const out = this.queue.slice(this.head, end)
    this.head = end
    if (this.head === this.queue.length) {
      this.queue = []
      this.head = 0
      const drained = this.drainedWaiters
      this.drainedWaiters = []
      for (const resolve of drained) resolve()
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head)
      this.head = 0
    }
    return out
  }

  /**
   * Resolves once the record at `position` is committed. Rejects when `signal` aborts (with its
   * reason) or when the source is closed first.
   */
  waitCommitted(position: number, signal?: AbortSignal): Promise<void> {
    if (position < this.committedNext) return Promise.resolve()
    if (this.state === 'closed') return Promise.reject(this.closedError())
    if (signal?.aborted === true) return Promise.reject(signal.reason)
    return new Promise<void>((resolve, reject) => {
      const onAbort =
        signal === undefined
          ? undefined
          : () => {
              const i = this.waiters.indexOf(waiter)
              if (i >= 0) this.waiters.splice(i, 1)
              reject(signal.reason)
            }
      const waiter: Waiter = { position, resolve, reject, signal, onAbort }
      // Positions mostly arrive in order: search from the back.
      let i = this.waiters.length
      while (i > 0 && (this.waiters[i - 1] as Waiter).position > position) i--
      this.waiters.splice(i, 0, waiter)
      if (onAbort !== undefined) signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Clients waiting for a commit. */
  get commitWaiters(): number {
    return this.waiters.length
  }

  /**
   * Stops taking offers; the engine still drains what is queued, then `poll` answers null.
   * The HTTP server calls this when it closes.
   */
  end(): void {
    if (this.state === 'open' || this.state === 'new') this.state = 'ended'
    this.wakeUp()
  }

  /** Resolves when the queue is empty (everything accepted was handed to the engine). */
  drained(): Promise<void> {
    if (this.queued === 0 || this.state === 'closed') return Promise.resolve()
    return new Promise((resolve) => this.drainedWaiters.push(resolve))
  }

  async close(): Promise<void> {
    this.state = 'closed'
    this.queue = []
    this.head = 0
    this.wakeUp()
    const err = this.closedError()
    for (const w of this.waiters.splice(0)) {
      w.signal?.removeEventListener('abort', w.onAbort as () => void)
      w.reject(err)
    }
    for (const resolve of this.drainedWaiters.splice(0)) resolve()
  }

  private closedError(): TagstreamError {
    return new TagstreamError(ErrorCodes.ENGINE_STATE, `ingest source ${this.name} closed before the records were committed`, { retriable: true })
  }

  private wakeUp(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }

  private waitForRecords(waitMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined
        resolve()
      }, waitMs)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}
