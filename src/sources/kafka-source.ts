import Kafka from '@confluentinc/kafka-javascript'
import type { Assignment, ConsumerGlobalConfig, KafkaConsumer, LibrdKafkaError, Message, TopicPartitionOffset } from '@confluentinc/kafka-javascript'
import type { DecodeResult } from '../contracts/validate-event.js'
import { ErrorCodes, TagstreamError } from '../errors.js'
import type { PartitionOffsets, PartitionedSource, Rebalance, SourceRecord } from './source.js'

/*
 * A Kafka consumer-group source on librdkafka's native consumer API (`KafkaConsumer.consume(n)`),
 * not the KafkaJS-compatible `run({ eachBatch })`: the engine pulls batches of its own size
 * (`engine.batchSize`, thousands of records per call where the KafkaJS API hands over 32 by
 * default), and rebalances are answered when the engine says so, between two batches, which a
 * pull loop expresses directly (see `bench/kafka-pipeline.ts` for the bare consume rate).
 *
 * Offsets: the store is the truth. On assignment the engine reads each partition's stored offset
 * and `start()` assigns the partitions at exactly those offsets (an eager `assign` with explicit
 * offsets: no seek race). The group's committed offsets are written after every store commit for
 * lag tooling, and never read. They follow the store even when a commit is lost: the start offsets
 * are committed on every assignment, and a commit the group refuses (e.g. one sent while the group
 * is rebalancing: a member that has caught up sends no other) is sent again, with the latest offsets.
 *
 * Backpressure is the pull itself: nothing is read ahead beyond librdkafka's prefetch queue
 * (bounded by `queued.max.messages.kbytes`) while the engine is busy (a commit waiting for sink
 * acknowledgements, a sweep). Partitions being revoked are not read from again: their records are
 * dropped on arrival until the engine has committed and released them.
 */

const ERR_ASSIGN = Kafka.CODES.ERRORS.ERR__ASSIGN_PARTITIONS
const ERR_REVOKE = Kafka.CODES.ERRORS.ERR__REVOKE_PARTITIONS
const EMPTY = Buffer.alloc(0)
/** Delay before the group offsets are committed again after the group refused a commit. */
const GROUP_COMMIT_RETRY_MS = 1000

export type Decoder = (raw: Uint8Array, wallNow: number) => DecodeResult

export interface KafkaSourceOptions {
  readonly name: string
  readonly brokers: string
  readonly groupId: string
  /** Topics and the decoder of each (the format is per topic). */
  readonly topics: readonly { readonly topic: string; readonly decode: Decoder }[]
  /** Engine partitions: a topic with more partitions than this is refused. */
  readonly maxPartitions: number
  /** Longest record kept whole; a longer one is cut to this + 1 bytes (it is dead-lettered, with its head). */
  readonly maxRecordBytes: number
  readonly clientId?: string
  readonly sessionTimeoutMs?: number
  readonly heartbeatIntervalMs?: number
  readonly startFrom?: 'earliest' | 'latest'
  readonly allowMissingHistory?: boolean
  readonly connectTimeoutMs?: number
  readonly librdkafka?: Readonly<Record<string, string | number | boolean>>
  /** Where the source says what it decided (start offsets without a stored one, client errors). */
  readonly log?: (message: string) => void
}

/** A partition of a topic this process reads now, and the offset of the next record it expects. */
interface Owned {
  next: number
  /** The partition's offset in the store (the start offset, then the last committed one): what the group should show. */
  stored: number
}

export interface PartitionLag {
  readonly topic: string
  readonly partition: number
  /** Records between the next one to read and the partition's high watermark. */
  readonly records: number
}

export class KafkaSource implements PartitionedSource {
  readonly partitioned = true
  readonly name: string
  readonly topics: readonly string[]
  readonly decode: Decoder
  private readonly options: KafkaSourceOptions
  private readonly decoders: ReadonlyMap<string, Decoder>
  private readonly config: ConsumerGlobalConfig
  private consumer: KafkaConsumer | undefined
  /** topic -> partition -> what this process reads now (assigned and started, not revoked). */
  private readonly owned = new Map<string, Map<number, Owned>>()
  private readonly pending: Rebalance[] = []
  private waitMs = -1
  /** The read-ahead `consume` started when the previous batch was handed over. */
  private ahead: ReturnType<KafkaSource['consume']> | undefined
  private closing = false
  private lastClientError: string | undefined
  /** When the group last refused a commit of offsets, until they are sent again. */
  private groupCommitFailedAt: number | undefined
  /** Whether the group's offsets are behind the store since a refused commit (logged once per episode). */
  private groupCommitFailing = false
  private readonly log: (message: string) => void

  constructor(options: KafkaSourceOptions) {
    if (options.topics.length === 0) throw new TagstreamError(ErrorCodes.CONFIG_INVALID, `kafka source ${options.name}: no topics`)
    this.options = options
    this.name = options.name
    this.topics = options.topics.map((t) => t.topic)
    this.decoders = new Map(options.topics.map((t) => [t.topic, t.decode]))
    this.decode = (options.topics[0] as { decode: Decoder }).decode
    this.log = options.log ?? ((message) => process.stderr.write(`tagstream: ${message}\n`))
    for (const topic of this.topics) this.owned.set(topic, new Map())
    this.config = {
      'bootstrap.servers': options.brokers,
      'client.id': options.clientId ?? 'tagstream',
      'session.timeout.ms': options.sessionTimeoutMs ?? 10_000,
      'heartbeat.interval.ms': options.heartbeatIntervalMs ?? 1000,
      'enable.partition.eof': false,
      ...(options.librdkafka as ConsumerGlobalConfig | undefined),
      'group.id': options.groupId,
      // Offsets come from the store and are committed by hand after each store commit.
      'enable.auto.commit': false,
      'enable.auto.offset.store': false,
      // Eager range assignment gives one member partition k of every topic (co-partitioning),
      // and a revocation that waits for our unassign() (the engine commits first).
      'partition.assignment.strategy': 'range',
      rebalance_cb: (err: LibrdKafkaError | undefined, assignment: Assignment[]) => this.onRebalance(err, assignment),
      offset_commit_cb: (err: LibrdKafkaError | undefined) => this.onGroupCommit(err),
    } as ConsumerGlobalConfig
  }

  async open(_position: number): Promise<void> {
    const consumer = new Kafka.KafkaConsumer({ ...this.config })
    consumer.on('event.error', (err: LibrdKafkaError) => {
      this.lastClientError = err.message
    })
    try {
      await new Promise<void>((resolve, reject) =>
        consumer.connect({ timeout: this.options.connectTimeoutMs ?? 30_000 }, (err) => (err ? reject(err) : resolve())),
      )
    } catch (err) {
      throw this.error(`cannot connect to ${this.options.brokers}: ${(err as Error).message}`, err, true)
    }
    this.consumer = consumer
    try {
      await this.checkPartitionCounts(consumer)
    } catch (err) {
      this.consumer = undefined
      await disconnect(consumer)
      throw err
    }
    // Wait for the first message, then take what is ready: a batch never waits for a full one.
    ;(consumer as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(only: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true)
    consumer.subscribe([...this.topics])
  }

  /** Co-partitioning: every topic has the same number of partitions, at most the engine's. */
  private async checkPartitionCounts(consumer: KafkaConsumer): Promise<void> {
    const counts = new Map<string, number>()
    for (const topic of this.topics) {
      const metadata = await new Promise<Kafka.Metadata>((resolve, reject) =>
        consumer.getMetadata({ topic, timeout: this.options.connectTimeoutMs ?? 30_000 }, (err, data) => (err ? reject(err) : resolve(data))),
      ).catch((err: unknown) => {
        throw this.error(`cannot read the metadata of topic ${topic}: ${(err as Error).message}`, err, true)
      })
      const t = metadata.topics.find((m) => m.name === topic)
      const n = t?.partitions.length ?? 0
      if (n === 0) throw this.error(`topic ${topic} does not exist (or has no partitions)`, undefined, true)
      if (n > this.options.maxPartitions) {
        throw new TagstreamError(
          ErrorCodes.CONFIG_INVALID,
          `kafka source ${this.name}: topic ${topic} has ${n} partitions but engine.partitions is ${this.options.maxPartitions}: Kafka partition k is engine partition k, so engine.partitions must be at least ${n}`,
          { details: { issues: [{ key: 'engine.partitions', message: `must be at least ${n} (partitions of ${topic})` }] } },
        )
      }
      counts.set(topic, n)
    }
    if (new Set(counts.values()).size > 1) {
      throw new TagstreamError(
        ErrorCodes.CONFIG_INVALID,
        `kafka source ${this.name}: the topics are not co-partitioned (${[...counts].map(([t, n]) => `${t}: ${n}`).join(', ')}): a user's events must land in the same partition number in every topic`,
      )
    }
  }

  takeRebalance(): Rebalance | undefined {
    return this.pending.shift()
  }

  async poll(max: number, waitMs: number): Promise<SourceRecord[]> {
    const consumer = this.consumer
    if (consumer === undefined) throw new TagstreamError(ErrorCodes.ENGINE_STATE, `kafka source ${this.name} is not open`)
    if (waitMs !== this.waitMs) {
      consumer.setDefaultConsumeTimeout(waitMs)
      this.waitMs = waitMs
    }
    if (this.groupCommitFailedAt !== undefined && Date.now() - this.groupCommitFailedAt >= GROUP_COMMIT_RETRY_MS) this.commitStoredOffsets(consumer)
    const pending = this.ahead ?? this.consume(consumer, max)
    this.ahead = undefined
    const result = await pending
    // Read ahead: librdkafka's worker fills the next batch while the engine applies this one.
    if (!this.closing) this.ahead = this.consume(consumer, max)
    if (result.error !== undefined) {
      const e = result.error
      if (e.isFatal === true) throw this.error(`fatal consumer error: ${e.message}`, e, false)
      // Transient (a broker went away, a partition moved): librdkafka recovers by itself.
      this.lastClientError = e.message
      return []
    }
    const messages = result.messages
    const out: SourceRecord[] = []
    const maxRecordBytes = this.options.maxRecordBytes
    let topic = ''
    let parts: Map<number, Owned> | undefined
    let decode: Decoder | undefined
    for (const m of messages) {
      if (m.topic !== topic) {
        topic = m.topic
        parts = this.owned.get(topic)
        decode = this.decoders.get(topic)
      }
      const owned = parts?.get(m.partition)
      // Not started yet, being revoked, or fetched before the partition's start offset: not ours.
      if (owned === undefined || m.offset < owned.next) continue
      owned.next = m.offset + 1
      const value = m.value ?? EMPTY
      if (value.length > maxRecordBytes) {
        out.push({ value: value.subarray(0, maxRecordBytes + 1), truncatedFrom: value.length, offset: m.offset, nextOffset: m.offset + 1, partition: m.partition, topic, ...(decode !== undefined ? { decode } : {}) })
        continue
      }
      out.push({ value, offset: m.offset, nextOffset: m.offset + 1, partition: m.partition, topic, ...(decode !== undefined ? { decode } : {}) })
    }
    return out
  }

  /** One `consume(n)` call; never rejects (an unawaited read-ahead must not be an unhandled rejection). */
  private consume(consumer: KafkaConsumer, max: number): Promise<{ messages: Message[]; error?: undefined } | { messages?: undefined; error: LibrdKafkaError }> {
    return new Promise((resolve) => consumer.consume(max, (error, messages) => resolve(error ? { error } : { messages })))
  }

  committed(offsets: PartitionOffsets): void {
    const consumer = this.consumer
    if (consumer === undefined) return
    const list: TopicPartitionOffset[] = []
    for (const [partition, byTopic] of offsets) {
      for (const [topic, offset] of byTopic) {
        const owned = this.owned.get(topic)?.get(partition)
        if (owned === undefined) continue
        owned.stored = offset
        list.push({ topic, partition, offset })
      }
    }
    this.commitGroup(consumer, list)
  }

  /** Commits every owned partition's stored offset to the group again (after the group refused a commit). */
  private commitStoredOffsets(consumer: KafkaConsumer): void {
    this.groupCommitFailedAt = undefined
    const list: TopicPartitionOffset[] = []
    for (const [topic, parts] of this.owned) for (const [partition, owned] of parts) list.push({ topic, partition, offset: owned.stored })
    this.commitGroup(consumer, list)
  }

  /** Asynchronous and advisory: the store already holds these offsets. The outcome arrives in `onGroupCommit`. */
  private commitGroup(consumer: KafkaConsumer, list: TopicPartitionOffset[]): void {
    if (list.length === 0) return
    try {
      consumer.commit(list)
    } catch (err) {
      this.onGroupCommit(err as LibrdKafkaError)
    }
  }

  /**
   * The outcome of a group commit. A refused one (the group is rebalancing, the generation moved
   * on, the coordinator went away) is followed by a commit of the latest stored offsets after
   * GROUP_COMMIT_RETRY_MS: the next store commit would carry them too, but a partition that has
   * caught up has no next commit, and its group offsets would stay behind for good.
   */
  private onGroupCommit(err: LibrdKafkaError | undefined): void {
    if (err === undefined || err === null) {
      if (this.groupCommitFailing && this.groupCommitFailedAt === undefined) this.groupCommitFailing = false
      return
    }
    this.lastClientError = err.message
    this.groupCommitFailedAt = Date.now()
    if (this.groupCommitFailing) return
    this.groupCommitFailing = true
    this.log(`kafka source ${this.name}: the group refused the commit of its offsets (${err.message}); committing them again (the store holds them)`)
  }

  /** Lag of every partition this process reads: records up to each partition's high watermark. */
  lag(): PartitionLag[] {
    const consumer = this.consumer
    const out: PartitionLag[] = []
    if (consumer === undefined) return out
    for (const [topic, parts] of this.owned) {
      for (const [partition, owned] of parts) {
        let high: number
        try {
          // librdkafka's cached high watermark, refreshed by every fetch response: no request here.
          high = consumer.getWatermarkOffsets(topic, partition).highOffset
        } catch {
          continue
        }
        if (high >= 0) out.push({ topic, partition, records: Math.max(0, high - owned.next) })
      }
    }
    return out
  }

  async close(): Promise<void> {
    this.closing = true
    const consumer = this.consumer
    if (consumer === undefined) return
    // Revocations the engine will not handle any more (it has stopped and committed).
    for (const r of this.pending.splice(0)) if (r.kind === 'revoked') r.release()
    await this.ahead
    this.ahead = undefined
    // Leaving the group revokes the assignment once more, and librdkafka waits for our unassign():
    // the rebalance callback still needs the consumer while it disconnects.
    await disconnect(consumer)
    this.consumer = undefined
  }

  private onRebalance(err: LibrdKafkaError | undefined, assignment: Assignment[]): void {
    const consumer = this.consumer
    if (consumer === undefined) return
    if (this.closing && err?.code === ERR_ASSIGN) return
    const partitions = [...new Set(assignment.map((a) => a.partition))].sort((a, b) => a - b)
    if (err?.code === ERR_ASSIGN) {
      if (this.closing) return
      this.pending.push({ kind: 'assigned', partitions, start: (offsets) => this.start(assignment, offsets) })
      return
    }
    // Stop handing out the partitions' records at once; the engine commits, then releases them.
    for (const parts of this.owned.values()) parts.clear()
    const release = (): void => {
      for (const parts of this.owned.values()) parts.clear()
      try {
        consumer.unassign()
      } catch (e) {
        this.lastClientError = (e as Error).message
      }
    }
    if (err?.code !== ERR_REVOKE) {
      this.log(`kafka source ${this.name}: rebalance error ${err?.message ?? 'unknown'}; dropping the assignment`)
      release()
      return
    }
    if (this.closing) release()
    else this.pending.push({ kind: 'revoked', partitions, release })
  }

  /** Assigns the partitions at the engine's stored offsets, or where the start policy says. */
  private async start(assignment: readonly Assignment[], offsets: PartitionOffsets): Promise<void> {
    const consumer = this.consumer
    if (consumer === undefined) return
    const list: TopicPartitionOffset[] = []
    for (const { topic, partition } of assignment) {
      const stored = offsets.get(partition)?.get(topic)
      const { lowOffset, highOffset } = await new Promise<Kafka.WatermarkOffsets>((resolve, reject) =>
        consumer.queryWatermarkOffsets(topic, partition, this.options.connectTimeoutMs ?? 30_000, (e, o) => (e ? reject(e) : resolve(o))),
      ).catch((e: unknown) => {
        throw this.error(`cannot read the offsets of ${topic}[${partition}]: ${(e as Error).message}`, e, true)
      })
      let offset: number
      if (stored !== undefined) {
        offset = stored
      } else if (this.options.startFrom === 'latest') {
        offset = highOffset
        this.log(`kafka source ${this.name}: ${topic}[${partition}] has no offset in the store; starts empty at the end (${highOffset}) as startFrom: latest says`)
      } else {
        offset = 0
        if (highOffset > 0) this.log(`kafka source ${this.name}: ${topic}[${partition}] has no offset in the store; rebuilding its state from the beginning (${highOffset - lowOffset} records)`)
      }
      if (offset < lowOffset) {
        if (this.options.allowMissingHistory !== true) {
          throw this.error(
            `${topic}[${partition}] must start at offset ${offset} but its oldest retained record is ${lowOffset}: ` +
              `the state would silently miss ${lowOffset - offset} records (a partition moved here from a process with its own store, or retention ran out). ` +
              `Set allowMissingHistory: true to start from ${lowOffset} anyway`,
            undefined,
            false,
          )
        }
        this.log(`kafka source ${this.name}: ${topic}[${partition}] skips offsets ${offset}..${lowOffset - 1} (no longer retained; allowMissingHistory)`)
        offset = lowOffset
      }
      if (offset > highOffset) {
        throw this.error(`${topic}[${partition}]: the stored offset ${offset} is past the end of the partition (${highOffset}): was the topic recreated?`, undefined, false)
      }
      list.push({ topic, partition, offset })
    }
    // A read-ahead still in flight holds records of the previous assignment: none are owned now
    // (revoked or not yet started), so they are dropped, and assign() below makes librdkafka read
    // from the start offsets again. Waiting for it first means that no consume call spans the
    // assignment, so every record handed over from now on follows the start offsets.
    const stale = this.ahead
    this.ahead = undefined
    if (stale !== undefined) await stale
    for (const { topic, partition, offset } of list) this.owned.get(topic)?.set(partition, { next: offset, stored: offset })
    consumer.assign(list)
    // The group learns the store's offsets now, not at the next store commit: a commit lost in the
    // rebalance, a crash between the store commit and the group's, or a partition moved from a
    // member with another store would otherwise leave the group's offsets wrong until new records
    // arrive (and for good on a partition that has caught up).
    this.commitGroup(consumer, list)
  }

  private error(message: string, cause: unknown, retriable: boolean): TagstreamError {
    const detail = this.lastClientError === undefined ? '' : ` (last client error: ${this.lastClientError})`
    return new TagstreamError(ErrorCodes.SOURCE_FAILED, `kafka source ${this.name}: ${message}${detail}`, {
      ...(cause !== undefined ? { cause } : {}),
      retriable,
      details: { source: this.name },
    })
  }
}

function disconnect(consumer: KafkaConsumer): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 10_000)
    try {
      consumer.disconnect(() => {
        clearTimeout(timer)
        resolve()
      })
    } catch {
      clearTimeout(timer)
      resolve()
    }
  })
}
