/**
 * Lifecycle operator: a declarative state machine over a user's events and the calendar. Stages,
 * the initial stage and the transitions come from the config; the defaults are the e-commerce
 * customer lifecycle (prospect -> new -> active -> silent -> churned, reactivated on a purchase
 * while silent or churned). Other models, e.g. registered -> activated -> engaged -> dormant on
 * logins, are the same operator with another config.
 *
 * A transition is taken either on an event (of given types, when a guard over the operator's own
 * counters holds) or after N calendar days in the configured zone. "N days after X" is the start of
 * local day (day of X + N): the first instant at which the calendar days since X reach N, as a
 * nightly batch computing "days since last purchase" on dates would see it; a DST change in between
 * shortens or lengthens that day, not the count. Time transitions are one persisted timer at the
 * earliest due boundary, re-registered after every call, so they fire exactly when the clock
 * crosses it.
 *
 * Event time rules: an event is applied at its own time. Time transitions due up to
 * max(clock, event time) are taken before it (a purchase 31 days after the last one reactivates a
 * customer who went silent on day 30, even when it arrives ahead of the watermark); an event behind
 * the clock is applied to the current stage. Entering a stage never goes back before the time the
 * previous stage was entered.
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
  isoString,
  viewWants,
} from '../src/operator-api.js'

/** Name of the one timer this operator registers: the earliest time-triggered transition. */
export const TRANSITION_TIMER = 'transition'
/** The `rule` recorded when a user is first seen and enters the initial stage. */
export const INITIAL_RULE = 'initial'
/** `from: '*'`: every stage except the transition's target. */
const ANY = '*'

const FromSchema = Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })], {
  description: "Stage(s) the transition leaves; '*' = every stage except `to`",
})

const GuardSchema = Type.Object(
  {
    firstPurchase: Type.Optional(Type.Boolean({ description: "true: the event is the user's first purchase; false: it is not" })),
    minPurchases: Type.Optional(Type.Integer({ minimum: 0, description: 'Purchases so far, this event included, >= n' })),
    maxPurchases: Type.Optional(Type.Integer({ minimum: 0, description: 'Purchases so far, this event included, <= n' })),
    minEvents: Type.Optional(
      Type.Integer({ minimum: 1, description: "Events of this transition's eventTypes so far, this one included, >= n" }),
    ),
  },
  { additionalProperties: false, description: 'Every condition given must hold' },
)

const EventTransitionSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, description: 'Shown as `rule` in the evidence' })),
    from: FromSchema,
    to: Type.String({ minLength: 1 }),
    on: Type.Object(
      {
        eventTypes: Type.Optional(
          Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Default: the purchase event types' }),
        ),
        guard: Type.Optional(GuardSchema),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
)

const TimeTransitionSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, description: 'Shown as `rule` in the evidence' })),
    from: FromSchema,
    to: Type.String({ minLength: 1 }),
    after: Type.Object(
      {
        days: Type.Integer({ minimum: 1, maximum: 3660, description: 'Calendar days in the configured zone' }),
        since: Type.Union([Type.Literal('lastEvent'), Type.Literal('enteredState'), Type.Literal('lastEventOfTypes')], {
          description:
            'lastEvent: any event this operator observes; enteredState: when the current stage was entered; ' +
            'lastEventOfTypes: the latest event of `eventTypes`',
        }),
        eventTypes: Type.Optional(
          Type.Array(Type.String({ minLength: 1 }), {
            minItems: 1,
            description: 'For since: lastEventOfTypes (default: the purchase event types)',
          }),
        ),
      },
      { additionalProperties: false, description: 'Fires at the start of local day (day of the anchor + days)' },
    ),
  },
  { additionalProperties: false },
)

const DEFAULT_TRANSITIONS = [
  { name: 'first purchase', from: 'prospect', to: 'new', on: { guard: { firstPurchase: true } } },
  { name: 'new for 30 days', from: 'new', to: 'active', after: { days: 30, since: 'enteredState' } },
  { name: 'reactivated for 30 days', from: 'reactivated', to: 'active', after: { days: 30, since: 'enteredState' } },
  { name: 'no purchase for 30 days', from: 'active', to: 'silent', after: { days: 30, since: 'lastEventOfTypes' } },
  { name: 'no purchase for 90 days', from: 'silent', to: 'churned', after: { days: 90, since: 'lastEventOfTypes' } },
  { name: 'purchase after silence', from: ['silent', 'churned'], to: 'reactivated', on: {} },
]

export const LifecycleConfigSchema = Type.Object(
  {
    states: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      default: ['prospect', 'new', 'active', 'silent', 'churned', 'reactivated'],
      description: 'The stages (tag values)',
    }),
    initial: Type.String({ minLength: 1, default: 'prospect', description: 'Stage of a user at their first observed event' }),
    tag: Type.String({ pattern: TAG_ID_PATTERN, default: 'lifecycle_stage' }),
    purchaseEventTypes: Type.Array(Type.String({ minLength: 1 }), {
      default: ['purchase'],
      description: 'Events counted as purchases (purchase count, last purchase time, guards, evidence)',
    }),
    eventTypes: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        minItems: 1,
        description:
          'Events that make a user known (enter `initial`) and count for since: lastEvent, besides the event types ' +
          'the transitions and purchases name (default: every event)',
      }),
    ),
    transitions: Type.Array(Type.Union([EventTransitionSchema, TimeTransitionSchema]), {
      default: DEFAULT_TRANSITIONS,
      description:
        'Tried in config order: on an event, the first event transition out of the stage whose types and guard match; ' +
        'in time, the earliest due time transition (ties: config order)',
    }),
    category: categorySchema(['model', 'lifecycle']),
    description: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
)

export type LifecycleConfig = Static<typeof LifecycleConfigSchema>
type EventTransition = Static<typeof EventTransitionSchema>
type TimeTransition = Static<typeof TimeTransitionSchema>
type Guard = Static<typeof GuardSchema>

/** `[count, latest event time]` of one event type a guard or a time transition reads. */
export type TypeStats = readonly [count: number, lastTs: number]

export interface LifecycleState {
  /** Current stage; null until the first observed event. */
  readonly stage: string | null
  /** When the current stage was entered, epoch ms (an event's time or a transition's due time). */
  readonly since: number | null
  readonly previous: string | null
  /** Name (or description) of the transition that entered the current stage; `initial` at first sight. */
  readonly rule: string | null
  readonly purchases: number
  readonly lastPurchaseTs: number | null
  /** Latest observed event time; kept only when a transition uses `since: lastEvent` (else null). */
  readonly lastEventTs: number | null
  /** Per event type, only the types a `minEvents` guard or `since: lastEventOfTypes` names. */
  readonly types: Readonly<Record<string, TypeStats>>
}

interface EventRule {
  readonly label: string
  readonly to: string
  readonly types: readonly string[]
  readonly guard: (s: LifecycleState, firstPurchase: boolean) => boolean
}

interface TimeRule {
  readonly label: string
  readonly to: string
  readonly days: number
  /** The instant the days are counted from, or null when it does not exist yet. */
  readonly anchor: (s: LifecycleState) => number | null
}

interface Due {
  readonly rule: TimeRule
  readonly at: number
}

/** Bound on transitions taken in one call (time transitions only cycle through `enteredState`, which advances). */
const MAX_CASCADE = 100_000

const invalid = operatorConfigError

const isEventTransition = (t: EventTransition | TimeTransition): t is EventTransition => 'on' in t

const NO_TAGS: DerivedTags = Object.freeze({})

export default defineOperator<LifecycleConfig, LifecycleState>({
  type: 'lifecycle',
  description: 'Declarative lifecycle state machine: stages entered on events (with guards) or after N calendar days',
  configSchema: LifecycleConfigSchema,

  create(name, config): Operator<LifecycleState> {
    const { tag, initial } = config
    if (!isTagId(tag)) throw invalid(name, `tag "${tag}" must match ${TAG_ID_PATTERN}`, 'tag')
    const states = [...config.states]
    states.forEach((s, i) => {
      if (s === ANY) throw invalid(name, `"${ANY}" cannot be a stage name`, `states[${i}]`)
      if (states.indexOf(s) !== i) throw invalid(name, `duplicate stage "${s}"`, `states[${i}]`)
    })
    const known = new Set(states)
    if (!known.has(initial)) throw invalid(name, `initial stage "${initial}" is not in states`, 'initial')

    const purchaseTypes = new Set(config.purchaseEventTypes)
    /** Types whose count or latest time the state keeps. */
    const trackedTypes = new Set<string>()
    const triggerTypes = new Set<string>()
    let trackLastEvent = false
    // stage -> event type -> candidate rules in config order; stage -> time rules.
    const eventRules = new Map<string, Map<string, EventRule[]>>(states.map((s) => [s, new Map()]))
    const timeRules = new Map<string, TimeRule[]>(states.map((s) => [s, []]))
    const timeEdges: Array<{ from: string; to: string; index: number; anchored: boolean }> = []

    config.transitions.forEach((t, i) => {
      const key = `transitions[${i}]`
      if (!known.has(t.to)) throw invalid(name, `unknown stage "${t.to}" in ${key}.to`, `${key}.to`)
      const fromList = typeof t.from === 'string' ? [t.from] : [...t.from]
      fromList.forEach((f, j) => {
        if (f === ANY ? fromList.length > 1 : !known.has(f)) {
          throw invalid(name, f === ANY ? `"${ANY}" must stand alone in ${key}.from` : `unknown stage "${f}" in ${key}.from`, `${key}.from`)
        }
        if (fromList.indexOf(f) !== j) throw invalid(name, `duplicate stage "${f}" in ${key}.from`, `${key}.from`)
      })
      const from = fromList[0] === ANY ? states.filter((s) => s !== t.to) : fromList
      const fromText = typeof t.from === 'string' ? t.from : t.from.join('|')

      if (isEventTransition(t)) {
        const types = t.on.eventTypes ?? config.purchaseEventTypes
        if (types.length === 0) throw invalid(name, `${key}.on names no event types and purchaseEventTypes is empty`, `${key}.on.eventTypes`)
        const guard = t.on.guard ?? {}
        if (guard.minEvents !== undefined) for (const type of types) trackedTypes.add(type)
        const label = t.name ?? `${fromText} -> ${t.to} on ${types.join('|')}${guardText(guard)}`
        const rule: EventRule = { label, to: t.to, types, guard: compileGuard(guard, types) }
        for (const type of types) triggerTypes.add(type)
        for (const stage of from) {
          const byType = eventRules.get(stage) as Map<string, EventRule[]>
          for (const type of types) byType.set(type, [...(byType.get(type) ?? []), rule])
        }
        return
      }

      const { days, since } = t.after
      if (t.after.eventTypes !== undefined && since !== 'lastEventOfTypes') {
        throw invalid(name, `${key}.after.eventTypes applies only to since: lastEventOfTypes`, `${key}.after.eventTypes`)
      }
      let anchor: TimeRule['anchor']
      let anchorText: string
      if (since === 'enteredState') {
        anchor = (s) => s.since
        anchorText = 'entering the stage'
      } else if (since === 'lastEvent') {
        trackLastEvent = true
        anchor = (s) => s.lastEventTs
        anchorText = 'the last event'
      } else if (t.after.eventTypes === undefined) {
        if (purchaseTypes.size === 0) throw invalid(name, `${key}.after needs eventTypes: purchaseEventTypes is empty`, `${key}.after.eventTypes`)
        anchor = (s) => s.lastPurchaseTs
        anchorText = `the last ${config.purchaseEventTypes.join('|')}`
      } else {
        const types = [...t.after.eventTypes]
        for (const type of types) trackedTypes.add(type)
        anchor = (s) => latest(s, types)
        anchorText = `the last ${types.join('|')}`
      }
      const rule: TimeRule = { label: t.name ?? `${fromText} -> ${t.to} ${days} days after ${anchorText}`, to: t.to, days, anchor }
      for (const stage of from) {
        ;(timeRules.get(stage) as TimeRule[]).push(rule)
        timeEdges.push({ from: stage, to: t.to, index: i, anchored: since !== 'enteredState' })
      }
    })

    // A cycle of time transitions would loop within one instant unless every step waits from entering
    // its stage: an anchored transition (lastEvent, lastEventOfTypes) is due again at once on re-entry.
    for (const edge of timeEdges) {
      if (edge.anchored && reaches(timeEdges, edge.to, edge.from)) {
        throw invalid(
          name,
          `transitions[${edge.index}] (${edge.from} -> ${edge.to}) closes a cycle of time transitions; ` +
            'time transitions may only cycle when each waits since: enteredState',
          `transitions[${edge.index}]`,
        )
      }
    }

    const observed = config.eventTypes === undefined ? undefined : new Set([...config.eventTypes, ...purchaseTypes, ...triggerTypes, ...trackedTypes])

    function latest(s: LifecycleState, types: readonly string[]): number | null {
      let at: number | null = null
      for (const type of types) {
        const stats = Object.hasOwn(s.types, type) ? s.types[type] : undefined
        if (stats !== undefined && (at === null || stats[1] > at)) at = stats[1]
      }
      return at
    }

    function compileGuard(guard: Guard, types: readonly string[]): EventRule['guard'] {
      const checks: Array<EventRule['guard']> = []
      const { firstPurchase, minPurchases, maxPurchases, minEvents } = guard
      if (firstPurchase !== undefined) checks.push((_s, first) => first === firstPurchase)
      if (minPurchases !== undefined) checks.push((s) => s.purchases >= minPurchases)
      if (maxPurchases !== undefined) checks.push((s) => s.purchases <= maxPurchases)
      if (minEvents !== undefined) {
        checks.push((s) => {
          let n = 0
          for (const type of types) n += Object.hasOwn(s.types, type) ? (s.types[type] as TypeStats)[0] : 0
          return n >= minEvents
        })
      }
      return (s, first) => checks.every((check) => check(s, first))
    }

    function enter(s: LifecycleState, to: string, at: number, rule: string): LifecycleState {
      return { ...s, stage: to, since: Math.max(at, s.since ?? at), previous: s.stage, rule }
    }

    /** The earliest time transition out of the current stage (ties: config order). */
    function nextDue(s: LifecycleState, cal: Calendar): Due | undefined {
      if (s.stage === null) return undefined
      let best: Due | undefined
      for (const rule of timeRules.get(s.stage) ?? []) {
        const anchor = rule.anchor(s)
        if (anchor === null) continue
        const at = cal.startOfDay(cal.dayIndex(anchor) + rule.days)
        if (best === undefined || at < best.at) best = { rule, at }
      }
      return best
    }

    /** Takes every time transition due at or before `until`, each at its own due time. */
    function settle(state: LifecycleState, until: number, cal: Calendar): LifecycleState {
      let s = state
      for (let n = 0; ; n++) {
        const due = nextDue(s, cal)
        if (due === undefined || !(due.at <= until)) return s
        if (n >= MAX_CASCADE) throw new Error(`operator "${name}": more than ${MAX_CASCADE} time transitions in one call`)
        s = enter(s, due.rule.to, due.at, due.rule.label)
      }
    }

    function syncTimer(s: LifecycleState, ctx: OperatorContext, cal: Calendar): void {
      const due = nextDue(s, cal)
      if (due === undefined) {
        if (ctx.timer(TRANSITION_TIMER) !== undefined) ctx.deleteTimer(TRANSITION_TIMER)
      } else if (ctx.timer(TRANSITION_TIMER) !== due.at) {
        ctx.setTimer(TRANSITION_TIMER, due.at)
      }
    }

    function onEvent(state: LifecycleState, event: InputEvent, ctx: OperatorContext): LifecycleState {
      const { type, ts } = event
      if (observed !== undefined && !observed.has(type)) return state
      const isPurchase = purchaseTypes.has(type)
      const tracked = trackedTypes.has(type)
      const recordsTime = trackLastEvent && (state.lastEventTs === null || ts > state.lastEventTs)
      if (state.stage !== null && !isPurchase && !tracked && !recordsTime && !triggerTypes.has(type)) return state

      const cal = calendarFor(ctx.timeZone)
      const until = Math.max(ctx.now, ts)
      let s = settle(state, until, cal)
      if (s.stage === null) s = { ...s, stage: initial, since: ts, previous: null, rule: INITIAL_RULE }

      const firstPurchase = isPurchase && s.purchases === 0
      if (isPurchase || tracked || recordsTime) {
        const stats = tracked && Object.hasOwn(s.types, type) ? s.types[type] : undefined
        s = {
          ...s,
          purchases: isPurchase ? s.purchases + 1 : s.purchases,
          lastPurchaseTs: isPurchase ? Math.max(ts, s.lastPurchaseTs ?? ts) : s.lastPurchaseTs,
          lastEventTs: recordsTime ? ts : s.lastEventTs,
          types: tracked ? { ...s.types, [type]: stats === undefined ? [1, ts] : [stats[0] + 1, Math.max(stats[1], ts)] } : s.types,
        }
      }

      const stage = s.stage as string
      const rule = eventRules.get(stage)?.get(type)?.find((r) => r.guard(s, firstPurchase))
      if (rule !== undefined) s = enter(s, rule.to, ts, rule.label)
      s = settle(s, until, cal)
      syncTimer(s, ctx, cal)
      return s
    }

    function onTimer(state: LifecycleState, timer: TimerFired, ctx: OperatorContext): LifecycleState {
      if (timer.name !== TRANSITION_TIMER) return state
      const cal = calendarFor(ctx.timeZone)
      const s = settle(state, ctx.now, cal)
      syncTimer(s, ctx, cal)
      return s
    }

    function daysSince(cal: Calendar, ts: number | null, now: number): number | null {
      return ts === null ? null : Math.max(0, cal.daysBetween(ts, now))
    }

    function deriveTags(state: LifecycleState, ctx: OperatorContext): DerivedTags {
      const cal = calendarFor(ctx.timeZone)
      const s = settle(state, ctx.now, cal)
      if (s.stage === null) return NO_TAGS
      return {
        [tag]: {
          value: s.stage,
          evidence: {
            stage: s.stage,
            previousStage: s.previous,
            since: isoString(s.since as number),
            daysSinceLastPurchase: daysSince(cal, s.lastPurchaseTs, ctx.now),
            purchases: s.purchases,
            rule: s.rule,
          },
        },
      }
    }

    function view(state: LifecycleState, ctx: OperatorContext, fields?: ReadonlySet<string>): Readonly<Record<string, unknown>> {
      const cal = calendarFor(ctx.timeZone)
      const s = settle(state, ctx.now, cal)
      // Only what the caller reads (a rule reads `stage`, a projection a few fields); all for a profile.
      const want = viewWants(fields)
      const out: Record<string, unknown> = {}
      if (want('stage')) out.stage = s.stage
      if (want('previousStage')) out.previousStage = s.previous
      if (want('since')) out.since = s.since === null ? null : isoString(s.since)
      if (want('daysInStage')) out.daysInStage = daysSince(cal, s.since, ctx.now)
      if (want('purchases')) out.purchases = s.purchases
      if (want('lastPurchaseAt')) out.lastPurchaseAt = s.lastPurchaseTs === null ? null : isoString(s.lastPurchaseTs)
      if (want('daysSinceLastPurchase')) out.daysSinceLastPurchase = daysSince(cal, s.lastPurchaseTs, ctx.now)
      if (want('next')) {
        const next = nextDue(s, cal)
        out.next = next === undefined ? null : { stage: next.rule.to, at: isoString(next.at), rule: next.rule.label }
      }
      return out
    }

    return {
      name,
      tags: [
        {
          id: tag,
          description: config.description ?? `Lifecycle stage: ${states.join(', ')}`,
          category: [...config.category],
          valueType: 'string',
        },
      ],
      ...(observed === undefined ? {} : { eventTypes: [...observed] }),
      initialState: () => ({
        stage: null,
        since: null,
        previous: null,
        rule: null,
        purchases: 0,
        lastPurchaseTs: null,
        lastEventTs: null,
        types: {},
      }),
      onEvent,
      onTimer,
      deriveTags,
      view,
      viewSchema: {
        stage: 'string',
        previousStage: 'string',
        since: 'timestamp',
        daysInStage: 'int',
        purchases: 'int',
        lastPurchaseAt: 'timestamp',
        daysSinceLastPurchase: 'int',
      },
      viewClockFields: ['stage', 'previousStage', 'since', 'daysInStage', 'daysSinceLastPurchase'],
      // Time transitions happen at the transition timer's due time; the day counts move every day.
      viewTimerFields: ['stage', 'previousStage', 'since'],
    }
  },
})

function guardText(guard: Guard): string {
  const parts = Object.entries(guard).map(([k, v]) => `${k}: ${String(v)}`)
  return parts.length === 0 ? '' : ` if ${parts.join(', ')}`
}

/** Whether `target` is reachable from `start` along time transitions. */
function reaches(edges: ReadonlyArray<{ from: string; to: string }>, start: string, target: string): boolean {
  const seen = new Set<string>([start])
  const queue = [start]
  for (let node = queue.shift(); node !== undefined; node = queue.shift()) {
    if (node === target) return true
    for (const e of edges) {
      if (e.from === node && !seen.has(e.to)) {
        seen.add(e.to)
        queue.push(e.to)
      }
    }
  }
  return false
}
