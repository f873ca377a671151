import type { DecodeResult } from '../contracts/validate-event.js'

/** One record as read from a source, before decoding. */
export interface SourceRecord {
  /** The record's bytes (for an oversized record, its first `maxRecordBytes + 1` bytes). */
  readonly value: Buffer
  /** Position of the record: Kafka offset, or byte offset of its first byte in a file. */
  readonly offset: number
  /** Position to resume from once this record is applied. */
  readonly nextOffset: number
  /** Full size in bytes when `value` was cut short. */
  readonly truncatedFrom?: number
  /** Input partition for partitioned sources (Kafka); embedded sources route by user id. */
  readonly partition?: number
  /** The topic of a partitioned source's record: its position is kept per (partition, topic). */
  readonly topic?: string
  /** The record's decoder when it is not the source's (Kafka: the format is per topic). */
  readonly decode?: (raw: Uint8Array, wallNow: number) => DecodeResult
}

/**
 * A source of records. Embedded sources (file, generator) keep one position, stored under the
 * source's name; the engine routes their users to partitions by hashing the user id.
 */
export interface Source {
  readonly name: string
  readonly decode: (raw: Uint8Array, wallNow: number) => DecodeResult
  /** Starts reading at `position` (the stored `nextOffset`, or 0 for a new store). */
  open(position: number): Promise<void>
  /**
   * Up to `max` records. Waits at most `waitMs` for the first one; [] when none came in time,
   * null when the source has ended (a replayed file at its end, a generator at its limit).
   */
  poll(max: number, waitMs: number): Promise<SourceRecord[] | null>
  close(): Promise<void>
  /** Set by partitioned sources (see `PartitionedSource`). */
  readonly partitioned?: boolean
}

/** Next offset to read, per engine partition and topic. */
export type PartitionOffsets = ReadonlyMap<number, ReadonlyMap<string, number>>

/**
 * A change of the partitions a partitioned source delivers, which the engine acts on between two
 * batches: it restores (assigned) or commits and forgets (revoked) the partitions' state, then
 * answers, and only then does the source go on.
 */
export type Rebalance =
  | {
      readonly kind: 'assigned'
      readonly partitions: readonly number[]
      /** Starts the partitions at these offsets (from the store; a missing one: the source's start policy). */
      start(offsets: PartitionOffsets): Promise<void>
    }
  | {
      readonly kind: 'revoked'
      readonly partitions: readonly number[]
      /** The partitions' state is committed and dropped: the source may let them go. */
      release(): void
    }

/**
 * A source whose records carry their partition (Kafka): partition k of every topic is engine
 * partition k, its state and offsets live under that partition's prefix, and the set of
 * partitions this process owns changes at rebalances. The store holds the offsets; the source
 * never starts a partition from anywhere else unless told to by its start policy.
 */
export interface PartitionedSource extends Source {
  readonly partitioned: true
  readonly topics: readonly string[]
  /** The next rebalance the engine has not handled yet, oldest first. */
  takeRebalance(): Rebalance | undefined
  /** The store committed these offsets: mirror them to the group (advisory, for lag tooling). */
  committed(offsets: PartitionOffsets): void
}

export function isPartitioned(source: Source): source is PartitionedSource {
  return source.partitioned === true
}
