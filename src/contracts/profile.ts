import { Type, type Static } from '@sinclair/typebox'
import { tagValueSchema, type TagValue } from './tag-change.js'

/** One tag a user has: its value, since when (ISO-8601 UTC, event time) and the definition version. */
export interface ProfileTag {
  readonly value: TagValue
  readonly since: string
  readonly version: number
}

/** The profile JSON served by `tagstream profile` and `GET /v1/users/:userId`. */
export interface Profile {
  readonly userId: string
  readonly tags: Readonly<Record<string, ProfileTag>>
  /** Each operator's public view of the user's state, keyed by operator name, evaluated at the clock or `asOf`. */
  readonly state: Readonly<Record<string, Readonly<Record<string, unknown>>>>
}

export const ProfileSchema = Type.Object(
  {
    userId: Type.String({ minLength: 1 }),
    tags: Type.Record(
      Type.String(),
      Type.Object(
        { value: tagValueSchema(), since: Type.String({ format: 'date-time' }), version: Type.Integer({ minimum: 1 }) },
        { additionalProperties: false },
      ),
    ),
    state: Type.Record(Type.String(), Type.Record(Type.String(), Type.Unknown())),
  },
  { $id: 'Profile', additionalProperties: false },
)
export type ProfileWire = Static<typeof ProfileSchema>
