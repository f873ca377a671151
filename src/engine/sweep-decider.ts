/**
 * What a re-scoring sweep decides from a user's projection alone: whether the sweep, at its instant
 * and against its frozen population, leaves every re-scored tag and every clock-dependent rule of
 * the user as the projection shows them. The engine's thread and sweep worker threads run the same
 * decisions (`SweepDecider`); a user it cannot clear is re-scored from the full record.
 */
import type { TagValue } from '../contracts/tag-change.js'
import type { Operator, PopulationView } from '../operator-api.js'
import type { CompiledRule, RuleView } from '../tags/rules.js'
import { ScoreContext, type ProjectionReader } from './projection.js'

/** The part of a tag lane a decision compares with. */
export interface DecisionLane {
  readonly id: string
  readonly version: number
  /** `online` lanes are stored tags; testing lanes keep only their value. */
  readonly emit: boolean
}

/** A re-scoring operator: its tags come from `rescoreTagValues` over its projected scored values. */
export interface DecisionRescored {
  readonly op: Operator
  /** Its index in the projection layout's `rescored` (ProjectionReader.scoredOf). */
  readonly scoredIndex: number
  readonly lanes: readonly DecisionLane[]
}

/** A clock-dependent strategy rule, evaluated on the projected view. */
export interface DecisionRule {
  readonly lane: DecisionLane
  readonly valueType: 'string' | 'number' | 'boolean'
  readonly rule: CompiledRule
  readonly view: (r: ProjectionReader) => RuleView | undefined
}

/** A rule that gave an error: the lane keeps its value (never a decision from a projection). */
const KEEP = Symbol('keep')

/** Whether a lane's value (and version) in a projection equals `value` (undefined: no value). */
export function laneHolds(p: ProjectionReader, lane: DecisionLane, value: TagValue | undefined): boolean {
  if (!lane.emit) return p.testingValue(lane.id) === (value ?? null)
  return p.tagHolds(lane.id, value, lane.version)
}

/** A strategy lane's value on a projected view, as the engine's rule evaluation decides it (without evidence). */
function projectedRuleValue(r: DecisionRule, view: RuleView | undefined): TagValue | undefined | typeof KEEP {
  if (view === undefined) return undefined
  const result = r.rule.evaluate(view)
  if (!result.ok) return result.code === 'no_such_field' ? undefined : KEEP
  if (result.value === false) return undefined
  if (typeof result.value !== r.valueType) return KEEP
  return result.value
}

export class SweepDecider {
  constructor(
    /** The sweep's instant. */
    readonly at: number,
    private readonly timeZone: string,
    /** The population as it was at the sweep's start, by operator and dimension. */
    private readonly population: (operator: string, dimension: string) => PopulationView,
    private readonly rescored: readonly DecisionRescored[],
    private readonly rules: readonly DecisionRule[],
  ) {}

  /**
   * Whether the sweep leaves the user as its projection shows it. Returns the rule evaluations it
   * took, or -1 when the full record must be re-scored (something moves, an error, or a projection
   * that does not hold at the instant).
   */
  decide(p: ProjectionReader, userId: string): number {
    const at = this.at
    const clock = p.clock
    if (clock === null || clock > at) return -1
    let ctx: ScoreContext | undefined
    for (const r of this.rescored) {
      const scored = p.scoredOf(r.scoredIndex)
      if (scored === undefined) continue // no state: the record's re-scoring skips the operator too
      ctx ??= new ScoreContext(at, this.timeZone, userId, this.population)
      ctx.operator = r.op.name
      let values: Readonly<Record<string, TagValue>>
      try {
        values = (r.op.rescoreTagValues as NonNullable<Operator['rescoreTagValues']>)(scored, ctx)
      } catch {
        return -1
      }
      for (const lane of r.lanes) if (!laneHolds(p, lane, values[lane.id])) return -1
    }
    if (this.rules.length === 0) return 0
    if (!p.holdsAt(at)) return -1
    for (const r of this.rules) {
      const next = projectedRuleValue(r, r.view(p))
      if (next === KEEP || !laneHolds(p, r.lane, next)) return -1
    }
    return this.rules.length
  }
}
