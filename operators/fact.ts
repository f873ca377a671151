/**
 * Fact-attribute operator: copies scalar attributes from events onto the user (`city`, `plan`,
 * `newsletter`), one tag per attribute. Last write wins by *event time*, so replays and late events
 * give the same answer as an in-order stream; `null` removes the attribute.
 */
import { Type, type Static } from '@sinclair/typebox'
import {
  defineOperator,
  type DerivedTag,
  type DerivedTags,
  type InputEvent,
  type Operator,
  type TagDeclaration,
  type TagValue,
  type ViewFieldType,
  TAG_ID_PATTERN,
  isTagId,
  operatorConfigError,
  isoString,
} from '../src/operator-api.js'

/** Tag ids are identifiers (same shape as operator instance names), so rules can name them. */

const ValueTypeSchema = Type.Union([Type.Literal('string'), Type.Literal('number'), Type.Literal('boolean')], {
  default: 'string',
  description:
    'The tag value type. string: strings as-is, finite numbers and booleans converted with String(); ' +
    'number: finite numbers only; boolean: booleans only. Values of another type are ignored.',
})

const AttributeSchema = Type.Object(
  {
    property: Type.String({ minLength: 1, description: 'Key in the event properties' }),
    tag: Type.Optional(Type.String({ pattern: TAG_ID_PATTERN, description: 'Tag id (default: the property name)' })),
    valueType: ValueTypeSchema,
    eventTypes: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Event types that set it (default: any)' }),
    ),
    description: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
)

export const FactConfigSchema = Type.Object(
  {
    attributes: Type.Array(AttributeSchema, { minItems: 1 }),
    category: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 2,
      maxItems: 3,
      default: ['profile', 'attributes'],
      description: 'Category path of every tag this instance declares',
    }),
  },
  { additionalProperties: false },
)

export type FactConfig = Static<typeof FactConfigSchema>
export type FactValueType = 'string' | 'number' | 'boolean'

/** One attribute's last write. `value: null` is a tombstone: removed at `ts` (older writes stay ignored). */
export interface FactEntry {
  readonly value: TagValue | null
  /** Event time of the latest write, epoch ms. */
  readonly ts: number
}

export interface FactState {
  /** Keyed by tag id (a property may feed several tags, from different event types). */
  readonly attributes: Readonly<Record<string, FactEntry>>
}

interface Plan {
  readonly property: string
  readonly tag: string
  readonly coerce: (raw: unknown) => TagValue | null | undefined
}

// undefined: not a value this attribute takes (ignored); null: removes it.
/** Fact values as rules see them: numbers are CEL doubles. */
const VIEW_TYPES: Record<FactValueType, ViewFieldType> = { string: 'string', number: 'double', boolean: 'bool' }

const COERCE: Record<FactValueType, (raw: unknown) => TagValue | null | undefined> = {
  string: (raw) => {
    if (raw === null) return null
    if (typeof raw === 'string' || typeof raw === 'boolean') return String(raw)
    if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw)
    return undefined
  },
  number: (raw) => (raw === null ? null : typeof raw === 'number' && Number.isFinite(raw) ? raw : undefined),
  boolean: (raw) => (raw === null ? null : typeof raw === 'boolean' ? raw : undefined),
}

const invalid = operatorConfigError

function own<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined
}

export default defineOperator<FactConfig, FactState>({
  type: 'fact',
  description: 'Scalar attributes taken from event properties, one tag per attribute; latest event time wins, null removes',
  configSchema: FactConfigSchema,

  create(name, config): Operator<FactState> {
    const plans: Plan[] = []
    const declarations: TagDeclaration[] = []
    const typesOf = new Map<Plan, ReadonlySet<string> | undefined>()
    const seen = new Set<string>()

    config.attributes.forEach((attr, i) => {
      const tag = attr.tag ?? attr.property
      if (!isTagId(tag)) {
        throw invalid(name, `attribute "${attr.property}" needs a "tag" matching ${TAG_ID_PATTERN}`, `attributes[${i}].tag`)
      }
      if (seen.has(tag)) throw invalid(name, `duplicate tag "${tag}"`, `attributes[${i}].tag`)
      seen.add(tag)
      const plan: Plan = { property: attr.property, tag, coerce: COERCE[attr.valueType] }
      plans.push(plan)
      typesOf.set(plan, attr.eventTypes === undefined ? undefined : new Set(attr.eventTypes))
      declarations.push({
        id: tag,
        description: attr.description ?? `Attribute "${attr.property}" from events`,
        category: [...config.category],
        valueType: attr.valueType,
      })
    })

    // Dispatch decided once: event type -> the attributes it may set, in config order. Types not
    // listed by any attribute get the attributes that take any event type.
    const anyType = plans.filter((p) => typesOf.get(p) === undefined)
    const byType = new Map<string, readonly Plan[]>()
    for (const types of typesOf.values()) {
      for (const type of types ?? []) {
        if (!byType.has(type)) byType.set(type, plans.filter((p) => typesOf.get(p)?.has(type) ?? true))
      }
    }
    const eventTypes = anyType.length > 0 ? undefined : [...byType.keys()]

    function onEvent(state: FactState, event: InputEvent): FactState {
      const candidates = byType.get(event.type) ?? anyType
      if (candidates.length === 0) return state
      const props = event.properties
      let next: Record<string, FactEntry> | undefined
      for (const plan of candidates) {
        if (!Object.hasOwn(props, plan.property)) continue
        const value = plan.coerce(props[plan.property])
        if (value === undefined) continue
        const current = own(next ?? state.attributes, plan.tag)
        // Strictly older writes lose; on equal event times the later-applied event wins (partition order).
        if (current !== undefined && (current.ts > event.ts || (current.ts === event.ts && current.value === value))) continue
        next ??= { ...state.attributes }
        next[plan.tag] = { value, ts: event.ts }
      }
      return next === undefined ? state : { attributes: next }
    }

    function deriveTags(state: FactState): DerivedTags {
      const tags: Record<string, DerivedTag> = {}
      for (const plan of plans) {
        const entry = own(state.attributes, plan.tag)
        if (entry === undefined || entry.value === null) continue
        tags[plan.tag] = { value: entry.value, evidence: { property: plan.property, setAt: isoString(entry.ts) } }
      }
      return tags
    }

    function view(state: FactState): Readonly<Record<string, unknown>> {
      const out: Record<string, unknown> = {}
      for (const plan of plans) {
        const entry = own(state.attributes, plan.tag)
        if (entry !== undefined && entry.value !== null) out[plan.tag] = entry.value
      }
      return out
    }

    return {
      name,
      tags: declarations,
      ...(eventTypes === undefined ? {} : { eventTypes }),
      initialState: () => ({ attributes: {} }),
      onEvent,
      deriveTags,
      view,
      viewSchema: Object.fromEntries(config.attributes.map((a) => [a.tag ?? a.property, VIEW_TYPES[a.valueType]])),
      viewClockFields: [],
    }
  },
})
