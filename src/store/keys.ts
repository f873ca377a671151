/**
 * Key layout of the LevelDB store. Every key of a partition starts with `p<4 hex>!` so that a
 * partition's state (users, timers, offsets, clock) can be handed over, restored or dropped as one
 * contiguous range. Keys are strings: readable in debugging tools, and the ordering we need
 * (timers by due time) comes from fixed-width hex.
 *
 *   p0003!u!<userId>                        user record (msgpack)
 *   p0003!t!<due: 14 hex>!<userId>!<timer>  timer index entry; value: msgpack [userId, timerKey]
 *   p0003!c                                 partition clock: msgpack { maxTs }
 *   p0003!o!<source>                        source offset owned by the partition (Kafka)
 *   p0003!m!<tag>!<value>!<userId>          segment membership: the user has tag = value
 *   p0003!k!<tag>!<value>                   number of the partition's users with tag = value
 *   p0003!h!<userId>!<seq: 12 hex>          the user's recent tag changes (the last history.perUser)
 *   p0003!P!c!<index: 6 hex>                population snapshot chunk: Float64 LE values (see below)
 *   p0003!P!d!<seq: 12 hex>                 population delta of one commit: values added and removed per column
 *   p0003!P!h                               population snapshot head: msgpack { layout, seq, columns, chunks }
 *   p0003!s!<userId>                        legacy: a user's population values (Float64 LE, in the g!scored layout);
 *                                           no longer written, read once to convert a store, then cleared
 *   p0003!v!<userId>                        the user's projection for sweeps and previews (engine/projection.ts)
 *   g!o!<source>                            source offset of an embedded source (file, generator)
 *   g!meta                                  store format version and routing
 *   g!scored                                legacy: layout of the s! values (deleted once they are converted)
 *
 * Population statistics (engine/population.ts) are stored per partition as a snapshot plus deltas,
 * so that a start reads a few large values instead of one small value per user. The snapshot's
 * chunks, in index order, hold column 0's values sorted, then column 1's, ... (`columns` in the head
 * gives each column's length; a column is one ranked operator dimension of the head's `layout`).
 * Every commit that moves population values writes, in its atomic batch, one delta per partition
 * (`seq` increasing); the values are snapshot + every delta's added - every delta's removed. A
 * compaction folds the deltas into a new snapshot and deletes them in one batch; the head's `seq`
 * is the highest delta folded in. All three share the `P!` range, so one iterator reads a
 * consistent view of them.
 */
export const KEY_SEP = '!'
const HEX_DUE_WIDTH = 14 // 8.64e15 (the largest Date) < 16^14

const prefixes: string[] = []

export function partitionPrefix(partition: number): string {
  // Called for every event: the few distinct prefixes are built once.
  return (prefixes[partition] ??= `p${partition.toString(16).padStart(4, '0')}!`)
}

export function userKey(partition: number, userId: string): string {
  return `${partitionPrefix(partition)}u!${userId}`
}

export function userRange(partition: number): { gte: string; lt: string } {
  const p = partitionPrefix(partition)
  return { gte: `${p}u!`, lt: `${p}u"` } // '"' is the character after '!'
}

export function encodeDue(dueMs: number): string {
  return Math.max(0, Math.floor(dueMs)).toString(16).padStart(HEX_DUE_WIDTH, '0')
}

export function timerKey(partition: number, dueMs: number, userId: string, timer: string): string {
  return `${partitionPrefix(partition)}t!${encodeDue(dueMs)}!${userId}!${timer}`
}

/** Range of the timer index entries due in (afterMs, uptoMs]. */
export function timerRange(partition: number, afterMs: number, uptoMs: number): { gt?: string; gte?: string; lt: string } {
  // Every entry due at D starts with `D!`, and '!' < '"': so `D"` bounds all entries due at D
  // whatever bytes the user id holds.
  return { ...timersAfter(partition, afterMs), lt: `${partitionPrefix(partition)}t!${encodeDue(uptoMs)}"` }
}

/** Range of the timer index entries due after `afterMs`, to the partition's last. */
export function timersAfter(partition: number, afterMs: number): { gt?: string; gte?: string; lt: string } {
  const p = `${partitionPrefix(partition)}t!`
  // '"' follows '!': the first key past every `t!` key of the partition.
  const lt = `${partitionPrefix(partition)}t"`
  if (afterMs < 0 || !Number.isFinite(afterMs)) return { gte: p, lt }
  return { gt: `${p}${encodeDue(afterMs)}"`, lt }
}

/** The due time of a timer index key. */
export function dueOfTimerKey(key: string): number {
  const start = 'p0000!t!'.length
  return Number.parseInt(key.slice(start, start + HEX_DUE_WIDTH), 16)
}

export function clockKey(partition: number): string {
  return `${partitionPrefix(partition)}c`
}

export function partitionOffsetKey(partition: number, source: string): string {
  return `${partitionPrefix(partition)}o!${source}`
}

export function globalOffsetKey(source: string): string {
  return `g!o!${source}`
}

export const META_KEY = 'g!meta'

/** The tag definitions the stored users were evaluated with, and definition passes in progress. */
export const DEFINITIONS_KEY = 'g!defs'

/**
 * Legacy (stores written before population snapshots): the user's values in the population
 * dimensions of every ranked operator. Read once to convert such a store, then cleared.
 */
export function scoredKey(partition: number, userId: string): string {
  return `${partitionPrefix(partition)}s!${userId}`
}

export function scoredRange(partition: number): { gte: string; lt: string } {
  const p = partitionPrefix(partition)
  return { gte: `${p}s!`, lt: `${p}s"` }
}

export function populationRange(partition: number): { gte: string; lt: string } {
  const p = `${partitionPrefix(partition)}P!`
  return { gte: p, lt: `${p.slice(0, -1)}"` }
}

export function populationHeadKey(partition: number): string {
  return `${partitionPrefix(partition)}P!h`
}

export function populationChunkKey(partition: number, index: number): string {
  return `${partitionPrefix(partition)}P!c!${index.toString(16).padStart(6, '0')}`
}

export function populationDeltaKey(partition: number, seq: number): string {
  return `${partitionPrefix(partition)}P!d!${seq.toString(16).padStart(12, '0')}`
}

/** What a key of `populationRange` is: its letter after `P!` ('c' chunk, 'd' delta, 'h' head). */
export function populationKeyKind(key: string): string {
  return key.charAt(POPULATION_KIND_AT)
}

/** The sequence number of a `populationDeltaKey`. */
export function seqOfPopulationDelta(key: string): number {
  return Number.parseInt(key.slice(POPULATION_KIND_AT + 2), 16)
}

const POPULATION_KIND_AT = 'p0000!P!'.length

/** The user's projection (what sweeps and rule previews read instead of the full record). */
export function projectionKey(partition: number, userId: string): string {
  return `${partitionPrefix(partition)}v!${userId}`
}

export function projectionRange(partition: number): { gte: string; lt: string } {
  const p = partitionPrefix(partition)
  return { gte: `${p}v!`, lt: `${p}v"` }
}

/** `p0003!v!<id>` <-> `p0003!u!<id>`: the two ranges hold the same user ids in the same order. */
export function userKeyOfProjection(key: string): string {
  return `${key.slice(0, PREFIX_LENGTH)}u${key.slice(PREFIX_LENGTH + 1)}`
}

export function projectionKeyOfUser(key: string): string {
  return `${key.slice(0, PREFIX_LENGTH)}v${key.slice(PREFIX_LENGTH + 1)}`
}

const PREFIX_LENGTH = 'p0000!'.length

/** Legacy: which operator dimension each Float64 of an s! value holds (JSON); present: the s! values are current. */
export const SCORED_LAYOUT_KEY = 'g!scored'

export function partitionRange(partition: number): { gte: string; lt: string } {
  const p = partitionPrefix(partition)
  return { gte: p, lt: `${p.slice(0, -1)}"` }
}

import type { TagValue } from '../contracts/tag-change.js'

/**
 * A tag value inside a key: typed (`s`, `n`, `b` prefix) so that "1" and 1 differ, with `!` and
 * `%` escaped so that the user id after it can be told apart. Tag ids never contain `!`.
 */
export function encodeTagValue(value: TagValue): string {
  if (typeof value === 'string') return `s${value.replace(/%/g, '%25').replace(/!/g, '%21')}`
  if (typeof value === 'number') return `n${value}`
  return value ? 'b1' : 'b0'
}

export function decodeTagValue(encoded: string): TagValue {
  const body = encoded.slice(1)
  switch (encoded[0]) {
    case 's':
      return body.replace(/%21/g, '!').replace(/%25/g, '%')
    case 'n':
      return Number(body)
    default:
      return body === '1'
  }
}

export function memberKey(partition: number, tag: string, encodedValue: string, userId: string): string {
  return `${partitionPrefix(partition)}m!${tag}!${encodedValue}!${userId}`
}

/** Keys of the members of `tag` (with `encodedValue` when given) in one partition. */
export function memberRange(partition: number, tag: string, encodedValue?: string): { gte: string; lt: string } {
  const prefix = `${partitionPrefix(partition)}m!${tag}!${encodedValue === undefined ? '' : `${encodedValue}!`}`
  return { gte: prefix, lt: `${prefix.slice(0, -1)}"` } // '!' < '"': every key under the prefix
}

/** [encodedValue, userId] of a membership key. */
export function parseMemberKey(key: string, tag: string): [string, string] {
  const rest = key.slice('p0000!m!'.length + tag.length + 1)
  const sep = rest.indexOf('!')
  return [rest.slice(0, sep), rest.slice(sep + 1)]
}

export function countKey(partition: number, tag: string, encodedValue: string): string {
  return `${partitionPrefix(partition)}k!${tag}!${encodedValue}`
}

export function countRange(partition: number): { gte: string; lt: string } {
  const p = `${partitionPrefix(partition)}k!`
  return { gte: p, lt: `${p.slice(0, -1)}"` }
}

export function historyKey(partition: number, userId: string, seq: number): string {
  return `${partitionPrefix(partition)}h!${userId}!${seq.toString(16).padStart(12, '0')}`
}

/** Keys of one user's history: the user id is followed by '!' then a fixed-width sequence number. */
export function historyRange(partition: number, userId: string): { gte: string; lt: string } {
  const prefix = `${partitionPrefix(partition)}h!${userId}!`
  return { gte: prefix, lt: `${prefix.slice(0, -1)}"` }
}
