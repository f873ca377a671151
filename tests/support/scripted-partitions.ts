import type { PartitionedSource, PartitionOffsets, Rebalance, SourceRecord } from '../../src/sources/source.js'
import { ArraySource } from './engine-fixture.js'

/** A partitioned source (like Kafka's) whose rebalances and records a test scripts; it ends when drained. */
export class ScriptedPartitions implements PartitionedSource {
  readonly name = 'scripted'
  readonly partitioned = true as const
  readonly topics = ['events']
  readonly decode = new ArraySource().decode
  private readonly rebalances: Rebalance[] = []
  private readonly records: SourceRecord[] = []
  private offset = 0

  /** `partitionOf`: the partition an event's record comes from. */
  constructor(private readonly partitionOf: (event: object) => number) {}

  assign(partitions: number[]): this {
    this.rebalances.push({ kind: 'assigned', partitions, start: async (_offsets: PartitionOffsets) => undefined })
    return this
  }

  revoke(partitions: number[]): this {
    this.rebalances.push({ kind: 'revoked', partitions, release: () => undefined })
    return this
  }

  push(events: object[]): this {
    for (const e of events) {
      const offset = this.offset++
      this.records.push({ value: Buffer.from(JSON.stringify(e)), offset, nextOffset: offset + 1, partition: this.partitionOf(e), topic: 'events' })
    }
    return this
  }

  takeRebalance(): Rebalance | undefined {
    return this.rebalances.shift()
  }

  committed(): void {}

  async open(): Promise<void> {}

  async poll(max: number): Promise<SourceRecord[] | null> {
    if (this.records.length === 0) return null
    return this.records.splice(0, max)
  }

  async close(): Promise<void> {}
}
