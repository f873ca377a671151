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
}
