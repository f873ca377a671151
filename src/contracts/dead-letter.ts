import { Type, type Static } from '@sinclair/typebox'
import type { Rejection } from './input-event.js'

/** Where a record came from: enough to find it again in its source. */
export interface SourceCoordinates {
  /** The source's configured name, e.g. `events-file` or `kafka:orders`. */
  readonly source: string
  /** Input partition (Kafka partition; 0 for a file). */
  readonly partition: number
  /** Kafka offset, or the byte offset of the record's first byte in a file. */
  readonly offset: number
}

/** A dead letter: a rejected record with its reason, its coordinates and its raw bytes (base64). */
export interface DeadLetter {
  readonly reason: Rejection
  readonly coordinates: SourceCoordinates
  /** The record's bytes, base64. Truncated to `limits.maxRecordBytes` for oversized records. */
  readonly raw: string
  /** Whether `raw` was truncated. */
  readonly truncated: boolean
  /** ISO-8601 wall time of the rejection. */
  readonly rejectedAt: string
  /** The event id and user id when the record decoded far enough to have them. */
  readonly eventId?: string
  readonly userId?: string
}

export const DeadLetterSchema = Type.Object(
  {
    reason: Type.Object({ code: Type.String(), message: Type.String(), field: Type.Optional(Type.String()) }),
    coordinates: Type.Object({ source: Type.String(), partition: Type.Integer(), offset: Type.Integer() }),
    raw: Type.String({ contentEncoding: 'base64' }),
    truncated: Type.Boolean(),
    rejectedAt: Type.String({ format: 'date-time' }),
    eventId: Type.Optional(Type.String()),
    userId: Type.Optional(Type.String()),
  },
  { $id: 'DeadLetter', additionalProperties: false },
)
export type DeadLetterWire = Static<typeof DeadLetterSchema>
