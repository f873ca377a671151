import type { TagValue } from '../contracts/tag-change.js'

/**
 * A tag the user has: [value, since (event time, epoch ms), definition version, quiet]. `quiet` (1)
 * marks a membership its re-entry policy kept from journeys: its changes and its end are not emitted.
 */
export type StoredTag = [value: TagValue, sinceMs: number, version: number, quiet?: 1]

/**
 * Everything the engine keeps about one user, stored as one msgpack value under the user's key.
 * Short field names: this is written for every dirty user at every commit.
 */
export interface UserRecord {
  /** user id */
  u: string
  /** partition */
  p: number
  /** last change sequence number (0: no change yet) */
  seq: number
  /** current tags */
  tags: Record<string, StoredTag>
  /** operator states by operator name */
  ops: Record<string, unknown>
  /** timers: `<operator>\u0000<name>` -> due (event time, epoch ms) */
  timers: Record<string, number>
  /** recent event ids (oldest first), for duplicate suppression */
  ids: string[]
  /** event times of `ids`, same order */
  idTs: number[]
  /** the instant of the last re-scoring sweep applied to this user (absent: none) */
  rs?: number
  /** Values of tags in testing (evaluated and counted, never emitted): tag id -> value. */
  tt?: Record<string, TagValue>
  /** Re-entry bookkeeping for tags with a cooldown or once policy: tag id -> when the user last left (-1: never). */
  re?: Record<string, number>
  /** Definition passes applied to this user: lane -> pass sequence number. */
  dv?: Record<string, number>
}

export function newUserRecord(userId: string, partition: number): UserRecord {
  return { u: userId, p: partition, seq: 0, tags: {}, ops: {}, timers: {}, ids: [], idTs: [] }
}

export const TIMER_KEY_SEP = '\u0000'

export function timerKeyOf(operator: string, name: string): string {
  return `${operator}${TIMER_KEY_SEP}${name}`
}
