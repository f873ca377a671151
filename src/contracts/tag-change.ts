import { Type, type Static } from '@sinclair/typebox'

/** A tag's value: tags are scalar so that they can be indexed, compared and used in rules. */
export type TagValue = string | number | boolean

/** The tag value schema without an $id, to embed (an $id may appear once per document). */
export const tagValueSchema = () => Type.Union([Type.String(), Type.Number(), Type.Boolean()])
export const TagValueSchema = Type.Union([Type.String(), Type.Number(), Type.Boolean()], { $id: 'TagValue' })

export const TagChangeOps = { ENTERED: 'entered', LEFT: 'left', CHANGED: 'changed' } as const
export type TagChangeOp = (typeof TagChangeOps)[keyof typeof TagChangeOps]

export type TagChangeCause =
  | { readonly kind: 'event'; readonly eventId: string }
  | { readonly kind: 'timer'; readonly name: string }
  | { readonly kind: 'rescore' }
  | { readonly kind: 'definition'; readonly version: number }

/**
 * The tag-change event (DESIGN.md, Contracts). JSON on the wire; the Kafka key is `userId`.
 * `id` is stable: the same input replayed gives the same id, so subscribers deduplicate by it.
 */
export interface TagChange {
  readonly id: string
  readonly userId: string
  readonly tag: string
  readonly op: TagChangeOp
  readonly from: TagValue | null
  readonly to: TagValue | null
  readonly tagVersion: number
  /** ISO-8601 UTC: the event time that caused the change (a timer's due time, a sweep's clock). */
  readonly at: string
  /** ISO-8601 UTC: the wall time at which the engine produced it. Not deterministic. */
  readonly emittedAt: string
  readonly cause: TagChangeCause
  /** The inputs that decided the new value, e.g. `{ monetary90d: 1250, daysSinceLastPurchase: 31 }`. */
  readonly evidence: Readonly<Record<string, unknown>>
  /** Per-user change sequence number, increasing by one with each change of any of the user's tags. */
  readonly seq: number
}

const IsoTime = Type.String({ format: 'date-time' })

export const TagChangeSchema = Type.Object(
  {
    id: Type.String({ minLength: 1 }),
    userId: Type.String({ minLength: 1 }),
    tag: Type.String({ minLength: 1 }),
    op: Type.Union([Type.Literal('entered'), Type.Literal('left'), Type.Literal('changed')]),
    from: Type.Union([tagValueSchema(), Type.Null()]),
    to: Type.Union([tagValueSchema(), Type.Null()]),
    tagVersion: Type.Integer({ minimum: 1 }),
    at: IsoTime,
    emittedAt: IsoTime,
    cause: Type.Union([
      Type.Object({ kind: Type.Literal('event'), eventId: Type.String() }, { additionalProperties: false }),
      Type.Object({ kind: Type.Literal('timer'), name: Type.String() }, { additionalProperties: false }),
      Type.Object({ kind: Type.Literal('rescore') }, { additionalProperties: false }),
      Type.Object({ kind: Type.Literal('definition'), version: Type.Integer() }, { additionalProperties: false }),
    ]),
    evidence: Type.Record(Type.String(), Type.Unknown()),
    seq: Type.Integer({ minimum: 1 }),
  },
  { $id: 'TagChange', additionalProperties: false },
)
export type TagChangeWire = Static<typeof TagChangeSchema>
