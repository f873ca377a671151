/**
 * Deterministic e-commerce workload: a customer base with power-law activity, browsing sessions
 * (view -> add_to_cart -> purchase), refunds, profile updates, late and duplicate events, and a
 * configurable share of malformed records of every kind the validator must reject.
 *
 * Everything is a function of the seed (and, in live mode, of the sequence of wall-clock values
 * passed in): no Math.random, no Date.now.
 */
import { open, type FileHandle } from 'node:fs/promises'
import { Packr } from 'msgpackr'
import type { RejectReason } from '../contracts/input-event.js'
import { CdfSampler, Prng, zipfSampler } from './prng.js'

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

export interface WorkloadOptions {
  seed: number
  /** Size of the customer base (user ids `u000000` .. ). */
  users: number
  /** Total number of records, valid events (duplicates included) plus invalid records. */
  events: number
  /** Event time of the first record, epoch ms. Default 2024-01-01T00:00:00Z. */
  startTs?: number
  /** Event time span of the whole stream, in days (fractions allowed). Default 30. */
  days?: number
  /** Share of records that are exact re-sends of a recent earlier event. Default 0.005. */
  duplicateRatio?: number
  /** Share of events whose time is moved back by 1 minute .. 4 hours (out of order). Default 0.02. */
  lateRatio?: number
  /** Share of records that are malformed, spread evenly over INVALID_KINDS. Default 0.001. */
  invalidRatio?: number
}

export interface WorkloadEvent {
  eventId: string
  userId: string
  type: string
  ts: number
  properties: Record<string, unknown>
}

export const INVALID_KINDS = [
  'invalid_json',
  'binary_garbage',
  'missing_user_id',
  'numeric_user_id',
  'missing_event_id',
  'missing_type',
  'non_time_ts',
  'future_ts',
  'properties_array',
  'oversized_record',
  'json_array',
] as const
export type InvalidKind = (typeof INVALID_KINDS)[number]

/**
 * The rejection each invalid kind gets from the event decoder (src/contracts/validate-event.ts) with
 * JSON format and default limits (maxRecordBytes 65536, maxFutureMs one day). Every malformed record
 * is otherwise a valid event, so the reason is unambiguous.
 */
export const INVALID_KIND_REJECT_REASON: Readonly<Record<InvalidKind, RejectReason>> = Object.freeze({
  invalid_json: 'invalid_json',
  binary_garbage: 'invalid_json',
  missing_user_id: 'missing_field',
  numeric_user_id: 'wrong_type',
  missing_event_id: 'missing_field',
  missing_type: 'missing_field',
  non_time_ts: 'invalid_timestamp',
  future_ts: 'timestamp_in_future',
  properties_array: 'wrong_type',
  oversized_record: 'record_too_large',
  json_array: 'not_an_object',
})

/** Size of an `oversized_record` line, in bytes (newline excluded); always > 70,000. */
export const OVERSIZED_RECORD_MIN_BYTES = 70_001

export type GeneratedRecord =
  | { kind: 'event'; event: WorkloadEvent; duplicate: boolean }
  | { kind: 'invalid'; invalidKind: InvalidKind; bytes: Buffer }

export interface LiveWorkloadOptions {
  seed: number
  users: number
  /** Event time runs this many times faster than the wall clock. */
  timeScale: number
  invalidRatio: number
  /** Share of exact re-sends of a recent event. Default 0.005. */
  duplicateRatio?: number
  /** Share of events moved back by 1 minute .. 4 hours of event time. Default 0.02. */
  lateRatio?: number
  /** Event time of the first call; default: the first wallNow (event time = wall time at the start). */
  startTs?: number
}

export interface LiveWorkload {
  next(wallNowMs: number): GeneratedRecord
}

export interface WriteResult {
  /** Valid event records written, duplicates included. */
  events: number
  /** Malformed records written. */
  invalid: number
  /** Of `events`, how many are re-sends. */
  duplicates: number
  /** Bytes written. */
  bytes: number
}

export const WORKLOAD_DEFAULTS = Object.freeze({
  startTs: Date.UTC(2024, 0, 1),
  days: 30,
  duplicateRatio: 0.005,
  lateRatio: 0.02,
  invalidRatio: 0.001,
})

// ---------------------------------------------------------------------------------------------
// Catalog: fixed, realistic lists
// ---------------------------------------------------------------------------------------------

export const CATEGORIES = [
  'fresh-food',
  'grocery',
  'electronics',
  'fashion',
  'home',
  'beauty',
  'toys',
  'books',
  'sports',
  'garden',
  'pets',
  'health',
] as const
/** Share of shoppers whose preferred category it is, and of off-preference browsing. */
const CATEGORY_POPULARITY = [14, 16, 8, 12, 9, 8, 5, 7, 6, 4, 6, 5]
/** Median unit price in EUR per category (log-normal around it). */
const CATEGORY_MEDIAN_PRICE = [6, 9, 120, 40, 35, 18, 22, 14, 45, 28, 20, 15]
const PRICE_SIGMA = 0.65
const PRODUCTS_PER_CATEGORY = 500

export const CITIES = [
  'Berlin',
  'Madrid',
  'Rome',
  'Paris',
  'Vienna',
  'Hamburg',
  'Warsaw',
  'Budapest',
  'Barcelona',
  'Munich',
  'Milan',
  'Prague',
  'Cologne',
  'Stockholm',
  'Amsterdam',
  'Brussels',
  'Lyon',
  'Dublin',
  'Lisbon',
  'Copenhagen',
] as const
const CITY_WEIGHTS = [37, 33, 28, 21, 19, 18, 18, 17, 16, 15, 14, 13, 11, 10, 9, 8, 7, 6, 5, 6]

export const MEMBERSHIP_LEVELS = ['basic', 'silver', 'gold', 'platinum'] as const
const MEMBERSHIP_WEIGHTS = [62, 24, 11, 3]

/** Activity by hour of day (UTC; shoppers are in Europe, evening peak). */
const HOURLY_ACTIVITY = [
  0.25, 0.12, 0.07, 0.05, 0.05, 0.08, 0.2, 0.45, 0.7, 0.85, 0.95, 1.05, 1.15, 1.05, 1.0, 1.0, 1.05, 1.2, 1.45,
  1.65, 1.7, 1.45, 1.0, 0.55,
]
/** Activity by day of week (0 = Sunday). */
const WEEKDAY_ACTIVITY = [1.15, 0.95, 0.95, 1.0, 1.0, 1.02, 1.1]

const NON_TIME_VALUES = ['yesterday', 'tomorrow', 'now', 'last week', 'not-a-date', 'soon', 'N/A', '31/02/2024 25:61']
const YEAR_2400_MS = Date.UTC(2400, 0, 1)
const DAY_MS = 86_400_000
const HOUR_MS = 3_600_000
const LATE_MIN_MS = 60_000
const LATE_MAX_MS = 4 * HOUR_MS
/**
 * Users' activity: session starts per user follow Zipf-Mandelbrot(exponent, offset) over a random
 * ranking. Top 1% of users: ~20% of events with 2,000 users, ~30% with 10,000, ~47% with 1,000,000;
 * the heaviest single user stays at or below ~2%.
 */
const USER_ZIPF_EXPONENT = 0.9
const USER_ZIPF_OFFSET = 5
const DUPLICATE_RING = 512
/** Target event-time gap between two events of one session, which sets how many sessions interleave. */
const SESSION_EVENT_GAP_MS = 45_000

const OVERSIZED_FILLER = (() => {
  const words = 'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt '
  return words.repeat(Math.ceil(OVERSIZED_RECORD_MIN_BYTES / words.length)).slice(0, OVERSIZED_RECORD_MIN_BYTES)
})()

const EVENT_NEWLINE = 0x0a

// ---------------------------------------------------------------------------------------------
// Simulation core, shared by the batch and live modes
// ---------------------------------------------------------------------------------------------

interface Session {
  user: number
  category: number
  viewsLeft: number
  /** 0 = opening (profile/refund), 1 = browsing, 2 = checkout, 3 = over */
  phase: number
  pendingCart: boolean
  lastProduct: number
  cartItems: number
  cartTotal: number
}

function round2(x: number): number {
  return Math.round(x * 100) / 100
}

function checkRatio(name: string, v: number): number {
  if (!(v >= 0 && v <= 1)) throw new RangeError(`${name} must be within [0, 1], got ${v}`)
  return v
}

class Simulator {
  /** The stream's random source (shared with the batch/live drivers, so one seed drives everything). */
  readonly prng: Prng
  private readonly userIdWidth: number
  private readonly userZipf: CdfSampler
  private readonly rankToUser: Uint32Array
  private readonly preferred: Uint8Array
  private readonly homeCity: Uint8Array
  private readonly membership: Uint8Array
  private readonly propensity: Float32Array
  private readonly seen: Uint8Array
  private readonly lastPurchase: Float64Array
  private readonly categorySampler = new CdfSampler(CATEGORY_POPULARITY)
  private readonly citySampler = new CdfSampler(CITY_WEIGHTS)
  private readonly productSampler = zipfSampler(PRODUCTS_PER_CATEGORY, 1.0)
  private readonly productIds: string[] = []
  private readonly productPrices: Float64Array
  private readonly sessions: Session[] = []
  private readonly ring: WorkloadEvent[] = []
  private ringHead = 0
  private seq = 0
  private invalidCount = 0
  private readonly invalidOrder: InvalidKind[] = [...INVALID_KINDS]

  constructor(
    seed: number,
    users: number,
    concurrentSessions: number,
    private readonly lateRatio: number,
  ) {
    if (!Number.isInteger(users) || users < 1 || users > 0xffffffff) {
      throw new RangeError(`users must be a positive integer, got ${users}`)
    }
    checkRatio('lateRatio', lateRatio)
    this.userIdWidth = Math.max(6, String(users - 1).length)
    this.prng = new Prng(seed, 1)

    // The population and the catalog come from their own stream: they do not depend on options
    // other than `users`, so the same seed gives the same customers in batch and live mode.
    const setup = new Prng(seed, 2)
    const prices = new Float64Array(CATEGORIES.length * PRODUCTS_PER_CATEGORY)
    for (let c = 0; c < CATEGORIES.length; c++) {
      for (let p = 0; p < PRODUCTS_PER_CATEGORY; p++) {
        const i = c * PRODUCTS_PER_CATEGORY + p
        this.productIds.push(`p${String(c * 1000 + p).padStart(5, '0')}`)
        prices[i] = Math.max(0.49, round2(setup.logNormal(CATEGORY_MEDIAN_PRICE[c] as number, PRICE_SIGMA)))
      }
    }
    this.productPrices = prices

    this.userZipf = zipfSampler(users, USER_ZIPF_EXPONENT, USER_ZIPF_OFFSET)
    const rankToUser = new Uint32Array(users)
    for (let i = 0; i < users; i++) rankToUser[i] = i
    setup.shuffle(rankToUser)
    this.rankToUser = rankToUser

    const membershipSampler = new CdfSampler(MEMBERSHIP_WEIGHTS)
    this.preferred = new Uint8Array(users)
    this.homeCity = new Uint8Array(users)
    this.membership = new Uint8Array(users)
    this.propensity = new Float32Array(users)
    for (let u = 0; u < users; u++) {
      this.preferred[u] = this.categorySampler.sample(setup)
      this.homeCity[u] = this.citySampler.sample(setup)
      this.membership[u] = membershipSampler.sample(setup)
      // Share of cart sessions that convert: most users are hesitant, a few buy almost always.
      this.propensity[u] = 0.1 + 0.8 * Math.pow(setup.next(), 1.5)
    }
    this.seen = new Uint8Array(users)
    this.lastPurchase = new Float64Array(users)

    const k = Math.max(1, Math.min(4096, Math.round(concurrentSessions)))
    for (let i = 0; i < k; i++) {
      const s: Session = {
        user: 0,
        category: 0,
        viewsLeft: 0,
        phase: 3,
        pendingCart: false,
        lastProduct: 0,
        cartItems: 0,
        cartTotal: 0,
      }
      this.startSession(s)
      this.sessions.push(s)
    }
  }

  userId(u: number): string {
    return 'u' + String(u).padStart(this.userIdWidth, '0')
  }

  private nextEventId(): string {
    return 'e' + (this.seq++).toString(36)
  }

  private sampleUser(): number {
    return this.rankToUser[this.userZipf.sample(this.prng)] as number
  }

  private startSession(s: Session): void {
    const prng = this.prng
    const u = this.sampleUser()
    s.user = u
    s.category = prng.next() < 0.75 ? (this.preferred[u] as number) : this.categorySampler.sample(prng)
    s.viewsLeft = 1 + Math.min(40, Math.floor(prng.exponential(3.5)))
    s.phase = 0
    s.pendingCart = false
    s.cartItems = 0
    s.cartTotal = 0
  }

  private pickProduct(category: number): number {
    return category * PRODUCTS_PER_CATEGORY + this.productSampler.sample(this.prng)
  }

  /** Next event of session s, or null when the session is over. */
  private step(s: Session, ts: number): WorkloadEvent | null {
    const prng = this.prng
    const u = s.user
    if (s.phase === 0) {
      s.phase = 1
      let ev: WorkloadEvent | null = null
      if (this.seen[u] === 0) {
        this.seen[u] = 1
        // A new customer usually fills in the profile first.
        if (prng.next() < 0.6) ev = this.profileUpdate(u, ts, false)
      } else if (this.lastPurchase[u]! > 0 && prng.next() < 0.04) {
        const full = this.lastPurchase[u] as number
        const amount = prng.next() < 0.7 ? full : Math.max(0.01, round2(full * prng.uniform(0.1, 0.9)))
        this.lastPurchase[u] = 0
        ev = { eventId: this.nextEventId(), userId: this.userId(u), type: 'refund', ts, properties: { amount } }
      } else if (prng.next() < 0.02) {
        ev = this.profileUpdate(u, ts, true)
      }
      if (ev !== null) return ev
    }
    if (s.phase === 1) {
      if (s.pendingCart) {
        s.pendingCart = false
        const p = s.lastProduct
        const price = this.productPrices[p] as number
        s.cartItems++
        s.cartTotal += price
        return {
          eventId: this.nextEventId(),
          userId: this.userId(u),
          type: 'add_to_cart',
          ts,
          properties: { category: CATEGORIES[(p / PRODUCTS_PER_CATEGORY) | 0], productId: this.productIds[p], price },
        }
      }
      if (s.viewsLeft > 0) {
        s.viewsLeft--
        const category = prng.next() < 0.8 ? s.category : this.categorySampler.sample(prng)
        const p = this.pickProduct(category)
        s.lastProduct = p
        s.pendingCart = prng.next() < 0.1 + 0.25 * (this.propensity[u] as number)
        return {
          eventId: this.nextEventId(),
          userId: this.userId(u),
          type: 'view',
          ts,
          properties: { category: CATEGORIES[category], productId: this.productIds[p] },
        }
      }
      s.phase = 2
    }
    if (s.phase === 2) {
      s.phase = 3
      if (s.cartItems > 0 && prng.next() < (this.propensity[u] as number)) {
        const amount = Math.max(0.5, round2(s.cartTotal))
        this.lastPurchase[u] = amount
        return {
          eventId: this.nextEventId(),
          userId: this.userId(u),
          type: 'purchase',
          ts,
          properties: { amount, currency: 'EUR', category: CATEGORIES[s.category], items: s.cartItems },
        }
      }
    }
    return null
  }

  private profileUpdate(u: number, ts: number, mayChange: boolean): WorkloadEvent {
    const prng = this.prng
    if (mayChange) {
      // Home city changes rarely; membership moves up now and then, down seldom.
      if (prng.next() < 0.05) this.homeCity[u] = this.citySampler.sample(prng)
      const r = prng.next()
      const m = this.membership[u] as number
      if (r < 0.2 && m < MEMBERSHIP_LEVELS.length - 1) this.membership[u] = m + 1
      else if (r > 0.96 && m > 0) this.membership[u] = m - 1
    }
    return {
      eventId: this.nextEventId(),
      userId: this.userId(u),
      type: 'profile_update',
      ts,
      properties: { city: CITIES[this.homeCity[u] as number], membership_level: MEMBERSHIP_LEVELS[this.membership[u] as number] },
    }
  }

  /** A fresh (non-duplicate) valid event at event time `clock`, possibly moved back (late). */
  event(clock: number, lateFloor: number): WorkloadEvent {
    const prng = this.prng
    let ts = clock
    if (this.lateRatio > 0 && prng.next() < this.lateRatio) {
      ts = Math.max(lateFloor, Math.floor(clock - prng.logUniform(LATE_MIN_MS, LATE_MAX_MS)))
    }
    const sessions = this.sessions
    const s = sessions[prng.int(sessions.length)] as Session
    let ev = this.step(s, ts)
    while (ev === null) {
      this.startSession(s)
      ev = this.step(s, ts)
    }
    this.ring[this.ringHead] = ev
    this.ringHead = (this.ringHead + 1) % DUPLICATE_RING
    return ev
  }

  /** A recent earlier event, to be re-sent; null before the first event. */
  duplicate(): WorkloadEvent | null {
    const n = this.ring.length
    if (n === 0) return null
    return this.ring[this.prng.int(n)] as WorkloadEvent
  }

  /** A malformed record; the kinds come round-robin (shuffled per round) so they are evenly spread. */
  invalid(clock: number): { kind: 'invalid'; invalidKind: InvalidKind; bytes: Buffer } {
    const prng = this.prng
    const order = this.invalidOrder
    const slot = this.invalidCount % order.length
    if (slot === 0) prng.shuffle(order)
    this.invalidCount++
    const kind = order[slot] as InvalidKind

    const u = this.sampleUser()
    const category = this.preferred[u] as number
    const p = this.pickProduct(category)
    const eventId = this.nextEventId()
    const userId = this.userId(u)
    const properties = { category: CATEGORIES[category], productId: this.productIds[p] }
    let text: string
    switch (kind) {
      case 'invalid_json': {
        const full = JSON.stringify({ eventId, userId, type: 'view', ts: clock, properties })
        // Any strict prefix of an object's JSON text is invalid JSON (the closing brace is missing).
        text = full.slice(0, 1 + prng.int(full.length - 1))
        break
      }
      case 'binary_garbage': {
        const bytes = Buffer.allocUnsafe(8 + prng.int(200))
        for (let i = 0; i < bytes.length; i++) {
          let b = prng.nextU32() & 0xff
          if (b === 0x0a || b === 0x0d) b |= 0x80 // never a line break inside a record
          bytes[i] = b
        }
        bytes[0] = 0xff // never valid UTF-8, never the start of a JSON value
        return { kind: 'invalid', invalidKind: kind, bytes }
      }
      case 'missing_user_id':
        text = JSON.stringify({ eventId, type: 'view', ts: clock, properties })
        break
      case 'numeric_user_id':
        text = JSON.stringify({ eventId, userId: u, type: 'view', ts: clock, properties })
        break
      case 'missing_event_id':
        text = JSON.stringify({ userId, type: 'view', ts: clock, properties })
        break
      case 'missing_type':
        text = JSON.stringify({ eventId, userId, ts: clock, properties })
        break
      case 'non_time_ts':
        text = JSON.stringify({ eventId, userId, type: 'view', ts: prng.pick(NON_TIME_VALUES), properties })
        break
      case 'future_ts':
        text = JSON.stringify({ eventId, userId, type: 'view', ts: YEAR_2400_MS + prng.int(365 * DAY_MS), properties })
        break
      case 'properties_array':
        text = JSON.stringify({ eventId, userId, type: 'view', ts: clock, properties: [properties.category, properties.productId] })
        break
      case 'oversized_record':
        text = JSON.stringify({ eventId, userId, type: 'view', ts: clock, properties: { ...properties, note: OVERSIZED_FILLER } })
        break
      case 'json_array':
        text = JSON.stringify([eventId, userId, 'view', clock, properties])
        break
    }
    return { kind: 'invalid', invalidKind: kind, bytes: Buffer.from(text, 'utf8') }
  }
}

// ---------------------------------------------------------------------------------------------
// Batch mode
// ---------------------------------------------------------------------------------------------

/**
 * Event time of record i of n: the stream spans [startTs, startTs + span), denser in the evening
 * and at weekends. Precomputed cumulative activity per hour; the cursor only moves forward because
 * the positions asked for increase.
 */
class SimulatedClock {
  private readonly cum: Float64Array
  private readonly hours: number
  private cursor = 0

  constructor(
    private readonly startTs: number,
    private readonly span: number,
  ) {
    const hours = Math.max(1, Math.ceil(span / HOUR_MS))
    const cum = new Float64Array(hours + 1)
    for (let h = 0; h < hours; h++) {
      const t = startTs + h * HOUR_MS
      const d = new Date(t) // a fixed time, not the wall clock
      const len = Math.min(HOUR_MS, span - h * HOUR_MS)
      const w = (HOURLY_ACTIVITY[d.getUTCHours()] as number) * (WEEKDAY_ACTIVITY[d.getUTCDay()] as number)
      cum[h + 1] = (cum[h] as number) + (w * len) / HOUR_MS
    }
    this.cum = cum
    this.hours = hours
  }

  /** Event time at position x in [0, 1) of the stream's activity; x must not decrease between calls. */
  at(x: number): number {
    const cum = this.cum
    const target = x * (cum[this.hours] as number)
    let h = this.cursor
    while (h < this.hours - 1 && (cum[h + 1] as number) <= target) h++
    this.cursor = h
    const lo = cum[h] as number
    const width = (cum[h + 1] as number) - lo
    const len = Math.min(HOUR_MS, this.span - h * HOUR_MS)
    const within = width > 0 ? Math.min(1, (target - lo) / width) : 0
    const ts = this.startTs + h * HOUR_MS + Math.floor(within * len)
    return Math.min(ts, this.startTs + this.span - 1)
  }
}

/** Pull-based batch stream; generateWorkload and writeNdjsonFile are thin wrappers around it. */
class BatchWorkload {
  private readonly sim: Simulator
  private readonly clock: SimulatedClock
  private readonly total: number
  private readonly startTs: number
  private i = 0
  private invalidLeft: number
  private duplicatesLeft: number

  constructor(options: WorkloadOptions) {
    const { seed, users, events } = options
    if (!Number.isInteger(events) || events < 0) throw new RangeError(`events must be a non-negative integer, got ${events}`)
    const startTs = options.startTs ?? WORKLOAD_DEFAULTS.startTs
    const days = options.days ?? WORKLOAD_DEFAULTS.days
    if (!Number.isFinite(startTs)) throw new RangeError(`startTs must be a finite number, got ${startTs}`)
    if (!(days > 0) || !Number.isFinite(days)) throw new RangeError(`days must be a positive number, got ${days}`)
    const duplicateRatio = checkRatio('duplicateRatio', options.duplicateRatio ?? WORKLOAD_DEFAULTS.duplicateRatio)
    const invalidRatio = checkRatio('invalidRatio', options.invalidRatio ?? WORKLOAD_DEFAULTS.invalidRatio)
    const lateRatio = options.lateRatio ?? WORKLOAD_DEFAULTS.lateRatio
    this.invalidLeft = Math.round(events * invalidRatio)
    this.duplicatesLeft = Math.min(events - this.invalidLeft, Math.round(events * duplicateRatio))
    if (this.duplicatesLeft < 0) throw new RangeError('invalidRatio + duplicateRatio must not exceed 1')

    const span = Math.max(1, Math.round(days * DAY_MS))
    this.total = events
    this.startTs = Math.floor(startTs)
    this.clock = new SimulatedClock(this.startTs, span)
    const meanGap = span / Math.max(1, events)
    this.sim = new Simulator(seed, users, SESSION_EVENT_GAP_MS / meanGap, lateRatio)
  }

  next(): GeneratedRecord | undefined {
    const i = this.i
    const n = this.total - i
    if (n <= 0) return undefined
    this.i = i + 1
    const sim = this.sim
    const prng = sim.prng
    const clock = this.clock.at((i + prng.next()) / this.total)
    // Selection sampling: exactly invalidLeft / duplicatesLeft of the remaining n records get each kind.
    const r = prng.next() * n
    if (r < this.invalidLeft) {
      this.invalidLeft--
      return sim.invalid(clock)
    }
    if (r < this.invalidLeft + this.duplicatesLeft) {
      this.duplicatesLeft--
      const dup = sim.duplicate()
      if (dup !== null) return { kind: 'event', event: dup, duplicate: true }
    }
    return { kind: 'event', event: sim.event(clock, this.startTs), duplicate: false }
  }
}

/**
 * The batch workload: exactly `options.events` records (valid events, duplicates among them, and
 * invalid records), event times spanning `days` from `startTs`.
 *
 * A duplicate record shares its `event` object with the original: do not mutate events.
 */
export function* generateWorkload(options: WorkloadOptions): Generator<GeneratedRecord> {
  const w = new BatchWorkload(options)
  for (let r = w.next(); r !== undefined; r = w.next()) yield r
}

// ---------------------------------------------------------------------------------------------
// Live mode
// ---------------------------------------------------------------------------------------------

/**
 * An endless workload for demos: the event time of a record is
 * `start + (wallNow - firstWall) * timeScale`, where firstWall is the first wallNow passed and start
 * is `options.startTs` (default: firstWall). Deterministic for a seed and a sequence of wallNow values.
 *
 * Note: with the default start and timeScale > 1, event times run ahead of the real wall clock; an
 * engine that rejects events too far in the future (maxFutureMs) will reject them after a while.
 * Pass a `startTs` in the past to keep the accelerated clock behind real time for longer.
 */
export function createLiveWorkload(options: LiveWorkloadOptions): LiveWorkload {
  const { seed, users, timeScale } = options
  if (!(timeScale > 0) || !Number.isFinite(timeScale)) throw new RangeError(`timeScale must be a positive number, got ${timeScale}`)
  const invalidRatio = checkRatio('invalidRatio', options.invalidRatio)
  const duplicateRatio = checkRatio('duplicateRatio', options.duplicateRatio ?? WORKLOAD_DEFAULTS.duplicateRatio)
  const lateRatio = options.lateRatio ?? WORKLOAD_DEFAULTS.lateRatio
  const sim = new Simulator(seed, users, Math.min(256, Math.ceil(users / 50)), lateRatio)
  const prng = sim.prng
  let firstWall: number | undefined
  let start = 0
  let last = -Infinity
  return {
    next(wallNowMs: number): GeneratedRecord {
      if (!Number.isFinite(wallNowMs)) throw new RangeError(`wallNowMs must be a finite number, got ${wallNowMs}`)
      if (firstWall === undefined) {
        firstWall = wallNowMs
        start = Math.floor(options.startTs ?? wallNowMs)
      }
      // A wall clock that steps back does not move event time back.
      const clock = Math.max(last, Math.floor(start + (wallNowMs - firstWall) * timeScale))
      last = clock
      const r = prng.next()
      if (r < invalidRatio) return sim.invalid(clock)
      if (r < invalidRatio + duplicateRatio) {
        const dup = sim.duplicate()
        if (dup !== null) return { kind: 'event', event: dup, duplicate: true }
      }
      return { kind: 'event', event: sim.event(clock, start), duplicate: false }
    },
  }
}

// ---------------------------------------------------------------------------------------------
// NDJSON encoding
// ---------------------------------------------------------------------------------------------

/** One NDJSON line: the event's JSON, or the invalid record's bytes, followed by '\n'. */
export function encodeNdjsonLine(record: GeneratedRecord): Buffer {
  if (record.kind === 'event') return Buffer.from(JSON.stringify(record.event) + '\n', 'utf8')
  const out = Buffer.allocUnsafe(record.bytes.length + 1)
  record.bytes.copy(out, 0)
  out[record.bytes.length] = EVENT_NEWLINE
  return out
}

const WRITE_CHUNK_BYTES = 4 * 1024 * 1024

/**
 * JSON of an event exactly as the generator built it, byte-identical to JSON.stringify(event) (the
 * unit test compares writeNdjsonFile's file with encodeNdjsonLine's output) and several times faster
 * on Node 20. Only for events fresh from the generator: it relies on their key order and on their
 * strings needing no escaping (ids, types and values from fixed lists). Unknown shapes fall back to
 * JSON.stringify.
 */
function generatedEventJson(e: WorkloadEvent): string {
  const p = e.properties as Record<string, string & number>
  const head = '{"eventId":"' + e.eventId + '","userId":"' + e.userId + '","type":"' + e.type + '","ts":' + e.ts + ',"properties":'
  switch (e.type) {
    case 'view':
      return head + '{"category":"' + p.category + '","productId":"' + p.productId + '"}}'
    case 'add_to_cart':
      return head + '{"category":"' + p.category + '","productId":"' + p.productId + '","price":' + p.price + '}}'
    case 'purchase':
      return (
        head +
        '{"amount":' + p.amount + ',"currency":"' + p.currency + '","category":"' + p.category + '","items":' + p.items + '}}'
      )
    case 'refund':
      return head + '{"amount":' + p.amount + '}}'
    case 'profile_update':
      return head + '{"city":"' + p.city + '","membership_level":"' + p.membership_level + '"}}'
    default:
      return JSON.stringify(e)
  }
}

async function writeFully(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off)
    off += bytesWritten
  }
}

/**
 * Writes the batch workload to `path` as NDJSON (one record per line), in 4 MiB writes, generating
 * the next chunk while the previous one is being written (at most one write in flight).
 */
export async function writeNdjsonFile(path: string, options: WorkloadOptions): Promise<WriteResult> {
  const w = new BatchWorkload(options)
  const fh = await open(path, 'w')
  let pending: Promise<void> | null = null
  try {
    const buffers = [Buffer.allocUnsafe(WRITE_CHUNK_BYTES), Buffer.allocUnsafe(WRITE_CHUNK_BYTES)]
    let which = 0
    let buf = buffers[0] as Buffer
    let off = 0
    let events = 0
    let invalid = 0
    let duplicates = 0
    let bytes = 0

    const flush = async (): Promise<void> => {
      if (off === 0) return
      if (pending !== null) await pending
      const out = buf.subarray(0, off)
      bytes += off
      pending = writeFully(fh, out)
      which ^= 1
      buf = buffers[which] as Buffer
      off = 0
    }

    for (let r = w.next(); r !== undefined; r = w.next()) {
      if (r.kind === 'event') {
        const line = generatedEventJson(r.event)
        if (off + line.length * 3 + 1 > WRITE_CHUNK_BYTES) await flush()
        off += buf.write(line, off, 'utf8')
        buf[off++] = EVENT_NEWLINE
        events++
        if (r.duplicate) duplicates++
      } else {
        const len = r.bytes.length
        if (off + len + 1 > WRITE_CHUNK_BYTES) await flush()
        r.bytes.copy(buf, off)
        off += len
        buf[off++] = EVENT_NEWLINE
        invalid++
      }
    }
    await flush()
    if (pending !== null) await pending
    pending = null
    return { events, invalid, duplicates, bytes }
  } finally {
    if (pending !== null) await (pending as Promise<void>).catch(() => undefined)
    await fh.close()
  }
}

// ---------------------------------------------------------------------------------------------
// msgpack encoding
// ---------------------------------------------------------------------------------------------

const msgpack = new Packr({ useRecords: false, mapsAsObjects: true })

/**
 * One record as a msgpack payload (what a Kafka message value holds with `format: msgpack`): the
 * event as a msgpack map. A malformed record keeps its defect: one whose bytes are JSON (a missing
 * field, a wrong type, an array) is that JSON value in msgpack; bytes that are not JSON stay as they
 * are (undecodable or not a map).
 */
export function encodeMsgpackRecord(record: GeneratedRecord): Buffer {
  if (record.kind === 'event') return msgpack.pack(record.event)
  let value: unknown
  try {
    value = JSON.parse(record.bytes.toString('utf8'))
  } catch {
    return record.bytes
  }
  return msgpack.pack(value)
}

/** Bytes of the length prefix of each record in a msgpack workload file (unsigned, big-endian). */
export const MSGPACK_FRAME_HEADER_BYTES = 4

/**
 * Writes the batch workload as length-prefixed msgpack records: a 4-byte big-endian length, then
 * the payload of encodeMsgpackRecord. Frames keep undecodable records from desynchronising a reader.
 */
export async function writeMsgpackFile(path: string, options: WorkloadOptions): Promise<WriteResult> {
  const w = new BatchWorkload(options)
  const fh = await open(path, 'w')
  try {
    const parts: Buffer[] = []
    let pending = 0
    let events = 0
    let invalid = 0
    let duplicates = 0
    let bytes = 0
    for (let r = w.next(); r !== undefined; r = w.next()) {
      const payload = encodeMsgpackRecord(r)
      const header = Buffer.allocUnsafe(MSGPACK_FRAME_HEADER_BYTES)
      header.writeUInt32BE(payload.length, 0)
      parts.push(header, payload)
      pending += MSGPACK_FRAME_HEADER_BYTES + payload.length
      if (r.kind === 'event') {
        events++
        if (r.duplicate) duplicates++
      } else invalid++
      if (pending >= WRITE_CHUNK_BYTES) {
        await writeFully(fh, Buffer.concat(parts, pending))
        bytes += pending
        parts.length = 0
        pending = 0
      }
    }
    if (pending > 0) await writeFully(fh, Buffer.concat(parts, pending))
    bytes += pending
    return { events, invalid, duplicates, bytes }
  } finally {
    await fh.close()
  }
}

/** The payloads of a file written by writeMsgpackFile, in order. */
export function* readMsgpackFrames(data: Buffer): Generator<Buffer> {
  let off = 0
  while (off < data.length) {
    if (off + MSGPACK_FRAME_HEADER_BYTES > data.length) throw new RangeError(`truncated frame header at byte ${off}`)
    const len = data.readUInt32BE(off)
    off += MSGPACK_FRAME_HEADER_BYTES
    if (off + len > data.length) throw new RangeError(`truncated frame at byte ${off}: ${len} bytes announced`)
    yield data.subarray(off, off + len)
    off += len
  }
}
