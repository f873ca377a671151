/**
 * Loyalty operator: a points ladder. Earn events add `amount x pointsPerUnit` points, refund events
 * take them back, and the tier is the highest rung whose `minPoints` the points reach, upgraded the
 * moment an event passes a threshold.
 *
 * Points are exact to the hundredth: amounts are read as integer minor units (cents, rounded half
 * up at the cent) and points are kept as integer hundredths of a point (each event's points rounded
 * half up once), so sums, refunds and thresholds are integer arithmetic with no drift however many
 * events a user has; a full refund cancels its purchase exactly.
 *
 * Downgrade policies:
 * - `never`: points never expire; only refunds lower them.
 * - `rollingWindow`: points count for `days` calendar days in the configured zone, the day of the
 *   purchase included (bucketed per local day, so the state holds at most `days` buckets). One timer
 *   sits at the instant the tier falls without a new event: the start of the local day on which the
 *   bucket whose expiry takes the points below the current tier's minimum leaves the window.
 *
 * A refund takes its points back from the most recent days first (refunds follow recent purchases),
 * never below zero.
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
  type ViewSchema,
  TAG_ID_PATTERN,
  categorySchema,
  isTagId,
  operatorConfigError,
  isoString,
  viewWants,
} from '../src/operator-api.js'

/** Name of the one timer this operator registers (rollingWindow only). */
export const DOWNGRADE_TIMER = 'downgrade'

const TierSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, description: 'The tag value' }),
    minPoints: Type.Integer({ minimum: 0, description: 'Lowest point balance in this tier' }),
  },
  { additionalProperties: false },
)

export const LoyaltyConfigSchema = Type.Object(
  {
    pointsPerUnit: Type.Number({ exclusiveMinimum: 0, default: 1, description: 'Points per currency unit spent' }),
    amountProperty: Type.String({ minLength: 1, default: 'amount', description: 'Event property with the amount, in currency units' }),
    earnEventTypes: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, default: ['purchase'] }),
    refundEventTypes: Type.Array(Type.String({ minLength: 1 }), { default: ['refund'], description: 'Events whose amount takes points back' }),
    tiers: Type.Array(TierSchema, {
      minItems: 1,
      default: [
        { name: 'bronze', minPoints: 0 },
        { name: 'silver', minPoints: 500 },
        { name: 'gold', minPoints: 2000 },
        { name: 'platinum', minPoints: 5000 },
        { name: 'diamond', minPoints: 10000 },
      ],
      description: 'Strictly ascending by minPoints; the tag is the highest tier whose minPoints <= the points',
    }),
    tag: Type.String({ pattern: TAG_ID_PATTERN, default: 'loyalty_tier' }),
    downgrade: Type.Object(
      {
        policy: Type.Union([Type.Literal('never'), Type.Literal('rollingWindow')], { default: 'rollingWindow' }),
        days: Type.Integer({ minimum: 1, maximum: 3660, default: 365, description: 'rollingWindow: points count for the last N local days' }),
      },
      { additionalProperties: false, default: { policy: 'rollingWindow', days: 365 } },
    ),
    category: categorySchema(['model', 'loyalty']),
    description: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
)

export type LoyaltyConfig = Static<typeof LoyaltyConfigSchema>

/** `[localDayIndex, hundredths of a point]`. */
export type PointsBucket = readonly [day: number, points: number]

export interface LoyaltyState {
  /** Earn events counted; a user with at least one is a member and has a tier. */
  readonly earnEvents: number
  readonly refundEvents: number
  /** Hundredths of a point ever earned (refunds and expiry not subtracted). */
  readonly earned: number
  /** Policy never: hundredths of a point held. rollingWindow: 0 (the buckets hold the points). */
  readonly balance: number
  /**
   * rollingWindow: hundredths of a point per local day of the purchase, ascending by day, holding only
   * days inside the window at the clock of the last call (plus days ahead of it). Empty under never.
   */
  readonly days: readonly PointsBucket[]
}

interface Tier {
  readonly name: string
  /** In hundredths of a point. */
  readonly min: number
}

const invalid = operatorConfigError

/**
 * Rounds half up at integer precision after dropping the binary noise of a product or quotient
 * (19.99 * 100 is 1998.9999999999998; 0.285 * 100 is 28.499999999999996, meant as 28.5).
 */
export const roundHalfUp = (x: number): number => Math.round(Number(x.toPrecision(15)))

const DECIMAL_RE = /^\s*\d+(\.\d+)?\s*$/

/** An amount in currency units as integer minor units (cents), or undefined when not a non-negative amount. */
export function toMinorUnits(raw: unknown): number | undefined {
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && DECIMAL_RE.test(raw) ? Number(raw) : Number.NaN
  if (!Number.isFinite(n) || n < 0) return undefined
  return roundHalfUp(n * 100)
}

const NO_TAGS: DerivedTags = Object.freeze({})
const toPoints = (hundredths: number): number => hundredths / 100

export default defineOperator<LoyaltyConfig, LoyaltyState>({
  type: 'loyalty',
  description: 'Loyalty points ladder: points per currency unit spent, tiers by points, refunds and optional rolling expiry',
  configSchema: LoyaltyConfigSchema,

  create(name, config): Operator<LoyaltyState> {
    const { tag, pointsPerUnit, amountProperty } = config
    if (!isTagId(tag)) throw invalid(name, `tag "${tag}" must match ${TAG_ID_PATTERN}`, 'tag')
    const tiers: Tier[] = config.tiers.map((t) => ({ name: t.name, min: t.minPoints * 100 }))
    tiers.forEach((t, i) => {
      const prev = tiers[i - 1]
      if (prev !== undefined && t.min <= prev.min) {
        throw invalid(name, `tiers must be strictly ascending by minPoints ("${t.name}" after "${prev.name}")`, `tiers[${i}].minPoints`)
      }
      if (tiers.findIndex((o) => o.name === t.name) !== i) throw invalid(name, `duplicate tier "${t.name}"`, `tiers[${i}].name`)
    })
    const earnTypes = new Set(config.earnEventTypes)
    const refundTypes = new Set(config.refundEventTypes)
    config.refundEventTypes.forEach((type, i) => {
      if (earnTypes.has(type)) throw invalid(name, `event type "${type}" cannot both earn and refund points`, `refundEventTypes[${i}]`)
    })
    const rolling = config.downgrade.policy === 'rollingWindow'
    const windowDays = config.downgrade.days

    /** Index of the highest tier the points reach, or -1. */
    function tierIndex(points: number): number {
      for (let i = tiers.length - 1; i >= 0; i--) if ((tiers[i] as Tier).min <= points) return i
      return -1
    }

    /** Buckets still inside the window at `now`: day > dayIndex(now) - windowDays. */
    function prune(days: readonly PointsBucket[], now: number, cal: Calendar): readonly PointsBucket[] {
      const cutoff = cal.dayIndex(now) - windowDays
      let i = 0
      while (i < days.length && (days[i] as PointsBucket)[0] <= cutoff) i++
      return i === 0 ? days : days.slice(i)
    }

    function pointsAt(state: LoyaltyState, now: number, cal: Calendar): number {
      if (!rolling) return state.balance
      const cutoff = cal.dayIndex(now) - windowDays
      let sum = 0
      for (const [day, points] of state.days) if (day > cutoff) sum += points
      return sum
    }

    /**
     * The instant the tier falls with no new event: the expiry of the bucket that takes the points
     * below the current tier's minimum. `days` must be pruned at the clock (every expiry is ahead of it).
     */
    function downgradeAt(days: readonly PointsBucket[], cal: Calendar): number | undefined {
      let left = 0
      for (const [, points] of days) left += points
      const tier = tiers[tierIndex(left)]
      if (tier === undefined) return undefined
      for (const [day, points] of days) {
        left -= points
        if (left < tier.min) return cal.startOfDay(day + windowDays)
      }
      return undefined
    }

    function syncTimer(state: LoyaltyState, ctx: OperatorContext, cal: Calendar): void {
      const due = state.earnEvents > 0 ? downgradeAt(state.days, cal) : undefined
      if (due === undefined) {
        if (ctx.timer(DOWNGRADE_TIMER) !== undefined) ctx.deleteTimer(DOWNGRADE_TIMER)
      } else if (ctx.timer(DOWNGRADE_TIMER) !== due) {
        ctx.setTimer(DOWNGRADE_TIMER, due)
      }
    }

    function onEvent(state: LoyaltyState, event: InputEvent, ctx: OperatorContext): LoyaltyState {
      const earn = earnTypes.has(event.type)
      if (!earn && !refundTypes.has(event.type)) return state
      const minor = Object.hasOwn(event.properties, amountProperty) ? toMinorUnits(event.properties[amountProperty]) : undefined
      if (minor === undefined) return state
      const points = roundHalfUp(minor * pointsPerUnit)

      if (!rolling) {
        return earn
          ? { ...state, earnEvents: state.earnEvents + 1, earned: state.earned + points, balance: state.balance + points }
          : { ...state, refundEvents: state.refundEvents + 1, balance: Math.max(0, state.balance - points) }
      }

      const cal = calendarFor(ctx.timeZone)
      let days = prune(state.days, ctx.now, cal)
      const day = cal.dayIndex(event.ts)
      // A late purchase from a day already out of the window earns nothing that still counts.
      if (earn && points > 0 && day > cal.dayIndex(ctx.now) - windowDays) days = add(days, day, points)
      if (!earn) days = takeBack(days, points)
      const next: LoyaltyState = earn
        ? { ...state, earnEvents: state.earnEvents + 1, earned: state.earned + points, days }
        : { ...state, refundEvents: state.refundEvents + 1, days }
      syncTimer(next, ctx, cal)
      return next
    }

    function onTimer(state: LoyaltyState, timer: TimerFired, ctx: OperatorContext): LoyaltyState {
      if (timer.name !== DOWNGRADE_TIMER) return state
      const cal = calendarFor(ctx.timeZone)
      const days = prune(state.days, ctx.now, cal)
      const next = days === state.days ? state : { ...state, days }
      syncTimer(next, ctx, cal)
      return next
    }

    /** Where the points stand on the ladder; a user who never earned is below the first rung. */
    function ladder(points: number, member: boolean) {
      const i = member ? tierIndex(points) : -1
      const next = tiers[i + 1]
      return {
        points: toPoints(points),
        tier: tiers[i]?.name ?? null,
        nextTier: next?.name ?? null,
        pointsToNextTier: next === undefined ? null : toPoints(next.min - points),
      }
    }

    function deriveTags(state: LoyaltyState, ctx: OperatorContext): DerivedTags {
      if (state.earnEvents === 0) return NO_TAGS
      const evidence = ladder(pointsAt(state, ctx.now, calendarFor(ctx.timeZone)), true)
      if (evidence.tier === null) return NO_TAGS
      return { [tag]: { value: evidence.tier, evidence } }
    }

    function view(state: LoyaltyState, ctx: OperatorContext, fields?: ReadonlySet<string>): Readonly<Record<string, unknown>> {
      const cal = calendarFor(ctx.timeZone)
      const days = rolling ? prune(state.days, ctx.now, cal) : []
      const oldest = days[0]
      const until = state.earnEvents > 0 && rolling ? downgradeAt(days, cal) : undefined
      const full: Record<string, unknown> = {
        ...ladder(pointsAt(state, ctx.now, cal), state.earnEvents > 0),
        earnedPoints: toPoints(state.earned),
        earnEvents: state.earnEvents,
        refundEvents: state.refundEvents,
        policy: config.downgrade.policy,
      }
      if (rolling) {
        const want = viewWants(fields)
        full.windowDays = windowDays
        // The next expiry is an object of its own (not rule-visible): formatted only when asked for.
        if (want('nextExpiry')) full.nextExpiry = oldest === undefined ? null : { at: isoString(cal.startOfDay(oldest[0] + windowDays)), points: toPoints(oldest[1]) }
        if (want('tierUntil')) full.tierUntil = until === undefined ? null : isoString(until)
      }
      return full
    }

    return {
      name,
      tags: [
        {
          id: tag,
          description:
            config.description ??
            `Loyalty tier by points (${pointsPerUnit} per unit of ${amountProperty}` +
              `${rolling ? `, last ${windowDays} days` : ''}): ${tiers.map((t) => `${t.name} >= ${t.min / 100}`).join(', ')}`,
          category: [...config.category],
          valueType: 'string',
        },
      ],
      eventTypes: [...earnTypes, ...refundTypes],
      initialState: () => ({ earnEvents: 0, refundEvents: 0, earned: 0, balance: 0, days: [] }),
      onEvent,
      onTimer,
      deriveTags,
      view,
      viewSchema: {
        points: 'double',
        tier: 'string',
        nextTier: 'string',
        pointsToNextTier: 'double',
        earnedPoints: 'double',
        earnEvents: 'int',
        refundEvents: 'int',
        policy: 'string',
        ...(rolling ? { windowDays: 'int', tierUntil: 'timestamp' } : {}),
      } as ViewSchema,
      viewClockFields: ['points', 'tier', 'nextTier', 'pointsToNextTier', 'tierUntil'],
      // The tier falls at the downgrade timer; points expire with every day's bucket, without a timer.
      viewTimerFields: ['tier', 'nextTier', 'tierUntil'],
    }
  },
})

/** A new bucket list with `points` more on `day`. Purchases mostly land on the newest day: search from the end. */
function add(days: readonly PointsBucket[], day: number, points: number): readonly PointsBucket[] {
  let i = days.length
  while (i > 0 && (days[i - 1] as PointsBucket)[0] > day) i--
  const at = days[i - 1]
  const next = days.slice()
  if (at !== undefined && at[0] === day) next[i - 1] = [day, at[1] + points]
  else next.splice(i, 0, [day, points])
  return next
}

/** A new bucket list with `points` taken from the newest days first; emptied days are dropped, never below zero. */
function takeBack(days: readonly PointsBucket[], points: number): readonly PointsBucket[] {
  if (points <= 0 || days.length === 0) return days
  const next = days.slice()
  let left = points
  while (left > 0 && next.length > 0) {
    const [day, held] = next[next.length - 1] as PointsBucket
    if (held > left) {
      next[next.length - 1] = [day, held - left]
      left = 0
    } else {
      next.pop()
      left -= held
    }
  }
  return next
}
