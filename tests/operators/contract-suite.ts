/**
 * The contract every operator in `operators/` passes, registered in one line from its unit test (the
 * way abstract-level's compliance suite is): deterministic replay, purity under deep-frozen inputs,
 * msgpack round-trip, timers that keep time-relative tags exact, fresh initial states, declared tags.
 */
import { describe, expect, it } from 'vitest'
import { DAY_MS, type DerivedTags, type InputEvent, type Operator, type OperatorContext } from '../../src/operator-api.js'
import { createDriver, packr, values, type Driver, type DriverOptions, type DriverStep } from './harness.js'

export interface ContractSuiteOptions {
  /** Driver settings for every run (time zone, lateness). */
  readonly driver?: Pick<DriverOptions, 'timeZone' | 'lateness' | 'startAt'>
  /** Set when the operator's initial state legitimately derives tags (default false). */
  readonly initialStateDerivesTags?: boolean
  /**
   * Check after every call that every user's tags derived at the clock equal the tags the driver holds,
   * i.e. the operator's timers fire at every instant its tags change with time alone (default true).
   */
  readonly exactBetweenCalls?: boolean
  /** How far past the latest event the clock is advanced to settle all timers (default 10 years). */
  readonly settleMs?: number
}

interface Run {
  readonly driver: Driver<unknown>
  readonly steps: DriverStep[]
}

function run(makeOperator: () => Operator<any>, events: readonly InputEvent[], options: DriverOptions): Run {
  const steps: DriverStep[] = []
  const driver = createDriver<unknown>(makeOperator(), { ...options, onStep: (s) => steps.push(s) })
  driver.applyAll(events)
  return { driver, steps }
}

/** Everything observable about a finished run, for deep comparison. */
function outcome(driver: Driver<unknown>): unknown {
  const users = driver.users()
  return {
    clock: driver.clock,
    states: users.map((u) => [u, driver.state(u)]),
    tags: users.map((u) => [u, driver.tags(u)]),
    views: users.map((u) => [u, driver.view(u)]),
    timers: driver.timers(),
    changes: driver.changes,
  }
}

/** Paths of objects reachable from both values (structure shared between two initial states). */
/**
 * Where a value is not plain data (objects with Object.prototype or null prototype, arrays, strings,
 * finite numbers, booleans, null). msgpackr would round-trip a Date or a Map, but other stores and the
 * profile JSON would not.
 */
export function plainDataIssues(value: unknown, path = '$'): string[] {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return []
  if (typeof value === 'number') return Number.isFinite(value) && !Object.is(value, -0) ? [] : [`${path}: ${String(value)}`]
  if (typeof value !== 'object') return [`${path}: ${typeof value}`]
  const proto: unknown = Object.getPrototypeOf(value)
  if (Array.isArray(value)) {
    if (proto !== Array.prototype) return [`${path}: array subclass`]
  } else if (proto !== Object.prototype && proto !== null) {
    return [`${path}: ${(value as object).constructor?.name ?? 'object'} instance`]
  }
  return Object.entries(value).flatMap(([k, v]) => plainDataIssues(v, Array.isArray(value) ? `${path}[${k}]` : `${path}.${k}`))
}

function sharedObjects(a: unknown, b: unknown): string[] {
  const inA = new Map<object, string>()
  const walk = (v: unknown, path: string, visit: (o: object, p: string) => void): void => {
    if (typeof v !== 'object' || v === null) return
    visit(v, path)
    for (const [k, child] of Object.entries(v)) walk(child, `${path}.${k}`, visit)
  }
  walk(a, '$', (o, p) => inA.set(o, p))
  const shared: string[] = []
  walk(b, '$', (o, p) => {
    if (inA.has(o)) shared.push(p)
  })
  return shared
}

/**
 * The context of a call that only reads (deriveTags, view, rescoreTagValues): the clock and the
 * run's final population; setting or deleting a timer throws.
 */
function readingContext(operator: Operator<any>, driver: Driver<unknown>, timeZone: string): (userId: string, now: number) => OperatorContext {
  const refuse = (): never => {
    throw new Error(`${operator.name}: a reading call must not set or delete timers`)
  }
  return (userId, now) => ({
    now,
    timeZone,
    userId,
    setTimer: refuse,
    deleteTimer: refuse,
    timer: () => undefined,
    population: (dimension: string) => driver.populations.get(operator.name, dimension),
  })
}

export function operatorContractSuite(
  name: string,
  makeOperator: () => Operator<any>,
  makeEvents: () => InputEvent[],
  options: ContractSuiteOptions = {},
): void {
  const driverOptions: DriverOptions = options.driver ?? {}
  const settleMs = options.settleMs ?? 3653 * DAY_MS

  describe(`${name}: operator contract`, () => {
    it('is deterministic: the same events through fresh drivers give identical states, tags and changes', () => {
      const a = run(makeOperator, makeEvents(), driverOptions)
      const b = run(makeOperator, makeEvents(), driverOptions)
      expect(a.driver.changes.length, 'the events should produce at least one tag change').toBeGreaterThan(0)
      expect(outcome(b.driver)).toStrictEqual(outcome(a.driver))
      expect(b.steps).toStrictEqual(a.steps)
    })

    it('is pure: deep-frozen input states are accepted and left unchanged, with the same results', () => {
      const plain = run(makeOperator, makeEvents(), driverOptions)
      const frozen = run(makeOperator, makeEvents(), { ...driverOptions, checkPurity: true })
      expect(outcome(frozen.driver)).toStrictEqual(outcome(plain.driver))
    })

    it('keeps plain-data state: every state survives a msgpack round-trip with the same tags', () => {
      const { steps, driver } = run(makeOperator, makeEvents(), driverOptions)
      const operator = makeOperator()
      // Ranks here are against the final population: the same for a state and its decoded copy.
      const ctx = readingContext(operator, driver, driverOptions.timeZone ?? 'UTC')
      for (const step of steps) {
        expect(plainDataIssues(step.after), `state of ${step.userId} after ${step.kind} at ${step.now}`).toStrictEqual([])
        const decoded: unknown = packr.unpack(packr.pack(step.after))
        expect(decoded).toStrictEqual(step.after)
        expect(operator.deriveTags(decoded, ctx(step.userId, step.now))).toStrictEqual(operator.deriveTags(step.after, ctx(step.userId, step.now)))
        if (operator.view !== undefined) {
          expect(operator.view(decoded, ctx(step.userId, step.now))).toStrictEqual(operator.view(step.after, ctx(step.userId, step.now)))
        }
      }
      // Loading every state from its encoding before each call (as the engine does) changes nothing.
      const plain = run(makeOperator, makeEvents(), driverOptions)
      const stored = run(makeOperator, makeEvents(), { ...driverOptions, roundTrip: true })
      expect(outcome(stored.driver)).toStrictEqual(outcome(plain.driver))
    })

    it('gives, for the view fields asked for, the values of the full view', () => {
      const { steps, driver } = run(makeOperator, makeEvents(), driverOptions)
      const operator = makeOperator()
      if (operator.view === undefined) return
      const view = operator.view.bind(operator)
      const ctx = readingContext(operator, driver, driverOptions.timeZone ?? 'UTC')
      let checked = 0
      steps.forEach((step, i) => {
        const c = ctx(step.userId, step.now)
        const full = view(step.after, c)
        const names = Object.keys(full)
        // Each field alone, and a few fields together (a rule's, a projection's).
        const asks = [...names.map((f) => [f]), names.filter((_, j) => (i + j) % 3 === 0)]
        for (const ask of asks) {
          const part = view(step.after, c, new Set(ask))
          for (const f of ask) expect(part[f], `${f} of ${step.userId} after ${step.kind} at ${step.now}`).toStrictEqual(full[f])
          checked++
        }
      })
      expect(checked).toBeGreaterThan(0)
    })

    it('fires its timers: no timer is left behind the clock and tags derived at the clock match the held tags', () => {
      const events = makeEvents()
      const driver = createDriver<unknown>(makeOperator(), driverOptions)
      const exact = options.exactBetweenCalls ?? true
      const checkAll = (where: string): void => {
        const overdue = driver.timers().filter((t) => t.dueMs <= driver.clock)
        expect(overdue, `${where}: timers due at or before the clock ${driver.clock}`).toStrictEqual([])
        for (const u of driver.users()) {
          expect(values(driver.derive(u)), `${where}: user ${u} at ${new Date(driver.clock).toISOString()}`).toStrictEqual(driver.tagValues(u))
        }
      }
      events.forEach((e, i) => {
        driver.apply(e.userId, e)
        // A timer an onEvent registered at or before the clock fires at the next advance; settle it.
        driver.advanceTo(driver.clock)
        if (exact) checkAll(`after event #${i} (${e.eventId})`)
      })
      const lastTs = Math.max(...events.map((e) => e.ts))
      driver.advanceTo(Math.max(driver.clock, lastTs) + settleMs)
      checkAll('after settling')
    })

    it('keeps its viewTimerFields, and every field outside viewClockFields, until its next timer', () => {
      const operator = makeOperator()
      if (operator.view === undefined || operator.viewClockFields === undefined) return
      const clockFields = new Set(operator.viewClockFields)
      const timerFields = operator.viewTimerFields ?? []
      for (const f of timerFields) expect(clockFields.has(f), `viewTimerFields "${f}" must be one of viewClockFields`).toBe(true)
      // What a projection keeps: the fields that must not move before the user's next timer.
      const kept = Object.keys(operator.viewSchema ?? {}).filter((f) => !clockFields.has(f) || timerFields.includes(f))
      const pick = (view: Readonly<Record<string, unknown>>): Record<string, unknown> => Object.fromEntries(kept.map((f) => [f, view[f] ?? null]))
      const driver = createDriver<unknown>(operator, driverOptions)
      let checked = 0
      const check = (userId: string, where: string): void => {
        const from = driver.clock
        const next = Math.min(...driver.timers(userId).map((t) => t.dueMs), from + 400 * DAY_MS)
        const at = pick(driver.view(userId, from))
        for (const t of [from + 1, from + DAY_MS / 2, Math.floor((from + next) / 2), next - DAY_MS, next - 1]) {
          if (t < from || t >= next) continue
          expect(pick(driver.view(userId, t)), `${where}: user ${userId}, view at ${new Date(t).toISOString()} against ${new Date(from).toISOString()}`).toStrictEqual(at)
          checked++
        }
      }
      makeEvents().forEach((e, i) => {
        driver.apply(e.userId, e)
        driver.advanceTo(driver.clock)
        check(e.userId, `after event #${i} (${e.eventId})`)
      })
      expect(checked).toBeGreaterThan(0)
    })

    it('gives with rescoreTagValues the tag values deriveTags gives, from the population values alone', () => {
      const operator = makeOperator()
      if (operator.rescoreTagValues === undefined) return
      expect(operator.rescore, 'rescoreTagValues is for rescore operators').toBe(true)
      const { steps, driver } = run(makeOperator, makeEvents(), driverOptions)
      const ctx = readingContext(operator, driver, driverOptions.timeZone ?? 'UTC')
      let tagged = 0
      for (const step of steps) {
        const expected = values(operator.deriveTags(step.after, ctx(step.userId, step.now)))
        if (Object.keys(expected).length > 0) tagged++
        expect(operator.rescoreTagValues((operator.scoredValues as NonNullable<Operator['scoredValues']>)(step.after), ctx(step.userId, step.now))).toStrictEqual(expected)
      }
      expect(tagged).toBeGreaterThan(0)
    })

    it('returns a fresh initial state on each call, deriving no tags', () => {
      const operator = makeOperator()
      const a: unknown = operator.initialState()
      const b: unknown = operator.initialState()
      expect(a).not.toBe(b)
      expect(b).toStrictEqual(a)
      expect(sharedObjects(a, b), 'mutable objects shared between two initial states').toStrictEqual([])
      expect(plainDataIssues(a)).toStrictEqual([])
      expect(packr.unpack(packr.pack(a))).toStrictEqual(a)
      if (!(options.initialStateDerivesTags ?? false)) {
        const driver = createDriver<unknown>(operator, driverOptions)
        expect(driver.derive('nobody', 0)).toStrictEqual({})
        expect(driver.derive('nobody', Date.UTC(2030, 0, 1))).toStrictEqual({})
      }
    })

    it('derives only the tags it declares, with values of the declared type', () => {
      const operator = makeOperator()
      const declared = new Map(operator.tags.map((t) => [t.id, t]))
      expect(declared.size, 'tag ids must be unique').toBe(operator.tags.length)
      for (const t of operator.tags) {
        expect(t.id).toMatch(/^\S+$/)
        expect(typeof t.description).toBe('string')
        expect(t.category.length).toBeGreaterThanOrEqual(2)
        expect(t.category.length).toBeLessThanOrEqual(3)
        for (const level of t.category) expect(level).toMatch(/\S/)
        expect(['string', 'number', 'boolean']).toContain(t.valueType)
      }
      const { steps } = run(makeOperator, makeEvents(), driverOptions)
      const seen: DerivedTags[] = steps.map((s) => s.tags)
      expect(seen.some((tags) => Object.keys(tags).length > 0), 'the events should derive at least one tag').toBe(true)
      for (const tags of seen) {
        for (const [id, tag] of Object.entries(tags)) {
          const decl = declared.get(id)
          expect(decl, `tag "${id}" is not declared in operator.tags`).toBeDefined()
          expect(typeof tag.value, `value of "${id}"`).toBe(decl?.valueType)
          if (typeof tag.value === 'number') expect(Number.isFinite(tag.value), `value of "${id}" is finite`).toBe(true)
          if (tag.evidence !== undefined) expect(packr.unpack(packr.pack(tag.evidence))).toStrictEqual(tag.evidence)
        }
      }
    })
  })
}
