/**
 * An in-memory driver for one operator: the partition loop of the engine without the store, the bus
 * or the sinks. Clock = highest event time seen minus the lateness; before an event is applied, every
 * timer due at or before the new clock fires in (due, userId, name) order with `ctx.now` = its due
 * time; tags are derived and diffed after every call that returned a new state, exactly as the engine
 * does, so a test sees the tag changes the engine would emit.
 */
import { Populations } from '../../src/engine/population.js'
import { Value } from '@sinclair/typebox/value'
import { Packr } from 'msgpackr'
import type { TagChangeCause, TagChangeOp } from '../../src/contracts/tag-change.js'
import type {
  DerivedTags,
  InputEvent,
  Operator,
  OperatorContext,
  OperatorEnvironment,
  OperatorFactory,
  TagValue,
  TimerFired,
} from '../../src/operator-api.js'

/** The store's encoding of states. */
export const packr = new Packr({ useRecords: false })

export interface DriverOptions {
  /** IANA zone handed to the operator (default 'UTC'). */
  readonly timeZone?: string
  /** Allowed lateness, ms: clock = highest event time - lateness (default 0). */
  readonly lateness?: number
  /** The clock before any event (default 0). */
  readonly startAt?: number
  /**
   * Deep-freezes every state and event before handing it to the operator, and fails the call if the
   * input state's msgpack encoding changed during it.
   */
  readonly checkPurity?: boolean
  /** Stores states msgpack-encoded, as the engine does: every call gets a freshly decoded state. */
  readonly roundTrip?: boolean
  /** Called after every `onEvent` / `onTimer` call. */
  readonly onStep?: (step: DriverStep) => void
}

export interface DriverStep {
  readonly kind: 'event' | 'timer'
  readonly userId: string
  /** `ctx.now` of the call. */
  readonly now: number
  readonly event?: InputEvent
  readonly timer?: TimerFired
  readonly before: unknown
  readonly after: unknown
  /** The tags derived from `after` at `now` (the previous ones when the state did not change). */
  readonly tags: DerivedTags
}

/** A tag change as the engine would emit it, minus ids, versions and wall times. */
export interface LoggedChange {
  readonly userId: string
  readonly tag: string
  readonly op: TagChangeOp
  readonly from: TagValue | null
  readonly to: TagValue | null
  /** Event time that caused it, epoch ms: the event's `ts`, or the timer's due time. */
  readonly at: number
  readonly cause: TagChangeCause
  readonly evidence: Readonly<Record<string, unknown>>
}

export interface PendingTimer {
  readonly userId: string
  readonly name: string
  readonly dueMs: number
}

export interface Driver<S> {
  readonly operator: Operator<S>
  /** The partition clock, epoch ms. */
  readonly clock: number
  /** Every tag change so far, in emission order. */
  readonly changes: readonly LoggedChange[]
  /** Advances the clock to `event.ts - lateness` (never backwards), fires due timers, then applies the event. */
  apply(userId: string, event: InputEvent): void
  /** `apply(event.userId, event)` for each event, in order. */
  applyAll(events: Iterable<InputEvent>): void
  /** Advances the clock to `ms` and fires every timer due at or before it. Throws if `ms` is behind the clock. */
  advanceTo(ms: number): void
  /** The user's stored state (the initial state for a user never seen). */
  state(userId: string): S
  /** The tags the engine holds for the user: derived at the last call that changed the state. */
  tags(userId: string): DerivedTags
  /** `tags(userId)` as `tag -> value`. */
  tagValues(userId: string): Record<string, TagValue>
  /** `deriveTags` on the stored state, evaluated now at `at` (default: the clock). */
  derive(userId: string, at?: number): DerivedTags
  /** The operator's profile view of the user at `at` (default: the clock). */
  view(userId: string, at?: number): Readonly<Record<string, unknown>>
  /** The population statistics the driver keeps (operators with `population` dimensions). */
  readonly populations: Populations
  /** Pending timers, in firing order; only the user's when `userId` is given. */
  timers(userId?: string): PendingTimer[]
  /** Users seen so far, sorted. */
  users(): string[]
}

/** Guards against an operator that keeps re-registering a timer at or before the one firing. */
const MAX_FIRES_PER_ADVANCE = 1_000_000

export function createDriver<S>(operator: Operator<S>, options: DriverOptions = {}): Driver<S> {
  const timeZone = options.timeZone ?? 'UTC'
  const lateness = options.lateness ?? 0
  const { checkPurity = false, roundTrip = false, onStep } = options
  const dispatch = operator.eventTypes === undefined ? undefined : new Set(operator.eventTypes)

  let clock = options.startAt ?? 0
  const states = new Map<string, S | Buffer>()
  const tagsOf = new Map<string, DerivedTags>()
  const timers = new Map<string, Map<string, number>>()
  const changes: LoggedChange[] = []

  function load(userId: string): S {
    const stored = states.get(userId)
    const state = stored === undefined ? operator.initialState() : roundTrip ? (packr.unpack(stored as Buffer) as S) : (stored as S)
    return checkPurity ? deepFreeze(state) : state
  }

  /** Population statistics over the driver's users, maintained like the engine's. */
  const populations = new Populations()

  function store(userId: string, state: S): void {
    states.set(userId, roundTrip ? packr.pack(state) : state)
  }

  /** A context valid only until `close()`; `evolve: false` (deriving, viewing) may not touch timers. */
  function context(userId: string, now: number, evolve: boolean, firing?: TimerFired): { ctx: OperatorContext; close(): void } {
    let open = true
    const check = (what: string): void => {
      if (!open) throw new Error(`ctx.${what} used after the call returned (the context is only valid during the call)`)
      if (!evolve) throw new Error(`ctx.${what} called from deriveTags/view: only onEvent and onTimer may touch timers`)
    }
    const ctx: OperatorContext = {
      now,
      timeZone,
      userId,
      setTimer(name, dueMs) {
        check('setTimer')
        if (!Number.isFinite(dueMs)) throw new Error(`setTimer("${name}", ${dueMs}): due time must be a finite number`)
        if (firing !== undefined && name === firing.name && dueMs <= firing.dueMs) {
          throw new Error(`onTimer re-registered timer "${name}" at ${dueMs}, not after its own due time ${firing.dueMs}: it would fire forever`)
        }
        let mine = timers.get(userId)
        if (mine === undefined) timers.set(userId, (mine = new Map()))
        mine.set(name, dueMs)
      },
      deleteTimer(name) {
        check('deleteTimer')
        const mine = timers.get(userId)
        mine?.delete(name)
        if (mine?.size === 0) timers.delete(userId)
      },
      timer(name) {
        if (!open) throw new Error('ctx.timer used after the call returned (the context is only valid during the call)')
        return timers.get(userId)?.get(name)
      },
      population(dimension) {
        if (!open) throw new Error('ctx.population used after the call returned (the context is only valid during the call)')
        if (!(operator.population ?? []).includes(dimension)) throw new Error(`population dimension "${dimension}" is not declared by the operator`)
        return populations.get(operator.name, dimension)
      },
    }
    return { ctx, close: () => void (open = false) }
  }

  function call<T>(userId: string, now: number, evolve: boolean, firing: TimerFired | undefined, fn: (ctx: OperatorContext) => T): T {
    const { ctx, close } = context(userId, now, evolve, firing)
    try {
      return fn(ctx)
    } finally {
      close()
    }
  }

  function deriveFor(userId: string, state: S, now: number): DerivedTags {
    return call(userId, now, false, undefined, (ctx) => operator.deriveTags(state, ctx))
  }

  /** Runs one onEvent/onTimer call and everything the engine does after it. */
  function step(kind: 'event' | 'timer', userId: string, now: number, cause: TagChangeCause, at: number, run: (state: S, ctx: OperatorContext) => S, extra: { event?: InputEvent; timer?: TimerFired }): void {
    const before = load(userId)
    const snapshot = checkPurity ? packr.pack(before) : undefined
    const after = call(userId, now, true, extra.timer, (ctx) => run(before, ctx))
    if (after === undefined || after === null) throw new Error(`${kind === 'event' ? 'onEvent' : 'onTimer'} returned ${String(after)}`)
    if (snapshot !== undefined && !snapshot.equals(packr.pack(before))) {
      throw new Error(`${kind === 'event' ? 'onEvent' : 'onTimer'} mutated the state it was given (user ${userId})`)
    }
    let tags = tagsOf.get(userId) ?? {}
    if (after !== before && operator.scoredValues !== undefined) {
      // As the engine does: the user's new values join the population before its tags are derived.
      populations.update(operator.name, states.has(userId) ? operator.scoredValues(before) : undefined, operator.scoredValues(after))
    }
    if (after !== before || !states.has(userId)) {
      // The engine re-derives only when the operator returned a new state.
      const frozen = checkPurity ? deepFreeze(after) : after
      store(userId, frozen)
      if (after !== before) {
        const next = deriveFor(userId, roundTrip ? load(userId) : frozen, now)
        diff(userId, tags, next, at, cause)
        tags = next
        tagsOf.set(userId, next)
      }
    }
    onStep?.({ kind, userId, now, ...extra, before, after, tags })
  }

  function diff(userId: string, from: DerivedTags, to: DerivedTags, at: number, cause: TagChangeCause): void {
    const ids = [...new Set([...Object.keys(from), ...Object.keys(to)])].sort()
    for (const tag of ids) {
      const a = Object.hasOwn(from, tag) ? from[tag] : undefined
      const b = Object.hasOwn(to, tag) ? to[tag] : undefined
      if (a?.value === b?.value) continue
      const op: TagChangeOp = a === undefined ? 'entered' : b === undefined ? 'left' : 'changed'
      changes.push({ userId, tag, op, from: a?.value ?? null, to: b?.value ?? null, at, cause, evidence: b?.evidence ?? a?.evidence ?? {} })
    }
  }

  function nextDue(limit: number): PendingTimer | undefined {
    let best: PendingTimer | undefined
    for (const [userId, mine] of timers) {
      for (const [name, dueMs] of mine) {
        if (dueMs > limit) continue
        if (best === undefined || compareTimers({ userId, name, dueMs }, best) < 0) best = { userId, name, dueMs }
      }
    }
    return best
  }

  function advance(to: number): void {
    let fired = 0
    for (let t = nextDue(to); t !== undefined; t = nextDue(to)) {
      if (++fired > MAX_FIRES_PER_ADVANCE) throw new Error('timer storm: more than 1,000,000 timers fired in one clock advance')
      const mine = timers.get(t.userId)
      mine?.delete(t.name)
      if (mine?.size === 0) timers.delete(t.userId)
      clock = Math.max(clock, t.dueMs)
      const timer: TimerFired = { name: t.name, dueMs: t.dueMs }
      const onTimer = operator.onTimer
      if (onTimer === undefined) continue
      step('timer', t.userId, t.dueMs, { kind: 'timer', name: t.name }, t.dueMs, (state, ctx) => onTimer.call(operator, state, timer, ctx), { timer })
    }
    clock = Math.max(clock, to)
  }

  const driver: Driver<S> = {
    operator,
    get clock() {
      return clock
    },
    changes,
    apply(userId, event) {
      advance(event.ts - lateness)
      if (dispatch !== undefined && !dispatch.has(event.type)) return
      const input = checkPurity ? deepFreeze(structuredClone(event)) : event
      step('event', userId, clock, { kind: 'event', eventId: event.eventId }, event.ts, (state, ctx) => operator.onEvent(state, input, ctx), { event: input })
    },
    applyAll(events) {
      for (const e of events) driver.apply(e.userId, e)
    },
    advanceTo(ms) {
      if (ms < clock) throw new RangeError(`advanceTo(${ms}): the clock is already at ${clock} and never goes back`)
      advance(ms)
    },
    state: (userId) => load(userId),
    tags: (userId) => tagsOf.get(userId) ?? {},
    tagValues: (userId) => values(tagsOf.get(userId) ?? {}),
    derive: (userId, at = clock) => deriveFor(userId, load(userId), at),
    view(userId, at = clock) {
      const state = load(userId)
      const view = operator.view
      if (view === undefined) return state as Readonly<Record<string, unknown>>
      return call(userId, at, false, undefined, (ctx) => view.call(operator, state, ctx))
    },
    populations,
    timers(userId) {
      const out: PendingTimer[] = []
      for (const [u, mine] of timers) {
        if (userId !== undefined && u !== userId) continue
        for (const [name, dueMs] of mine) out.push({ userId: u, name, dueMs })
      }
      return out.sort(compareTimers)
    },
    users: () => [...states.keys()].sort(),
  }
  return driver
}

/** Firing order: due time, then user id, then timer name. */
export function compareTimers(a: PendingTimer, b: PendingTimer): number {
  return a.dueMs - b.dueMs || cmp(a.userId, b.userId) || cmp(a.name, b.name)
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export function values(tags: DerivedTags): Record<string, TagValue> {
  const out: Record<string, TagValue> = {}
  for (const [id, t] of Object.entries(tags)) out[id] = t.value
  return out
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/**
 * What the engine does at start with an operator entry: apply the schema's defaults, validate, then
 * `create`. Throws with every schema error listed.
 */
export function createOperator<C, S>(factory: OperatorFactory<C, S>, name: string, config: unknown, env: OperatorEnvironment = { timeZone: 'UTC' }): Operator<S> {
  const withDefaults = Value.Default(factory.configSchema, Value.Clone(config ?? {}))
  const errors = [...Value.Errors(factory.configSchema, withDefaults)]
  if (errors.length > 0) {
    throw new Error(`invalid ${factory.type} config for "${name}":\n${errors.map((e) => `  ${e.path || '/'}: ${e.message}`).join('\n')}`)
  }
  return factory.create(name, deepFreeze(withDefaults) as C, env)
}

/** A well-formed input event, for tests. */
export function event(userId: string, type: string, ts: number | string, properties: Record<string, unknown> = {}, eventId?: string): InputEvent {
  const ms = typeof ts === 'string' ? Date.parse(ts) : ts
  return { eventId: eventId ?? `${userId}:${type}:${ms}:${Object.keys(properties).join(',')}`, userId, type, ts: ms, properties }
}
