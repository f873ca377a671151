/**
 * Preference operator: the category a user favours, by share of spend (or of events) over the last
 * N calendar days in the configured zone. The tag is the leading category's label when its share
 * reaches `minShare` and the user has at least `minEvents` counted events in the window.
 *
 * Spend is summed in integer minor units (cents, rounded half up at the cent), so shares are ratios
 * of exact integers. Ties on the measure are broken by the other measure (events for spend, spend for
 * events), then by the most recent day bought, then by category name (code-unit order), so the
 * answer never depends on arrival order or on map iteration.
 *
 * State: one bucket per (local day, category) inside the window only, so it is bounded by
 * `windowDays` x the categories a user buys per day. A timer fires when the oldest day leaves the
 * window (the start of local day oldest + windowDays), because the leader and the shares change
 * with no event at all.
 */
import { Type, type Static } from '@sinclair/typebox'
import {
  calendarFor,
  defineOperator,
  type Calendar,
  type DerivedTags,
  type InputEvent,
  type Operator,
  type OperatorContext,
  type TimerFired,
  TAG_ID_PATTERN,
  categorySchema,
  isTagId,
  operatorConfigError,
} from '../src/operator-api.js'

/** Name of the one timer this operator registers. */
export const EXPIRE_TIMER = 'expire'

export const PreferenceConfigSchema = Type.Object(
  {
    categoryProperty: Type.String({ minLength: 1, default: 'category', description: 'Event property naming the category' }),
    eventTypes: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, default: ['purchase'], description: 'Event types counted' }),
    measure: Type.Union([Type.Literal('spend'), Type.Literal('events')], {
      default: 'spend',
      description: 'spend: share of the amounts (events without a valid amount are ignored); events: share of the event count',
    }),
    amountProperty: Type.String({ minLength: 1, default: 'amount', description: 'Event property with the amount, in currency units' }),
    windowDays: Type.Integer({ minimum: 1, maximum: 3660, default: 90, description: 'The last N local days, today included' }),
    minShare: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.4, description: "The leading category's share must be >= this" }),
    minEvents: Type.Integer({ minimum: 1, default: 2, description: 'Counted events in the window, all categories, must be >= this' }),
    tag: Type.String({ pattern: TAG_ID_PATTERN, default: 'preferred_category' }),
    labels: Type.Optional(
      Type.Record(Type.String(), Type.String({ minLength: 1 }), { description: 'category -> tag value (default: "<category> buyer")' }),
    ),
    category: categorySchema(['model', 'preference']),
    description: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
)

export type PreferenceConfig = Static<typeof PreferenceConfigSchema>

/** `[localDayIndex, category, events, spend in minor units]`. */
export type CategoryBucket = readonly [day: number, category: string, events: number, spend: number]

export interface PreferenceState {
  /** All-time counted events. */
  readonly total: number
  /**
   * Ascending by day, then category: only days inside the window at the clock of the last call (plus
   * days ahead of it).
   */
  readonly days: readonly CategoryBucket[]
}

/** One category's totals in the window. */
interface Tally {
  readonly category: string
  events: number
  spend: number
  lastDay: number
}

interface Standing {
  /** Categories in rank order (leader first). */
  readonly ranked: readonly Tally[]
  readonly events: number
  readonly spend: number
}

const invalid = operatorConfigError

/** Rounds half up after dropping the binary noise of the product (19.99 * 100 is 1998.9999999999998). */
const roundHalfUp = (x: number): number => Math.round(Number(x.toPrecision(15)))
const DECIMAL_RE = /^\s*\d+(\.\d+)?\s*$/

/** An amount in currency units as integer minor units (cents), or undefined when not a non-negative amount. */
export function toMinorUnits(raw: unknown): number | undefined {
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && DECIMAL_RE.test(raw) ? Number(raw) : Number.NaN
  if (!Number.isFinite(n) || n < 0) return undefined
  return roundHalfUp(n * 100)
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)
const NO_TAGS: DerivedTags = Object.freeze({})

export default defineOperator<PreferenceConfig, PreferenceState>({
  type: 'preference',
  description: 'Preferred category: the largest share of spend or events over the last N days, above a minimum share',
  configSchema: PreferenceConfigSchema,

  create(name, config): Operator<PreferenceState> {
    const { tag, categoryProperty, amountProperty, windowDays, minShare, minEvents, measure } = config
    if (!isTagId(tag)) throw invalid(name, `tag "${tag}" must match ${TAG_ID_PATTERN}`, 'tag')
    const types = new Set(config.eventTypes)
    const labels = new Map(Object.entries(config.labels ?? {}))
    const bySpend = measure === 'spend'

    /** Larger measure first, then the other measure, then the most recent day, then the name. */
    const rank = (a: Tally, b: Tally): number =>
      bySpend
        ? b.spend - a.spend || b.events - a.events || b.lastDay - a.lastDay || cmp(a.category, b.category)
        : b.events - a.events || b.spend - a.spend || b.lastDay - a.lastDay || cmp(a.category, b.category)

    /** Buckets still inside the window at `now`: day > dayIndex(now) - windowDays. */
    function prune(days: readonly CategoryBucket[], now: number, cal: Calendar): readonly CategoryBucket[] {
      const cutoff = cal.dayIndex(now) - windowDays
      let i = 0
      while (i < days.length && (days[i] as CategoryBucket)[0] <= cutoff) i++
      return i === 0 ? days : days.slice(i)
    }

    function syncTimer(days: readonly CategoryBucket[], ctx: OperatorContext, cal: Calendar): void {
      const oldest = days[0]
      if (oldest === undefined) {
        if (ctx.timer(EXPIRE_TIMER) !== undefined) ctx.deleteTimer(EXPIRE_TIMER)
        return
      }
      const due = cal.startOfDay(oldest[0] + windowDays)
      if (ctx.timer(EXPIRE_TIMER) !== due) ctx.setTimer(EXPIRE_TIMER, due)
    }

    function standing(state: PreferenceState, now: number, cal: Calendar): Standing {
      const cutoff = cal.dayIndex(now) - windowDays
      const tallies = new Map<string, Tally>()
      let events = 0
      let spend = 0
      for (const [day, category, n, amount] of state.days) {
        if (day <= cutoff) continue
        events += n
        spend += amount
        const t = tallies.get(category)
        if (t === undefined) tallies.set(category, { category, events: n, spend: amount, lastDay: day })
        else {
          t.events += n
          t.spend += amount
          t.lastDay = Math.max(t.lastDay, day)
        }
      }
      return { ranked: [...tallies.values()].sort(rank), events, spend }
    }

    const measureOf = (t: { events: number; spend: number }): number => (bySpend ? t.spend : t.events)
    /** The measure as shown: spend in currency units, events as a count. */
    const shown = (v: number): number => (bySpend ? v / 100 : v)

    function onEvent(state: PreferenceState, event: InputEvent, ctx: OperatorContext): PreferenceState {
      if (!types.has(event.type)) return state
      const props = event.properties
      const category = Object.hasOwn(props, categoryProperty) ? props[categoryProperty] : undefined
      if (typeof category !== 'string' || category === '') return state
      const minor = Object.hasOwn(props, amountProperty) ? toMinorUnits(props[amountProperty]) : undefined
      if (bySpend && minor === undefined) return state

      const cal = calendarFor(ctx.timeZone)
      let days = prune(state.days, ctx.now, cal)
      const day = cal.dayIndex(event.ts)
      if (day > cal.dayIndex(ctx.now) - windowDays) days = add(days, day, category, minor ?? 0)
      syncTimer(days, ctx, cal)
      return { total: state.total + 1, days }
    }

    function onTimer(state: PreferenceState, timer: TimerFired, ctx: OperatorContext): PreferenceState {
      if (timer.name !== EXPIRE_TIMER) return state
      const cal = calendarFor(ctx.timeZone)
      const days = prune(state.days, ctx.now, cal)
      syncTimer(days, ctx, cal)
      return days === state.days ? state : { ...state, days }
    }

    function deriveTags(state: PreferenceState, ctx: OperatorContext): DerivedTags {
      const s = standing(state, ctx.now, calendarFor(ctx.timeZone))
      const leader = s.ranked[0]
      const total = measureOf(s)
      if (leader === undefined || s.events < minEvents || total === 0) return NO_TAGS
      const share = measureOf(leader) / total
      if (share < minShare) return NO_TAGS
      return {
        [tag]: {
          value: labels.get(leader.category) ?? `${leader.category} buyer`,
          evidence: { category: leader.category, share, windowDays, total: shown(total), measure, events: s.events },
        },
      }
    }

    function view(state: PreferenceState, ctx: OperatorContext): Readonly<Record<string, unknown>> {
      const s = standing(state, ctx.now, calendarFor(ctx.timeZone))
      const total = measureOf(s)
      return {
        measure,
        windowDays,
        total: shown(total),
        events: s.events,
        allTimeEvents: state.total,
        categories: s.ranked.map((t) => ({
          category: t.category,
          events: t.events,
          spend: t.spend / 100,
          share: total === 0 ? 0 : measureOf(t) / total,
        })),
      }
    }

    return {
      name,
      tags: [
        {
          id: tag,
          description:
            config.description ??
            `Category with the largest share of ${bySpend ? 'spend' : 'events'} (${config.eventTypes.join(', ')}) in the last ` +
              `${windowDays} days, when >= ${minShare} with >= ${minEvents} events`,
          category: [...config.category],
          valueType: 'string',
        },
      ],
      eventTypes: [...types],
      initialState: () => ({ total: 0, days: [] }),
      onEvent,
      onTimer,
      deriveTags,
      view,
      viewSchema: { measure: 'string', windowDays: 'int', total: 'double', events: 'int', allTimeEvents: 'int' },
      viewClockFields: ['total', 'events'],
      // Window totals change when the oldest bucket leaves the window: the expire timer is due then.
      viewTimerFields: ['total', 'events'],
    }
  },
})

/** A new bucket list with one more event of `category` on `day`, kept sorted by (day, category). */
function add(days: readonly CategoryBucket[], day: number, category: string, minor: number): readonly CategoryBucket[] {
  let i = days.length
  while (i > 0) {
    const [d, c] = days[i - 1] as CategoryBucket
    if (d < day || (d === day && c <= category)) break
    i--
  }
  const at = days[i - 1]
  const next = days.slice()
  if (at !== undefined && at[0] === day && at[1] === category) next[i - 1] = [day, category, at[2] + 1, at[3] + minor]
  else next.splice(i, 0, [day, category, 1, minor])
  return next
}
