import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { schemaIssues as configSchemaIssues } from '../config/schema-issues.js'
import { TagStatusSchema } from '../config/schema.js'
import { TAG_ID_PATTERN } from '../operator-api.js'

/**
 * Schemas of the tag catalog (DESIGN.md, Tags): a definition as an author submits it (API body or
 * an entry of `config/tags.yaml`), a stored version, and the publish / retire requests.
 */

export const TagIdSchema = Type.String({ pattern: TAG_ID_PATTERN, maxLength: 128, description: 'Identifier usable in rules, labels and URLs' })

/** A category segment: no '/' (the tree joins paths with it) and no spaces, so paths read well in URLs. */
export const CategorySegmentSchema = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_-]*$' })

export const CategoryPathSchema = Type.Array(CategorySegmentSchema, {
  minItems: 2,
  maxItems: 3,
  description: 'Place in the category tree, 2-3 levels, e.g. [behaviour, purchase, frequency]',
})

export const TagKindSchema = Type.Union([Type.Literal('fact'), Type.Literal('model'), Type.Literal('strategy')])
export const TagValueTypeSchema = Type.Union([Type.Literal('string'), Type.Literal('number'), Type.Literal('boolean')])

/**
 * What a user who leaves a tag and later qualifies again produces: a new `entered` at once
 * (`always`), only when `days` have passed since they left (`cooldown`), or nothing after the
 * first entry ever (`once`).
 */
export const ReentryPolicySchema = Type.Union([
  Type.Object({ policy: Type.Literal('always') }, { additionalProperties: false }),
  Type.Object({ policy: Type.Literal('cooldown'), days: Type.Integer({ minimum: 1, maximum: 3650 }) }, { additionalProperties: false }),
  Type.Object({ policy: Type.Literal('once') }, { additionalProperties: false }),
])

export const DEFAULT_REENTRY: ReentryPolicy = Object.freeze({ policy: 'always' })

export const PublishModeSchema = Type.Union([Type.Literal('announce'), Type.Literal('silent')], {
  description: 'announce: members at publication (or retirement) get entered (left) events with cause definition; silent: enrolled (dropped) without events',
})

/** A definition as submitted: through the API (`define`) or as an entry of `config/tags.yaml`. */
export const TagDefinitionInputSchema = Type.Object(
  {
    id: TagIdSchema,
    name: Type.String({ minLength: 1, maxLength: 200 }),
    description: Type.String({ minLength: 1, maxLength: 2000 }),
    owner: Type.String({ minLength: 1, maxLength: 200 }),
    category: CategoryPathSchema,
    kind: TagKindSchema,
    valueType: TagValueTypeSchema,
    rule: Type.Optional(Type.String({ minLength: 1, maxLength: 10_000, description: 'CEL expression over the profile; strategy tags only' })),
    reentry: Type.Optional(ReentryPolicySchema),
    version: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'API: the version this edit is based on (optimistic concurrency). File: the version the entry declares (default 1)',
      }),
    ),
    status: Type.Optional(TagStatusSchema),
  },
  { additionalProperties: false },
)

export const TransitionRecordSchema = Type.Object(
  {
    from: Type.Optional(TagStatusSchema),
    to: TagStatusSchema,
    at: Type.String({ format: 'date-time' }),
    by: Type.Optional(Type.String()),
    mode: Type.Optional(PublishModeSchema),
    /** Set when a version went offline because another version of the tag was published. */
    supersededBy: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { additionalProperties: false },
)

/** One stored version of a tag. Every version is kept; only a draft changes in place. */
export const TagVersionSchema = Type.Object(
  {
    id: TagIdSchema,
    name: Type.String({ minLength: 1 }),
    description: Type.String({ minLength: 1 }),
    owner: Type.String({ minLength: 1 }),
    category: CategoryPathSchema,
    kind: TagKindSchema,
    valueType: TagValueTypeSchema,
    rule: Type.Optional(Type.String({ minLength: 1 })),
    reentry: ReentryPolicySchema,
    version: Type.Integer({ minimum: 1 }),
    status: TagStatusSchema,
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    publishedBy: Type.Optional(Type.String()),
    /** Every status change of this version, oldest first, with the publish / retire mode. */
    transitions: Type.Array(TransitionRecordSchema),
  },
  { additionalProperties: false },
)

export const PublishRequestSchema = Type.Object(
  { version: Type.Integer({ minimum: 1 }), mode: PublishModeSchema, by: Type.Optional(Type.String({ minLength: 1 })) },
  { additionalProperties: false },
)

export const RetireRequestSchema = Type.Object(
  { mode: PublishModeSchema, by: Type.Optional(Type.String({ minLength: 1 })) },
  { additionalProperties: false },
)

/** `config/tags.yaml`: `tags:` is a list of definitions (several entries may give versions of one id). */
export const TagsFileSchema = Type.Object({ tags: Type.Array(Type.Unknown(), { default: [] }) }, { additionalProperties: false })

export type TagKind = Static<typeof TagKindSchema>
export type TagValueType = Static<typeof TagValueTypeSchema>
export type TagStatus = Static<typeof TagStatusSchema>
export type ReentryPolicy = Static<typeof ReentryPolicySchema>
export type PublishMode = Static<typeof PublishModeSchema>
export type TagDefinitionInput = Static<typeof TagDefinitionInputSchema>
export type TransitionRecord = Static<typeof TransitionRecordSchema>
export type TagVersion = Static<typeof TagVersionSchema>
export type PublishRequest = Static<typeof PublishRequestSchema>
export type RetireRequest = Static<typeof RetireRequestSchema>

/** A problem with a definition, pointing at the key (`rule`, `category[1]`, `tags[3].reentry.days`). */
export interface TagIssue {
  readonly key: string
  readonly message: string
  /** For rules: where in the expression (1-based line and column, 0-based offset). */
  readonly position?: RulePosition
}

export interface RulePosition {
  readonly line: number
  readonly column: number
  readonly offset: number
}

/** A tag defined alongside the rule being checked (the same tags file): rules may read it. */
export interface PendingTag {
  readonly id: string
  readonly valueType: TagValueType
}

/** The rule compiler's verdict on an expression: empty when it compiles. */
export type RuleValidator = (rule: string, pendingTags?: readonly PendingTag[]) => readonly (RulePosition & { readonly message: string })[]

function joinKey(prefix: string, key: string): string {
  if (prefix === '') return key
  if (key === '(root)') return prefix
  return key.startsWith('[') ? `${prefix}${key}` : `${prefix}.${key}`
}

/** Schema errors as issues, keys prefixed; unions (the re-entry policy) report the branch meant. */
export function schemaIssues(schema: TSchema, value: unknown, prefix = ''): TagIssue[] {
  return configSchemaIssues(schema, value, {
    discriminant: 'policy',
    unknownDiscriminant: (policy) => `unknown policy ${JSON.stringify(policy)} (always, cooldown or once)`,
  }).map((i) => ({ key: joinKey(prefix, i.key), message: i.message }))
}

/**
 * Validates a submitted definition: the schema, then what a schema cannot say (a rule exactly for
 * strategy tags, and the rule compiling). Keys are relative to the definition, prefixed by `prefix`.
 */
export function validateDefinition(
  raw: unknown,
  options: { prefix?: string; validateRule?: RuleValidator; pendingTags?: readonly PendingTag[] } = {},
): TagIssue[] {
  const prefix = options.prefix ?? ''
  const issues = schemaIssues(TagDefinitionInputSchema, raw, prefix)
  if (issues.length > 0) return issues
  const def = raw as TagDefinitionInput
  const ruleKey = joinKey(prefix, 'rule')
  if (def.kind === 'strategy' && def.rule === undefined) {
    return [{ key: ruleKey, message: 'a strategy tag needs a rule' }]
  }
  if (def.kind !== 'strategy' && def.rule !== undefined) {
    return [{ key: ruleKey, message: `a ${def.kind} tag is derived by an operator and takes no rule` }]
  }
  if (def.rule !== undefined && options.validateRule !== undefined) {
    return options.validateRule(def.rule, options.pendingTags).map(({ message, line, column, offset }) => ({
      key: ruleKey,
      message: `${message} (line ${line}, column ${column})`,
      position: { line, column, offset },
    }))
  }
  return []
}
