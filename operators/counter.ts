/**
 * Counter operator: how often a user did something in the last N days, as a band
 * (`occasional` / `regular` / `frequent`). Counts are kept per local day (timeZone) inside the window only, so the
 * state stays bounded however long the user lives; a timer fires the instant the oldest counted day
 * leaves the window, because the band can fall with no event at all.
 */
import { Type, type Static } from '@sinclair/typebox'
import {
  calendarFor,
  defineOperator,
  type DerivedTags,
  type InputEvent,
  type Operator,
  type OperatorContext,
  type TimerFired,
  TAG_ID_PATTERN,
  categorySchema,
  isTagId,
  operatorConfigError,
  isoString,
} from '../src/operator-api.js'

/** Name of the one timer this operator registers. */
export const EXPIRE_TIMER = 'expire'

const BandSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, description: 'The tag value' }),
    min: Type.Integer({ minimum: 1, description: 'Lowest windowed count in this band' }),
  },
  { additionalProperties: false },
)

export const CounterConfigSchema = Type.Object(
  {
    eventTypes: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Event types counted' }),
    windowDays: Type.Integer({
      minimum: 1,
      maximum: 3660,
      default: 30,
      description: 'The last N local days in timeZone, today included (the state holds at most one bucket per day)',
    }),
    tag: Type.Optional(Type.String({ pattern: TAG_ID_PATTERN, description: 'Tag id (default: <instance name>_frequency)' })),
    bands: Type.Array(BandSchema, {
      minItems: 1,
      default: [
        { name: 'occasional', min: 1 },
        { name: 'regular', min: 3 },
        { name: 'frequent', min: 10 },
      ],
      description: 'Strictly ascending by min; the tag is the highest band whose min <= the windowed count',
    }),
    category: categorySchema(['behaviour', 'frequency']),
    description: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
)

export type CounterConfig = Static<typeof CounterConfigSchema>

/** `[utcDayIndex, count]`. */
export type DayBucket = readonly [day: number, count: number]

export interface CounterState {
  /** All-time count. */
  readonly total: number
  /** Earliest and latest event time counted, epoch ms (null before the first event). */
  readonly firstTs: number | null
  readonly lastTs: number | null
  /**
   * Per-local-day counts, ascending by day, holding only days still inside the window at the clock of
   * the last call (plus days ahead of it). At most `windowDays` + the allowed lateness in days.
   */
  readonly days: readonly DayBucket[]
}


const invalid = operatorConfigError

const NO_TAGS: DerivedTags = Object.freeze({})

export default defineOperator<CounterConfig, CounterState>({
  type: 'counter',
  description: 'Events of given types in the last N days, as a frequency band; falls back as days leave the window',
  configSchema: CounterConfigSchema,

  create(name, config, env): Operator<CounterState> {
    // Days are calendar days where the customers are (DESIGN.md, Time), DST included.
    const calendar = calendarFor(env.timeZone)
    const tag = config.tag ?? `${name}_frequency`
    if (!isTagId(tag)) throw invalid(name, `tag "${tag}" must match ${TAG_ID_PATTERN}`, 'tag')
    const bands = config.bands.map((b) => ({ name: b.name, min: b.min }))
    bands.forEach((b, i) => {
      const prev = bands[i - 1]
      if (prev !== undefined && b.min <= prev.min) {
        throw invalid(name, `bands must be strictly ascending by min ("${b.name}" after "${prev.name}")`, `bands[${i}].min`)
      }
      if (bands.findIndex((o) => o.name === b.name) !== i) throw invalid(name, `duplicate band "${b.name}"`, `bands[${i}].name`)
    })
    const bandsHighFirst = [...bands].reverse()
    const windowDays = config.windowDays
    const types = new Set(config.eventTypes)

    /** Buckets still inside the window at `now`: day > calendar.dayIndex(now) - windowDays. */
    function prune(days: readonly DayBucket[], now: number): readonly DayBucket[] {
      const cutoff = calendar.dayIndex(now) - windowDays
      let i = 0
      while (i < days.length && (days[i] as DayBucket)[0] <= cutoff) i++
      return i === 0 ? days : days.slice(i)
    }

    // The count falls when the oldest bucket leaves the window: at the start of day oldest + windowDays.
    // After `prune` at `now`, that instant is always after `now`.
    function syncTimer(days: readonly DayBucket[], ctx: OperatorContext): void {
      const oldest = days[0]
      if (oldest === undefined) {
        if (ctx.timer(EXPIRE_TIMER) !== undefined) ctx.deleteTimer(EXPIRE_TIMER)
        return
      }
      const due = calendar.startOfDay(oldest[0] + windowDays)
      if (ctx.timer(EXPIRE_TIMER) !== due) ctx.setTimer(EXPIRE_TIMER, due)
    }

    function countAt(state: CounterState, now: number): number {
      const cutoff = calendar.dayIndex(now) - windowDays
      let n = 0
      for (const [day, count] of state.days) if (day > cutoff) n += count
      return n
    }

    function onEvent(state: CounterState, event: InputEvent, ctx: OperatorContext): CounterState {
      if (!types.has(event.type)) return state
      let days = prune(state.days, ctx.now)
      const day = calendar.dayIndex(event.ts)
      if (day > calendar.dayIndex(ctx.now) - windowDays) days = increment(days, day)
      syncTimer(days, ctx)
      return {
        total: state.total + 1,
        firstTs: state.firstTs === null ? event.ts : Math.min(state.firstTs, event.ts),
        lastTs: state.lastTs === null ? event.ts : Math.max(state.lastTs, event.ts),
        days,
      }
    }

    function onTimer(state: CounterState, timer: TimerFired, ctx: OperatorContext): CounterState {
      if (timer.name !== EXPIRE_TIMER) return state
      const days = prune(state.days, ctx.now)
      syncTimer(days, ctx)
      return days === state.days ? state : { ...state, days }
    }

    function deriveTags(state: CounterState, ctx: OperatorContext): DerivedTags {
      const count = countAt(state, ctx.now)
      const band = bandsHighFirst.find((b) => b.min <= count)
      if (band === undefined) return NO_TAGS
      return { [tag]: { value: band.name, evidence: { countInWindow: count, windowDays, total: state.total } } }
    }

    function view(state: CounterState, ctx: OperatorContext): Readonly<Record<string, unknown>> {
      return {
        total: state.total,
        countInWindow: countAt(state, ctx.now),
        windowDays,
        firstAt: state.firstTs === null ? null : isoString(state.firstTs),
        lastAt: state.lastTs === null ? null : isoString(state.lastTs),
      }
    }

    return {
      name,
      tags: [
        {
          id: tag,
          description:
            config.description ??
            `${config.eventTypes.join(', ')} in the last ${windowDays} days: ${bands.map((b) => `${b.name} >= ${b.min}`).join(', ')}`,
          category: [...config.category],
          valueType: 'string',
        },
      ],
      eventTypes: [...types],
      initialState: () => ({ total: 0, firstTs: null, lastTs: null, days: [] }),
      onEvent,
      onTimer,
      deriveTags,
      view,
      viewSchema: { total: 'int', countInWindow: 'int', windowDays: 'int', firstAt: 'timestamp', lastAt: 'timestamp' },
      viewClockFields: ['countInWindow'],
      // The count falls only when the oldest bucket leaves the window: the expire timer is due then.
      viewTimerFields: ['countInWindow'],
    }
  },
})

/** A new bucket list with one more event on `day`. Events mostly land on the newest day: search from the end. */
function increment(days: readonly DayBucket[], day: number): readonly DayBucket[] {
  let i = days.length
  while (i > 0 && (days[i - 1] as DayBucket)[0] > day) i--
  const at = days[i - 1]
  const next = days.slice()
  if (at !== undefined && at[0] === day) next[i - 1] = [day, at[1] + 1]
  else next.splice(i, 0, [day, 1])
  return next
}
