/**
 * RFM operator: recency, frequency and monetary value per user, scored 1-5 against the scored users
 * of the population (`engine.populationScope`: every user the process holds, or the user's
 * partition; quintiles of the "min" rank, the definition batch RFM analyses use), and the
 * segments built on them: the 11-segment map of the cell "R,F,M" (Champions ... Lost) and the
 * 8-segment value model (R, F, M each above or below the population mean).
 *
 * - Frequency counts purchases; monetary sums their amounts in event order. A refund (a refund event
 *   type, or a purchase with a negative amount) subtracts its absolute amount from monetary; it does
 *   not reduce frequency and does not move recency: the purchase happened, only part of its value
 *   came back, and one return event rarely maps to exactly one whole order.
 * - Windows (`windowsDays`, default 30/90/365) count purchases and net amounts per local calendar day
 *   in the configured zone, so "the last 30 days" is 30 calendar days where the customers are,
 *   correct across DST changes. Only days inside the longest window are kept, and a timer fires the
 *   instant a day leaves any window, so the windowed values in the state change exactly then.
 * - Ranking is clock-independent. Recency is ranked by `0 - lastPurchaseDay` (the local day index,
 *   negated): recency at any as-of day is that day plus this value, so it orders users exactly as
 *   recency in days does, ties included, and the reference's "rank recency ascending with min ranks,
 *   then reverse the labels" is `6 - quintile(rank)`. (Ranking the day index itself and scoring it
 *   upwards is *not* the same: ties share the lowest rank in one direction only, and 20 customers of
 *   the Online Retail reference score differently that way.)
 * - Scores and segments depend on the other users, so they change without an event of this user:
 *   `rescore: true` lets the engine's sweep re-derive them. Tag values never depend on the clock.
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
  type PopulationView,
  type TimerFired,
  type ViewSchema,
  TAG_ID_PATTERN,
  categorySchema,
  isTagId,
  operatorConfigError,
  isoString,
  viewWants,
} from '../src/operator-api.js'

const CELL_PATTERN = '^[1-5],[1-5],[1-5]$'

/** Name of the one timer this operator registers. */
export const EXPIRE_TIMER = 'expire'

/** The population dimensions, in the order of the cell "R,F,M". */
export const RFM_DIMENSIONS = ['recency', 'frequency', 'monetary'] as const

/**
 * The 11-segment map, written as the segment -> cells table it is published as (cells "RFM").
 * It is the table commonly shipped with this model, in its variant that puts 231, 241 and 251 in
 * Hibernating rather than About to Sleep. The 113 cells the Online Retail reference
 * (shared/datasets/online-retail/reference-rfm.csv) contains match it cell for cell; the 12 cells
 * that data lacks come from the same table: 141, 151 Lost; 152, 252 At Risk; 251 Hibernating;
 * 351, 352, 431, 441, 451, 452, 552 Potential Loyalists. Each of those agrees with its observed
 * neighbours of the same R (F or M one step away: 131, 142/153, 241, 242/253, 341, 342/353, 432,
 * 442, 453, 542/551/553), except that 431 follows 432 rather than 421 (New Customers), and 151 and
 * 451 have no observed neighbour (they follow their rows: R=1, M=1 is Lost; R=4, F>=3, M<=2 is
 * Potential Loyalists).
 */
const SEGMENT_TABLE: ReadonlyArray<readonly [segment: string, cells: string]> = [
  ['Champions', '555 554 544 545 454 455 445'],
  ['Loyal', '543 444 435 355 354 345 344 335'],
  ['Potential Loyalists', '553 551 552 541 542 533 532 531 452 451 442 441 431 453 433 432 423 353 352 351 342 341 333 323'],
  ['New Customers', '512 511 422 421 412 411 311'],
  ['Promising', '525 524 523 522 521 515 514 513 425 424 413 414 415 315 314 313'],
  ['Need Attention', '535 534 443 434 343 334 325 324'],
  ['About to Sleep', '331 321 312 221 213'],
  ['At Risk', '255 254 245 244 253 252 243 242 235 234 225 224 153 152 145 143 142 135 134 133 125 124'],
  ['Cannot Lose Them', '155 154 144 214 215 115 114 113'],
  ['Hibernating', '332 322 231 241 251 233 232 223 222 132 123 122 212 211'],
  ['Lost', '111 112 121 131 141 151'],
]

/** The default `segmentMap`: every one of the 125 cells "R,F,M" -> its segment. */
export const DEFAULT_SEGMENT_MAP: Readonly<Record<string, string>> = Object.freeze(
  Object.fromEntries(SEGMENT_TABLE.flatMap(([segment, cells]) => cells.split(' ').map((c) => [c.split('').join(','), segment]))),
)

const label = (name: string, pattern: string) =>
  Type.String({ minLength: 1, default: name, description: `Value tag for the pattern ${pattern} (R, F, M: H above the mean, L not above)` })

const Segments8Schema = Type.Object(
  {
    labels: Type.Object(
      {
        HHH: label('important_value', 'HHH'),
        HLH: label('important_development', 'HLH'),
        LHH: label('important_keep', 'LHH'),
        LLH: label('important_win_back', 'LLH'),
        HHL: label('general_value', 'HHL'),
        HLL: label('general_development', 'HLL'),
        LHL: label('general_keep', 'LHL'),
        LLL: label('general_win_back', 'LLL'),
      },
      {
        default: {},
        additionalProperties: false,
        description:
          'Labels of the 8-segment value model, keyed by pattern: one letter each for R, F, M, H when the user is above ' +
          'the population mean (R: more recent than average), L otherwise (a value equal to the mean is L)',
      },
    ),
  },
  { default: {}, additionalProperties: false },
)

export const RfmConfigSchema = Type.Object(
  {
    purchaseEventTypes: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      default: ['purchase'],
      description: 'Event types that are purchases (a negative amount makes one a refund)',
    }),
    refundEventTypes: Type.Array(Type.String({ minLength: 1 }), {
      default: ['refund'],
      description: 'Event types that are refunds: their absolute amount is subtracted from monetary',
    }),
    amountProperty: Type.String({
      minLength: 1,
      default: 'amount',
      description: 'Event property holding the amount, a finite number (a purchase without it counts with 0; a refund needs it)',
    }),
    windowsDays: Type.Array(Type.Integer({ minimum: 1, maximum: 3660 }), {
      default: [30, 90, 365],
      description: 'Windows of N local calendar days, today included, strictly ascending: frequency<N>d and monetary<N>d in the profile',
    }),
    minPurchasesToScore: Type.Integer({ minimum: 1, default: 1, description: 'Users with fewer purchases are not scored' }),
    segments8: Segments8Schema,
    segmentMap: Type.Record(Type.String({ pattern: CELL_PATTERN }), Type.String({ minLength: 1 }), {
      default: DEFAULT_SEGMENT_MAP,
      additionalProperties: false,
      description:
        'Cell "R,F,M" -> segment name. Defaults to the 11-segment model (all 125 cells); cells given here override ' +
        'the default one by one, so a different scheme gives all 125',
    }),
    segmentTag: Type.String({ pattern: TAG_ID_PATTERN, default: 'rfm_segment', description: 'Tag id of the segment from segmentMap' }),
    valueSegmentTag: Type.String({ pattern: TAG_ID_PATTERN, default: 'rfm_value_segment', description: 'Tag id of the 8-segment value label' }),
    scoreTag: Type.String({ pattern: TAG_ID_PATTERN, default: 'rfm_score', description: 'Tag id of the cell "R,F,M"' }),
    category: categorySchema(['model', 'rfm']),
  },
  { additionalProperties: false },
)

export type RfmConfig = Static<typeof RfmConfigSchema>

/** `[localDayIndex, purchases, netAmount]`: a day's purchases and their amount net of refunds. */
export type RfmDayBucket = readonly [day: number, purchases: number, amount: number]

/** `[purchases, netAmount]` in one window. */
export type RfmWindowTotals = readonly [purchases: number, amount: number]

export interface RfmState {
  /** Event time of the latest purchase, epoch ms (null before the first). */
  readonly lastPurchaseTs: number | null
  /** Its local day index in the configured zone: what recency is ranked by. */
  readonly lastPurchaseDay: number | null
  /** All-time purchases. */
  readonly frequency: number
  /** All-time amount, purchases minus refunds, summed in event order. */
  readonly monetary: number
  /**
   * Per-local-day buckets, ascending by day, holding only days inside the longest window at the clock
   * of the last call (plus days ahead of it). At most the longest window + the allowed lateness in days.
   */
  readonly days: readonly RfmDayBucket[]
  /**
   * Totals per configured window (same order as `windowsDays`) at the clock of the last call. They are
   * what makes the state change when a day leaves a shorter window while the longest still holds it.
   */
  readonly windows: readonly RfmWindowTotals[]
}

/** A scored user's scores and segments, at a population. */
interface Scored {
  readonly r: number
  readonly f: number
  readonly m: number
  readonly cell: string
  readonly segment: string
  readonly valueSegment: string
  /** Population means as raw values (recency as `0 - day`). */
  readonly means: readonly [recency: number, frequency: number, monetary: number]
}

const invalid = operatorConfigError

/**
 * The reference's quintile: the min rank's place in 1..maxRank cut into 5 equal-width bins, right
 * edge inclusive. Everyone tied (maxRank 1) scores the middle, 3, as pandas' `cut` does for a
 * zero-width range.
 */
export function quintile(population: PopulationView, value: number): number {
  const maxRank = population.maxRank()
  if (maxRank <= 1) return 3
  const rank = population.rank(value)
  return Math.min(5, Math.max(1, Math.ceil((5 * (rank - 1)) / (maxRank - 1))))
}

const NO_TAGS: DerivedTags = Object.freeze({})
const NOT_SCORED: Readonly<Record<string, number>> = Object.freeze({})
const NO_VALUES: Readonly<Record<string, string>> = Object.freeze({})

/** The view fields that need the population scores. */
const SCORE_FIELDS = ['scores', 'cell', 'segment', 'valueSegment'] as const

export default defineOperator<RfmConfig, RfmState>({
  type: 'rfm',
  description: 'Recency, frequency and monetary value, quintile scores among all users, 11-segment and 8-segment RFM models; windows per local day',
  configSchema: RfmConfigSchema,

  create(name, config): Operator<RfmState> {
    const { segmentTag, valueSegmentTag, scoreTag, amountProperty, minPurchasesToScore } = config
    const tagIds = [scoreTag, segmentTag, valueSegmentTag]
    for (const [key, id] of [['scoreTag', scoreTag], ['segmentTag', segmentTag], ['valueSegmentTag', valueSegmentTag]] as const) {
      if (!isTagId(id)) throw invalid(name, `${key} "${id}" must match ${TAG_ID_PATTERN}`, key)
      if (tagIds.indexOf(id) !== tagIds.lastIndexOf(id)) throw invalid(name, `tag id "${id}" is used twice`, key)
    }
    const windowsDays = [...config.windowsDays]
    windowsDays.forEach((w, i) => {
      const prev = windowsDays[i - 1]
      if (prev !== undefined && w <= prev) throw invalid(name, `windowsDays must be strictly ascending (${w} after ${prev})`, `windowsDays[${i}]`)
    })
    const longest = windowsDays[windowsDays.length - 1] ?? 0
    /** The view fields of the windows' totals, and those of the population scores. */
    const windowFields = windowsDays.flatMap((w) => [`frequency${w}d`, `monetary${w}d`])
    const purchaseTypes = new Set(config.purchaseEventTypes)
    const refundTypes = new Set(config.refundEventTypes)
    for (const t of refundTypes) {
      if (purchaseTypes.has(t)) throw invalid(name, `event type "${t}" is both a purchase and a refund type`, 'refundEventTypes')
    }
    // With the schema's defaults applied, every cell is mapped (given cells override the default's).
    const segmentMap = new Map<string, string>()
    for (const cell of Object.keys(DEFAULT_SEGMENT_MAP)) {
      const segment = Object.hasOwn(config.segmentMap, cell) ? config.segmentMap[cell] : undefined
      if (segment === undefined) throw invalid(name, `segmentMap has no segment for the cell "${cell}"`, `segmentMap.${cell}`)
      segmentMap.set(cell, segment)
    }
    const labels = config.segments8.labels

    function readAmount(event: InputEvent, required: boolean): number {
      const props = event.properties
      const raw = Object.hasOwn(props, amountProperty) ? props[amountProperty] : undefined
      if (raw === undefined || raw === null) {
        if (required) throw new Error(`${event.type} event ${event.eventId} has no "${amountProperty}"`)
        return 0
      }
      if (typeof raw !== 'number' || !Number.isFinite(raw)) {
        throw new Error(`"${amountProperty}" of ${event.type} event ${event.eventId} must be a finite number, got ${JSON.stringify(raw) ?? typeof raw}`)
      }
      return raw + 0 // -0 -> 0: state stays plain data
    }

    /** Buckets still inside the longest window at `today`: day > today - longest. */
    function prune(days: readonly RfmDayBucket[], today: number): readonly RfmDayBucket[] {
      const cutoff = today - longest
      let i = 0
      while (i < days.length && (days[i] as RfmDayBucket)[0] <= cutoff) i++
      return i === 0 ? days : days.slice(i)
    }

    function totalsAt(days: readonly RfmDayBucket[], today: number): RfmWindowTotals[] {
      return windowsDays.map((w): RfmWindowTotals => {
        const cutoff = today - w
        let purchases = 0
        let amount = 0
        for (const [day, p, a] of days) {
          if (day > cutoff) {
            purchases += p
            amount += a
          }
        }
        return [purchases, amount]
      })
    }

    /**
     * The next instant a windowed value changes: for each window, the oldest day inside it leaves at
     * the start of local day (day + window). After `prune` at `now`, that is always after `now`.
     */
    function syncTimer(days: readonly RfmDayBucket[], today: number, cal: Calendar, ctx: OperatorContext): void {
      let due = Infinity
      for (const w of windowsDays) {
        const oldest = days.find(([day]) => day > today - w)
        if (oldest !== undefined) due = Math.min(due, cal.startOfDay(oldest[0] + w))
      }
      if (due === Infinity) {
        if (ctx.timer(EXPIRE_TIMER) !== undefined) ctx.deleteTimer(EXPIRE_TIMER)
        return
      }
      if (ctx.timer(EXPIRE_TIMER) !== due) ctx.setTimer(EXPIRE_TIMER, due)
    }

    /** New windows state at `now`, reusing the old arrays when nothing changed. */
    function settle(state: RfmState, days: readonly RfmDayBucket[], ctx: OperatorContext): { days: readonly RfmDayBucket[]; windows: readonly RfmWindowTotals[] } {
      const cal = calendarFor(ctx.timeZone)
      const today = cal.dayIndex(ctx.now)
      const kept = prune(days, today)
      const totals = totalsAt(kept, today)
      syncTimer(kept, today, cal, ctx)
      const same = totals.length === state.windows.length && totals.every((t, i) => t[0] === state.windows[i]?.[0] && t[1] === state.windows[i]?.[1])
      return { days: kept, windows: same ? state.windows : totals }
    }

    function onEvent(state: RfmState, event: InputEvent, ctx: OperatorContext): RfmState {
      const isPurchase = purchaseTypes.has(event.type)
      if (!isPurchase && !refundTypes.has(event.type)) return state
      const amount = readAmount(event, !isPurchase)
      // A purchase with a negative amount is a refund of that amount.
      const purchase = isPurchase && amount >= 0
      const delta = purchase ? amount : -Math.abs(amount)
      const monetary = state.monetary + delta + 0
      if (!Number.isFinite(monetary)) throw new Error(`monetary of user ${ctx.userId} would overflow (${state.monetary} + ${delta})`)

      const day = calendarFor(ctx.timeZone).dayIndex(event.ts)
      // A day already outside the longest window is pruned again at once by `settle`.
      const settled = settle(state, longest === 0 ? state.days : addToDay(state.days, day, purchase ? 1 : 0, delta), ctx)
      const later = purchase && (state.lastPurchaseTs === null || event.ts > state.lastPurchaseTs)
      return {
        lastPurchaseTs: later ? event.ts : state.lastPurchaseTs,
        lastPurchaseDay: later ? day : state.lastPurchaseDay,
        frequency: state.frequency + (purchase ? 1 : 0),
        monetary,
        days: settled.days,
        windows: settled.windows,
      }
    }

    function onTimer(state: RfmState, timer: TimerFired, ctx: OperatorContext): RfmState {
      if (timer.name !== EXPIRE_TIMER) return state
      const next = settle(state, state.days, ctx)
      return next.days === state.days && next.windows === state.windows ? state : { ...state, ...next }
    }

    function scoredValues(state: RfmState): Readonly<Record<string, number>> {
      if (state.lastPurchaseDay === null || state.frequency < minPurchasesToScore) return NOT_SCORED
      return { recency: 0 - state.lastPurchaseDay, frequency: state.frequency, monetary: state.monetary }
    }

    function score(state: RfmState, ctx: OperatorContext): Scored | undefined {
      return scoreOf(scoredValues(state), ctx)
    }

    /** Scores and segments from the population values alone (what sweeps re-score from). */
    function scoreOf(values: Readonly<Record<string, number>>, ctx: OperatorContext): Scored | undefined {
      const recency = values.recency
      const frequency = values.frequency
      const monetary = values.monetary
      if (recency === undefined || frequency === undefined || monetary === undefined) return undefined
      const popR = ctx.population('recency')
      const popF = ctx.population('frequency')
      const popM = ctx.population('monetary')
      // Recency values are `0 - day`: the most recent have the smallest, so their labels are reversed.
      const r = 6 - quintile(popR, recency)
      const f = quintile(popF, frequency)
      const m = quintile(popM, monetary)
      const cell = `${r},${f},${m}`
      const means = [popR.mean(), popF.mean(), popM.mean()] as const
      const pattern = `${recency < means[0] ? 'H' : 'L'}${frequency > means[1] ? 'H' : 'L'}${monetary > means[2] ? 'H' : 'L'}`
      return { r, f, m, cell, segment: segmentMap.get(cell) as string, valueSegment: labels[pattern as keyof typeof labels], means }
    }

    function rescoreTagValues(values: Readonly<Record<string, number>>, ctx: OperatorContext): Readonly<Record<string, string>> {
      const s = scoreOf(values, ctx)
      if (s === undefined) return NO_VALUES
      return { [scoreTag]: s.cell, [segmentTag]: s.segment, [valueSegmentTag]: s.valueSegment }
    }

    function recencyDays(state: RfmState, ctx: OperatorContext): number | null {
      return state.lastPurchaseDay === null ? null : calendarFor(ctx.timeZone).dayIndex(ctx.now) - state.lastPurchaseDay
    }

    function deriveTags(state: RfmState, ctx: OperatorContext): DerivedTags {
      const s = score(state, ctx)
      if (s === undefined) return NO_TAGS
      const today = calendarFor(ctx.timeZone).dayIndex(ctx.now)
      const recencyDays = today - (state.lastPurchaseDay as number)
      const { frequency, monetary } = state
      const { r, f, m, cell } = s
      // Literal objects, no spreads: this runs for every user in every re-scoring sweep.
      return {
        [scoreTag]: { value: cell, evidence: { recencyDays, frequency, monetary, r, f, m } },
        [segmentTag]: { value: s.segment, evidence: { recencyDays, frequency, monetary, r, f, m, cell } },
        [valueSegmentTag]: {
          value: s.valueSegment,
          evidence: {
            recencyDays,
            frequency,
            monetary,
            r,
            f,
            m,
            meanRecencyDays: today + s.means[0],
            meanFrequency: s.means[1],
            meanMonetary: s.means[2],
          },
        },
      }
    }

    function view(state: RfmState, ctx: OperatorContext, fields?: ReadonlySet<string>): Readonly<Record<string, unknown>> {
      const want = viewWants(fields)
      const out: Record<string, unknown> = {}
      if (want('lastPurchaseAt')) out.lastPurchaseAt = state.lastPurchaseTs === null ? null : isoString(state.lastPurchaseTs)
      if (want('recencyDays')) out.recencyDays = recencyDays(state, ctx)
      if (want('frequency')) out.frequency = state.frequency
      if (want('monetary')) out.monetary = state.monetary
      // The windows' totals and the population ranks only when a field of theirs is read.
      if (fields === undefined || windowFields.some((f) => fields.has(f))) {
        const totals = totalsAt(state.days, calendarFor(ctx.timeZone).dayIndex(ctx.now))
        windowsDays.forEach((w, i) => {
          const t = totals[i] as RfmWindowTotals
          if (want(`frequency${w}d`)) out[`frequency${w}d`] = t[0]
          if (want(`monetary${w}d`)) out[`monetary${w}d`] = t[1]
        })
      }
      if (fields === undefined || SCORE_FIELDS.some((f) => fields.has(f))) {
        const s = score(state, ctx)
        if (want('scores')) out.scores = s === undefined ? null : { r: s.r, f: s.f, m: s.m }
        if (want('cell')) out.cell = s?.cell ?? null
        if (want('segment')) out.segment = s?.segment ?? null
        if (want('valueSegment')) out.valueSegment = s?.valueSegment ?? null
      }
      return out
    }

    const category = [...config.category]
    return {
      name,
      tags: [
        { id: scoreTag, description: 'RFM cell "R,F,M": quintile scores 1-5 among all scored users, 5 best', category, valueType: 'string' },
        {
          id: segmentTag,
          description: `RFM segment of the cell "R,F,M" (${[...new Set(segmentMap.values())].join(', ')})`,
          category: [...category],
          valueType: 'string',
        },
        {
          id: valueSegmentTag,
          description: 'RFM value segment (8-segment model): recency, frequency and monetary each above or below the population mean',
          category: [...category],
          valueType: 'string',
        },
      ],
      eventTypes: [...purchaseTypes, ...refundTypes],
      population: RFM_DIMENSIONS,
      rescore: true,
      initialState: () => ({ lastPurchaseTs: null, lastPurchaseDay: null, frequency: 0, monetary: 0, days: [], windows: windowsDays.map(() => [0, 0]) }),
      onEvent,
      onTimer,
      deriveTags,
      view,
      viewSchema: {
        lastPurchaseAt: 'timestamp',
        recencyDays: 'int',
        frequency: 'int',
        monetary: 'double',
        ...Object.fromEntries(windowsDays.flatMap((w) => [[`frequency${w}d`, 'int'], [`monetary${w}d`, 'double']])),
        cell: 'string',
        segment: 'string',
        valueSegment: 'string',
      } as ViewSchema,
      viewClockFields: ['recencyDays', ...windowsDays.flatMap((w) => [`frequency${w}d`, `monetary${w}d`]), 'cell', 'segment', 'valueSegment'],
      // The window totals change when a day leaves a window: the expire timer is due exactly then.
      viewTimerFields: windowsDays.flatMap((w) => [`frequency${w}d`, `monetary${w}d`]),
      scoredValues,
      rescoreTagValues,
    }
  },
})

/** A new bucket list with `purchases` and `amount` added on `day`. Events mostly land on the newest day: search from the end. */
function addToDay(days: readonly RfmDayBucket[], day: number, purchases: number, amount: number): readonly RfmDayBucket[] {
  let i = days.length
  while (i > 0 && (days[i - 1] as RfmDayBucket)[0] > day) i--
  const at = days[i - 1]
  const next = days.slice()
  if (at !== undefined && at[0] === day) next[i - 1] = [day, at[1] + purchases, at[2] + amount + 0]
  else next.splice(i, 0, [day, purchases, amount + 0])
  return next
}
