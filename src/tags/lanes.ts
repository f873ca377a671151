import type { Operator } from '../operator-api.js'
import { DEFAULT_REENTRY, type PublishMode, type ReentryPolicy, type RuleValidator, type TagValueType, type TagVersion } from './catalog-schema.js'
import type { TagCatalog } from './catalog.js'
import { compileRule, isRuleErrors, ruleViewBuilder, type CompiledRule, type RuleFieldType, type RuleSchema, type RuleView, type RuleViewSource } from './rules.js'

/**
 * What the engine evaluates, derived from the catalog and the configured operators.
 *
 * A tag has up to two *lanes*: its online version (lane = tag id: stored, indexed and emitted) and
 * its latest testing version (lane = `<id>~testing`: evaluated and counted, never emitted), so a
 * new version can be tested on live traffic while the old one serves journeys. `~` cannot occur in
 * a tag id. A tag an operator derives that the catalog does not know is online at version 1.
 */
export interface LaneSpec {
  readonly lane: string
  readonly id: string
  readonly version: number
  readonly status: 'online' | 'testing'
  readonly valueType: TagValueType
  readonly reentry: ReentryPolicy
  /** The operator deriving it (fact and model tags). */
  readonly operator?: string
  /** The CEL rule (strategy tags). */
  readonly rule?: string
  /** The mode its publication was recorded with (announce or silent); undefined for file loads. */
  readonly mode?: PublishMode
}

export const TESTING_LANE_SUFFIX = '~testing'

export function laneOf(id: string, status: 'online' | 'testing'): string {
  return status === 'online' ? id : `${id}${TESTING_LANE_SUFFIX}`
}

/** The mode recorded with a version's last move online or offline. */
export function recordedMode(v: TagVersion): PublishMode | undefined {
  for (let i = v.transitions.length - 1; i >= 0; i--) {
    const t = v.transitions[i]
    if (t?.mode !== undefined) return t.mode
  }
  return undefined
}

function spec(v: TagVersion, status: 'online' | 'testing', operator: string | undefined): LaneSpec {
  const mode = recordedMode(v)
  return {
    lane: laneOf(v.id, status),
    id: v.id,
    version: v.version,
    status,
    valueType: v.valueType,
    reentry: v.reentry,
    ...(operator !== undefined ? { operator } : {}),
    ...(v.kind === 'strategy' && v.rule !== undefined ? { rule: v.rule } : {}),
    ...(mode !== undefined ? { mode } : {}),
  }
}

/** Every lane the engine should evaluate now: lane -> spec, in lane order. */
export function desiredLanes(catalog: TagCatalog | undefined, operators: readonly Operator[]): Map<string, LaneSpec> {
  const out = new Map<string, LaneSpec>()
  const operatorOf = new Map<string, Operator>()
  for (const op of operators) for (const t of op.tags) if (!operatorOf.has(t.id)) operatorOf.set(t.id, op)
  const { online, testing } = catalog?.evaluated() ?? { online: [], testing: [] }
  const known = new Set<string>()
  for (const v of online) {
    known.add(v.id)
    const op = operatorOf.get(v.id)
    if (v.kind !== 'strategy' && op === undefined) continue // no configured operator derives it
    out.set(v.id, spec(v, 'online', v.kind === 'strategy' ? undefined : op?.name))
  }
  const latestTesting = new Map<string, TagVersion>()
  for (const v of testing) latestTesting.set(v.id, v) // ascending by version: the last wins
  for (const v of latestTesting.values()) {
    known.add(v.id)
    const op = operatorOf.get(v.id)
    if (v.kind !== 'strategy' && op === undefined) continue
    out.set(laneOf(v.id, 'testing'), spec(v, 'testing', v.kind === 'strategy' ? undefined : op?.name))
  }
  for (const [id, op] of operatorOf) {
    if (known.has(id) || catalog?.has(id) === true) continue
    const decl = op.tags.find((t) => t.id === id)
    out.set(id, { lane: id, id, version: 1, status: 'online', valueType: decl?.valueType ?? 'string', reentry: DEFAULT_REENTRY, operator: op.name })
  }
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

/** Whether two specs evaluate the same way (a change needs a re-evaluation pass). */
export function sameEvaluation(a: LaneSpec | undefined, b: LaneSpec | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.version === b.version && a.rule === b.rule && a.operator === b.operator && a.status === b.status
}

const VALUE_TYPES: Readonly<Record<TagValueType, RuleFieldType>> = { string: 'string', number: 'double', boolean: 'bool' }

/**
 * The typed view strategy rules are checked against: one variable per operator that declares a
 * `viewSchema` (its name), and `tags`: every tag an operator derives or the catalog defines.
 */
export function buildRuleSchema(
  operators: readonly Operator[],
  catalog: TagCatalog | undefined,
  pendingTags: readonly { readonly id: string; readonly valueType: TagValueType }[] = [],
): RuleSchema {
  const schema: Record<string, Record<string, RuleFieldType>> = {}
  const tags: Record<string, RuleFieldType> = {}
  for (const op of operators) {
    if (op.viewSchema !== undefined && op.name !== 'tags') schema[op.name] = { ...op.viewSchema }
    for (const t of op.tags) tags[t.id] = VALUE_TYPES[t.valueType]
  }
  for (const t of catalog?.list() ?? []) tags[t.id] ??= VALUE_TYPES[t.valueType]
  for (const t of pendingTags) tags[t.id] ??= VALUE_TYPES[t.valueType]
  schema.tags = tags
  return schema
}

/**
 * The catalog's definition-time check of a rule: compiled against the operators' views and every
 * tag the catalog (`catalog()`, read at each check) and the definitions being loaded name.
 */
export function catalogRuleValidator(operators: readonly Operator[], catalog: () => TagCatalog | undefined): RuleValidator {
  return (rule, pending) => {
    const compiled = compileRule(rule, buildRuleSchema(operators, catalog(), pending))
    return isRuleErrors(compiled) ? compiled.map((e) => ({ message: e.message, ...e.position })) : []
  }
}

/** A rule compiled for the engine: what it reads decides when it is re-evaluated. */
export interface CompiledLaneRule {
  readonly rule: CompiledRule
  /** Operators whose state the rule reads. */
  readonly operators: ReadonlySet<string>
  /** Tags whose value the rule reads. */
  readonly tags: ReadonlySet<string>
  /** Builds the view the rule reads (undefined: a field is missing and the rule can give no value). */
  readonly view: (source: RuleViewSource) => RuleView | undefined
  /** Whether it reads a field that depends on the clock or the population: re-evaluated in sweeps. */
  readonly clockDependent: boolean
}

/**
 * Compiles a lane's rule. `clockFields(variable)` names an operator's clock-dependent view fields
 * (undefined: all of them, or not an operator).
 */
export function compileLaneRule(
  expression: string,
  schema: RuleSchema,
  clockFields: (variable: string) => ReadonlySet<string> | undefined = () => undefined,
): CompiledLaneRule | string {
  const compiled = compileRule(expression, schema)
  if (isRuleErrors(compiled)) return compiled.map((e) => `${e.message} (line ${e.position.line}, column ${e.position.column})`).join('; ')
  const dependsOnClock = (variable: string, field: string | undefined): boolean => {
    if (variable === 'tags') return false // tags change through events, timers and sweeps, which re-evaluate readers
    const fields = clockFields(variable)
    return fields === undefined || field === undefined || fields.has(field)
  }
  return {
    clockDependent:
      compiled.wholeVariables.some((v) => dependsOnClock(v, undefined)) || compiled.fields.some(([variable, field]) => dependsOnClock(variable, field)),
    rule: compiled,
    operators: new Set(compiled.variables.filter((v) => v !== 'tags')),
    tags: new Set(compiled.tagRefs),
    view: ruleViewBuilder(compiled, schema),
  }
}

/**
 * Orders strategy lanes so that a rule reading another strategy tag comes after it (a cycle, which
 * the rules allow to be written, keeps lane order among its members).
 */
export function evaluationOrder<T extends { readonly id: string; readonly lane: string; readonly reads: ReadonlySet<string> }>(lanes: readonly T[]): T[] {
  const byId = new Map<string, T[]>()
  for (const l of lanes) byId.set(l.id, [...(byId.get(l.id) ?? []), l])
  const out: T[] = []
  const state = new Map<T, 'visiting' | 'done'>()
  const visit = (l: T): void => {
    if (state.has(l)) return
    state.set(l, 'visiting')
    for (const dep of [...l.reads].sort()) for (const d of byId.get(dep) ?? []) if (d !== l) visit(d)
    state.set(l, 'done')
    out.push(l)
  }
  for (const l of [...lanes].sort((a, b) => (a.lane < b.lane ? -1 : 1))) visit(l)
  return out
}
