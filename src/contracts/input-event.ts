import { Type, type Static } from '@sinclair/typebox'

/**
 * The input event contract (DESIGN.md, Contracts). Field names on the wire are configurable per
 * source (see `FieldNames`); inside the engine an event always has this normalized shape, with
 * `ts` as epoch milliseconds.
 */
export interface InputEvent {
  readonly eventId: string
  readonly userId: string
  readonly type: string
  /** Event time, epoch milliseconds (UTC). */
  readonly ts: number
  readonly properties: Readonly<Record<string, unknown>>
}

/** JSON Schema of the event as it arrives with the default field names (for docs, OpenAPI, producers). */
export const InputEventWireSchema = Type.Object(
  {
    eventId: Type.String({ minLength: 1, maxLength: 256, description: 'Unique per user within the dedup horizon' }),
    userId: Type.String({ minLength: 1, maxLength: 256 }),
    type: Type.String({ minLength: 1, maxLength: 128, description: 'e.g. purchase, view, add_to_cart' }),
    ts: Type.Union([
      Type.Number({ description: 'Epoch milliseconds' }),
      Type.String({ format: 'date-time', description: 'ISO-8601' }),
    ]),
    properties: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { $id: 'InputEvent', additionalProperties: true },
)
export type InputEventWire = Static<typeof InputEventWireSchema>

/** Where a field of the contract is read from in the source's records. */
export interface FieldNames {
  eventId: string
  userId: string
  type: string
  ts: string
  properties: string
}

export const DEFAULT_FIELD_NAMES: Readonly<FieldNames> = Object.freeze({
  eventId: 'eventId',
  userId: 'userId',
  type: 'type',
  ts: 'ts',
  properties: 'properties',
})

/**
 * Why a record was rejected. Stable, machine-readable codes: they are the `reason` label of
 * `tagstream_events_invalid_total` and the `reason.code` of every dead letter.
 */
export const RejectReasons = {
  /** The record is larger than `limits.maxRecordBytes`. */
  RECORD_TOO_LARGE: 'record_too_large',
  /** The bytes are not valid JSON (or not UTF-8). */
  INVALID_JSON: 'invalid_json',
  /** The bytes are not valid msgpack. */
  INVALID_MSGPACK: 'invalid_msgpack',
  /** The record decoded, but to something other than an object (array, string, null, ...). */
  NOT_AN_OBJECT: 'not_an_object',
  /** A required field (`eventId`, `userId`, `type`, `ts`) is absent or empty. */
  MISSING_FIELD: 'missing_field',
  /** A field has the wrong type (e.g. a numeric `userId`, `properties` not an object). */
  WRONG_TYPE: 'wrong_type',
  /** An identifier is longer than `limits.maxIdLength`. */
  FIELD_TOO_LONG: 'field_too_long',
  /** `ts` is neither epoch milliseconds nor an ISO-8601 date-time, or is out of range. */
  INVALID_TIMESTAMP: 'invalid_timestamp',
  /** `ts` is further in the future than `limits.maxFutureMs` allows. */
  TIMESTAMP_IN_FUTURE: 'timestamp_in_future',
  /** The event is older than the partition's watermark minus `time.lateHorizonMs`. */
  TOO_LATE: 'too_late',
  /** An operator threw while applying the event; the user's state was left as it was. */
  OPERATOR_ERROR: 'operator_error',
} as const

export type RejectReason = (typeof RejectReasons)[keyof typeof RejectReasons]
export const REJECT_REASON_LIST: readonly RejectReason[] = Object.values(RejectReasons)

export interface Rejection {
  readonly code: RejectReason
  readonly message: string
  /** The contract field at fault, when there is one. */
  readonly field?: keyof FieldNames
}
