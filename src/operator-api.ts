/**
 * The operator contract: what a module in `operators/` implements. Shape taken from Kafka Streams'
 * Processor API and Flink's KeyedProcessFunction, as a decider (initial state, evolve on events and
 * timers, derive tags).
 *
 * Rules every operator follows (the contract suite in tests/operators checks them):
 * - Pure and synchronous: no I/O, no clock reads, no randomness. Time comes from `ctx.now`.
 * - Never mutates the state it is given: return a new state object, or the same object when nothing
 *   changed (the engine then skips re-deriving tags). If an operator throws, the engine keeps the
 *   previous state and dead-letters the event with reason `operator_error`.
 * - State is plain data (objects, arrays, strings, numbers, booleans, null): it is stored as msgpack.
 * - The context is only valid during the call.
 */
import { Type, type TArray, type TSchema, type TString } from '@sinclair/typebox'
import { ErrorCodes, TagstreamError } from './errors.js'
import type { InputEvent } from './contracts/input-event.js'
import type { TagValue } from './contracts/tag-change.js'

export type { InputEvent, TagValue }

export { DAY_MS, calendarFor, type Calendar } from './time/calendar.js'
/** `new Date(ms).toISOString()`, faster: for the instants operators put in views and evidence. */
export { isoString } from './time/iso.js'

/**
 * Statistics of one dimension (e.g. `monetary`) over every scored user this engine holds,
 * maintained incrementally by the engine from each user's `scoredValues`. Read-only for operators.
 */
export interface PopulationView {
  /** Users with a value in this dimension. */
  readonly count: number
  /** "min" rank of `value`, 1-based: 1 + the number of users whose value is smaller. */
  rank(value: number): number
  /** The largest min rank: the rank of the largest value (0 when empty). */
  maxRank(): number
  /** Mean of the values (NaN when empty). */
  mean(): number
}

/** What an operator sees of the engine during a call. */
export interface OperatorContext {
  /**
   * The partition's clock, epoch ms: its watermark (highest event time seen minus the allowed
   * lateness), or the `asOf` of a query, or the due time of the timer being fired. Never a wall clock.
   */
  readonly now: number
  /** The configured IANA time zone, for day boundaries. */
  readonly timeZone: string
  /** The user's id (for evidence and keys; never for randomness). */
  readonly userId: string
  /**
   * Registers (or moves) this operator's timer `name` for the current user to fire at `dueMs` (event
   * time). A timer fires once the watermark reaches `dueMs`. One timer per name per user.
   */
  setTimer(name: string, dueMs: number): void
  /** Cancels this operator's timer `name` for the current user, if any. */
  deleteTimer(name: string): void
  /** Due time of this operator's timer `name` for the current user, or undefined. */
  timer(name: string): number | undefined
  /**
   * Population statistics of one of this operator's declared `population` dimensions, as they
   * stand at this point of the stream (in a re-scoring sweep: frozen at the sweep's clock), over
   * the users of `engine.populationScope`: the process's partitions, or this user's partition.
   */
  population(dimension: string): PopulationView
}

/** A tag value an operator derives, with the inputs that decided it. */
export interface DerivedTag {
  readonly value: TagValue
  readonly evidence?: Readonly<Record<string, unknown>>
}

/** The tags an operator derives from a state: tag id -> value. An absent tag means the user does not have it. */
export type DerivedTags = Readonly<Record<string, DerivedTag>>

export interface TimerFired {
  /** The timer's name as the operator registered it. */
  readonly name: string
  /** When it was due, epoch ms. */
  readonly dueMs: number
}

export interface TagDeclaration {
  readonly id: string
  readonly description: string
  /** Category path in the tag tree, 2-3 levels, e.g. ['behaviour', 'purchase', 'frequency']. */
  readonly category: readonly string[]
  readonly valueType: 'string' | 'number' | 'boolean'
}

/** A configured operator: one instance per entry in the config's `operators` list. */
export interface Operator<S = unknown> {
  /** The instance name from the config; it keys the operator's state in profiles. */
  readonly name: string
  /** Every tag this operator can derive. */
  readonly tags: readonly TagDeclaration[]
  /** Event types this operator reacts to; undefined means all. Used to build dispatch tables at start. */
  readonly eventTypes?: readonly string[]
  /** State of a user this operator has not seen yet. */
  initialState(): S
  /** Applies one event. Returns the new state, or `state` itself when the event changes nothing. */
  onEvent(state: S, event: InputEvent, ctx: OperatorContext): S
  /** Applies a fired timer. Returns the new state, or `state` itself. */
  onTimer?(state: S, timer: TimerFired, ctx: OperatorContext): S
  /** Derives the operator's tags from a state, at the clock `ctx.now`. */
  deriveTags(state: S, ctx: OperatorContext): DerivedTags
  /**
   * The user's public state as shown in profiles (`state.<name>`), evaluated at `ctx.now` (the
   * partition clock or a query's `asOf`). Defaults to the state itself.
   *
   * `fields`, when given, are the only fields the caller reads (a rule's, a projection's): the
   * operator may leave the others out, and should when they cost (ISO strings, population ranks).
   * A field it returns must have the value the full view gives.
   */
  view?(state: S, ctx: OperatorContext, fields?: ReadonlySet<string>): Readonly<Record<string, unknown>>
  /**
   * The typed fields of `view` that strategy-tag rules may read (`rfm.monetary90d`): field -> type.
   * Fields left out (nested objects, lists of objects) are shown in profiles but not visible to rules.
   * A field whose value is null for a user is absent in the rule view (`has(rfm.segment)` is false).
   */
  readonly viewSchema?: ViewSchema
  /**
   * The `viewSchema` fields whose value depends on the clock or the population (`ctx.now`,
   * `ctx.population`): rules reading them are re-evaluated in the daily sweep. Rules reading only
   * other fields change only with events and timers. Undefined: every field is taken to depend on them.
   */
  readonly viewClockFields?: readonly string[]
  /**
   * The `viewClockFields` whose value, for an unchanged state, moves only at the instant one of the
   * operator's own timers is due (window totals that change when a day leaves the window, a stage
   * that changes when its transition timer fires): a value computed at one clock holds until the
   * user's next timer. Sweeps and rule previews read them from the compact per-user projection
   * instead of the full record. Fields that move with every day or with the population must not be
   * listed.
   */
  readonly viewTimerFields?: readonly string[]
  /** Dimensions this operator ranks users on (e.g. `['recency', 'frequency', 'monetary']`). */
  readonly population?: readonly string[]
  /**
   * This user's values in the `population` dimensions; a dimension left out means the user is not
   * scored in it. The engine keeps the population statistics in step whenever this changes.
   * Values must not depend on the clock (rank by last purchase day, not by days since).
   */
  scoredValues?(state: S): Readonly<Record<string, number>>
  /**
   * Tags that change without an event of the user (they depend on the population, or on the
   * clock without a timer) need the periodic re-scoring sweep: set this to true.
   */
  readonly rescore?: boolean
  /**
   * For a `rescore` operator whose tag values depend only on `scoredValues` and the population: the
   * tag values (without evidence) `deriveTags` gives a state with these population values, at
   * `ctx.now` against `ctx.population`. Must equal `deriveTags`' values for every such state. Lets a
   * sweep re-score users from their compact projections and read full records only where a tag moves.
   */
  rescoreTagValues?(scored: Readonly<Record<string, number>>, ctx: OperatorContext): Readonly<Record<string, TagValue>>
}

/** For an operator's `view`: whether its caller reads `field` (every field when `fields` is undefined). */
export function viewWants(fields: ReadonlySet<string> | undefined): (field: string) => boolean {
  return fields === undefined ? () => true : (field) => fields.has(field)
}

/** A field of an operator's view as rules see it (CEL types; `timestamp` fields are ISO-8601 strings in the view). */
export type ViewFieldType = 'int' | 'double' | 'string' | 'bool' | 'timestamp' | 'list<string>'

export type ViewSchema = Readonly<Record<string, ViewFieldType>>

/** What the engine tells an operator factory about its environment. */
export interface OperatorEnvironment {
  readonly timeZone: string
}

/**
 * The default export of a module in `operators/`, or of a user module named in the config with
 * `module:`. `configSchema` is a TypeBox/JSON schema; the engine validates the config (with
 * defaults applied) before calling `create`.
 */
export interface OperatorFactory<C = unknown, S = unknown> {
  readonly type: string
  readonly description: string
  readonly configSchema: TSchema
  create(name: string, config: C, env: OperatorEnvironment): Operator<S>
}

export function defineOperator<C, S>(factory: OperatorFactory<C, S>): OperatorFactory<C, S> {
  return factory
}

/** Tag ids are identifiers: they appear in rules (`tags.rfm_segment == "Champions"`), labels and URLs. */
export const TAG_ID_PATTERN = '^[A-Za-z][A-Za-z0-9_]*$'
const TAG_ID_RE = new RegExp(TAG_ID_PATTERN)

export function isTagId(id: string): boolean {
  return TAG_ID_RE.test(id)
}

/** The place of an operator's tags in the 2-3 level category tree, for config schemas. */
export function categorySchema(defaultPath: readonly string[]): TArray<TString> {
  return Type.Array(Type.String({ minLength: 1 }), { minItems: 2, maxItems: 3, default: [...defaultPath] })
}

/** The error an operator factory throws for a config its schema cannot rule out (names the key). */
export function operatorConfigError(operator: string, message: string, key: string): TagstreamError {
  return new TagstreamError(ErrorCodes.OPERATOR_CONFIG_INVALID, `operator "${operator}": ${message}`, {
    details: { operator, key, issues: [{ key, message }] },
  })
}
