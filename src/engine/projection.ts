import type { TagValue } from '../contracts/tag-change.js'
import type { Operator, OperatorContext, PopulationView } from '../operator-api.js'
import type { StoredTag, UserRecord } from './user-record.js'

/**
 * A user's projection: the few values re-scoring sweeps and rule previews need, committed with the
 * user record in the same atomic batch (`p<4hex>!v!<userId>`), so that they scan small values
 * instead of reading and decoding every full record.
 *
 * It holds the user's tag values, the population values of the re-scoring operators, and the
 * operators' rule-visible view fields that a clock change does not move before the user's next
 * timer: fields that do not depend on the clock at all, and an operator's `viewTimerFields`. The
 * view is computed at the partition clock `clock` of the commit; it holds for any instant t with
 * clock <= t < validUntil (the user's first pending timer), since the state does not change before
 * that without the record (and this projection) being written again. Fields that move with the day
 * (`recencyDays`) or the population (`segment`) are left out: rules reading them use full records.
 *
 * msgpack array: [clock, validUntil | null, rs | null, tags, tt | null, scored, views]
 *   tags    tag id -> [value, version] (the online tags, as `rec.tags` without since/quiet)
 *   tt      testing lane values (`rec.tt`)
 *   scored  per re-scoring operator of the layout: null (no state) or its dimensions' values (null: not scored)
 *   views   per projected operator: null (no state) or its projected fields' values (null: absent)
 */
export type EncodedProjection = [
  clock: number | null,
  validUntil: number | null,
  rs: number | null,
  tags: Record<string, [TagValue, number]>,
  tt: Record<string, TagValue> | null,
  scored: ((number | null)[] | null)[],
  views: (unknown[] | null)[],
]

/** The fields of one operator's view kept in projections. */
export interface ProjectedOperator {
  readonly op: Operator
  readonly fields: readonly string[]
  readonly index: ReadonlyMap<string, number>
}

/** An operator whose re-scored tag values come from its population values alone (see `Operator.rescoreTagValues`). */
export interface RescoredOperator {
  readonly op: Operator
  readonly dimensions: readonly string[]
}

export class ProjectionLayout {
  readonly operators: readonly ProjectedOperator[]
  readonly byName: ReadonlyMap<string, number>
  readonly rescored: readonly RescoredOperator[]
  /** Stored with each partition's clock: a partition whose projections were written with another layout is rebuilt. */
  readonly id: string
  /**
   * The projected fields last computed for an operator state, and the user's next timer then: an
   * event touches one or two operators of a user, and its commit recomputes only their views.
   */
  private readonly projected = new WeakMap<object, { readonly until: number | null; readonly values: unknown[] }>()

  constructor(operators: readonly Operator[]) {
    this.operators = operators
      .filter((op) => op.viewSchema !== undefined && op.name !== 'tags')
      .map((op) => {
        const clock = op.viewClockFields === undefined ? undefined : new Set(op.viewClockFields)
        const timer = new Set(op.viewTimerFields ?? [])
        // Undeclared clock fields: every field may move with the clock, none is kept.
        const fields = Object.keys(op.viewSchema ?? {}).filter((f) => clock !== undefined && (!clock.has(f) || timer.has(f)))
        return { op, fields, index: new Map(fields.map((f, i) => [f, i])) }
      })
    this.byName = new Map(this.operators.map((o, i) => [o.op.name, i]))
    this.rescored = operators
      .filter((op) => op.rescore === true && op.scoredValues !== undefined && op.rescoreTagValues !== undefined)
      .map((op) => ({ op, dimensions: op.population ?? [] }))
    this.id = JSON.stringify({
      v: 1,
      views: this.operators.map((o) => [o.op.name, o.fields]),
      scored: this.rescored.map((r) => [r.op.name, r.dimensions]),
    })
  }

  /** Whether a rule view's field comes from projections. */
  has(variable: string, field: string): boolean {
    const i = this.byName.get(variable)
    return i !== undefined && (this.operators[i] as ProjectedOperator).index.has(field)
  }

  /**
   * The projection of a user at the partition clock `clock`. `view(op, state)` is the operator's
   * view at that clock (the engine's call context).
   */
  project(rec: UserRecord, clock: number, view: (op: Operator, state: unknown) => Readonly<Record<string, unknown>>): EncodedProjection {
    const validUntil = nextTimer(rec)
    const tags = tagsOf(rec)
    const scored = this.rescored.map(({ op, dimensions }) => {
      const state = rec.ops[op.name]
      if (state === undefined) return null
      const values = op.scoredValues!(state)
      return dimensions.map((d) => values[d] ?? null)
    })
    const views = this.operators.map(({ op, fields }) => {
      const state = rec.ops[op.name]
      if (state === undefined || !Number.isFinite(clock)) return null
      // The fields of a state the user had at its last commit, with the same next timer, are what
      // they were then: they hold until that timer (see above), and operators never mutate a state.
      const memo = typeof state === 'object' && state !== null ? this.projected.get(state) : undefined
      if (memo !== undefined && memo.until === validUntil) return memo.values
      const v = op.view === undefined ? (state as Record<string, unknown>) : view(op, state)
      const values = fields.map((f) => v[f] ?? null)
      if (typeof state === 'object' && state !== null) this.projected.set(state, { until: validUntil, values })
      return values
    })
    // No clock yet (a store converted before any event time): a projection that never holds.
    return [Number.isFinite(clock) ? clock : null, validUntil, rec.rs ?? null, tags, rec.tt ?? null, scored, views]
  }

  /**
   * Whether `stored`, the projection of a record whose operator states were `ops`, still has the
   * record's views: the same state objects (operators never mutate one) and the same next timer.
   */
  sameViews(rec: UserRecord, ops: Readonly<Record<string, unknown>>, stored: EncodedProjection): boolean {
    let n = 0
    for (const name in rec.ops) {
      if (rec.ops[name] !== ops[name]) return false
      n++
    }
    if (n !== Object.keys(ops).length) return false
    return nextTimer(rec) === stored[1]
  }

  /** `stored` with the record's tags, testing values and sweep instant (its views and clock kept). */
  withTags(rec: UserRecord, stored: EncodedProjection): EncodedProjection {
    return [stored[0], stored[1], rec.rs ?? null, tagsOf(rec), rec.tt ?? null, stored[5], stored[6]]
  }

  /** The view fields of one operator as a plain object (absent fields left out), for rule views. */
  operatorView(p: EncodedProjection, variable: string): Readonly<Record<string, unknown>> {
    const i = this.byName.get(variable)
    const values = i === undefined ? null : p[6][i]
    if (values === null || values === undefined) return NO_FIELDS
    const fields = (this.operators[i as number] as ProjectedOperator).fields
    const out: Record<string, unknown> = {}
    for (let f = 0; f < fields.length; f++) {
      const v = values[f]
      if (v !== null && v !== undefined) out[fields[f] as string] = v
    }
    return out
  }

  /** A re-scoring operator's population values of a projection (undefined: the user has no state for it). */
  scoredOf(p: EncodedProjection, index: number): Readonly<Record<string, number>> | undefined {
    const values = p[5][index]
    if (values === null || values === undefined) return undefined
    const dims = (this.rescored[index] as RescoredOperator).dimensions
    const out: Record<string, number> = {}
    for (let d = 0; d < dims.length; d++) {
      const v = values[d]
      if (v !== null && v !== undefined) out[dims[d] as string] = v
    }
    return out
  }
}

const NO_FIELDS: Readonly<Record<string, unknown>> = Object.freeze({})

/** The user's first pending timer (null: none): until then a projection's views hold. */
function nextTimer(rec: UserRecord): number | null {
  let next: number | null = null
  for (const k in rec.timers) {
    const due = rec.timers[k] as number
    if (next === null || due < next) next = due
  }
  return next
}

function tagsOf(rec: UserRecord): Record<string, [TagValue, number]> {
  const tags: Record<string, [TagValue, number]> = {}
  for (const id in rec.tags) {
    const t = rec.tags[id] as StoredTag
    tags[id] = [t[0], t[2]]
  }
  return tags
}

/** Whether a projection's view holds at instant `at` (computed at or before it, no timer due by then). */
export function projectionHoldsAt(p: EncodedProjection, at: number): boolean {
  return p[0] !== null && p[0] <= at && (p[1] === null || at < p[1])
}

/**
 * The context of `rescoreTagValues` in a sweep: the clock and the population, nothing of a user
 * record (no timers can be set from it).
 */
export class ScoreContext implements OperatorContext {
  operator = ''
  constructor(
    readonly now: number,
    readonly timeZone: string,
    readonly userId: string,
    private readonly populationOf: (operator: string, dimension: string) => PopulationView,
  ) {}

  population(dimension: string): PopulationView {
    return this.populationOf(this.operator, dimension)
  }

  setTimer(): void {
    throw new Error('rescoreTagValues cannot set timers')
  }

  deleteTimer(): void {
    throw new Error('rescoreTagValues cannot delete timers')
  }

  timer(): number | undefined {
    return undefined
  }
}
