/**
 * `tagstream generate --brokers HOST:PORT --topic T`: the deterministic workload produced straight to
 * a Kafka topic, one record per message. The value is what the file formats hold for the record
 * (its JSON, or its msgpack, without the line end or the length prefix; a malformed record's raw
 * bytes). Events are keyed by userId, so a user's events stay in one partition, in order; malformed
 * records have no key.
 *
 * The producer is idempotent with acks=all (no duplicates or reordering from retries: the
 * workload's own duplicates are the only ones), lz4, and murmur2 partitioning, the Java client's
 * default, so that other producers and consumers agree on where a user lives. When librdkafka's
 * queue is full, generation waits for deliveries instead of failing. The command returns once
 * every message is acknowledged, and fails if any was not.
 */
import Kafka from '@confluentinc/kafka-javascript'
import type { LibrdKafkaError, Producer, ProducerGlobalConfig } from '@confluentinc/kafka-javascript'
import { ErrorCodes, TagstreamError } from '../errors.js'
import { encodeMsgpackRecord, generateWorkload, type GeneratedRecord, type WorkloadOptions, type WriteResult } from './generator.js'

const ERR_QUEUE_FULL = Kafka.CODES.ERRORS.ERR__QUEUE_FULL

export interface ProduceWorkloadOptions {
  /** bootstrap.servers */
  readonly brokers: string
  readonly topic: string
  readonly format: 'ndjson' | 'msgpack'
  /** Extra librdkafka producer properties (security.protocol, sasl.*, ...), applied last. */
  readonly librdkafka?: Readonly<Record<string, string | number | boolean>>
  /** How long librdkafka retries a message before reporting it failed (default 120 s). */
  readonly messageTimeoutMs?: number
}

export interface ProduceResult extends WriteResult {
  readonly topic: string
  /** Messages produced and acknowledged: events plus invalid records. */
  readonly messages: number
}

/** A record's message value, as the file formats hold it (NDJSON without its line end). */
export function messageValueOf(record: GeneratedRecord, format: 'ndjson' | 'msgpack'): Buffer {
  if (format === 'msgpack') return encodeMsgpackRecord(record)
  return record.kind === 'event' ? Buffer.from(JSON.stringify(record.event), 'utf8') : record.bytes
}

export async function produceWorkload(options: ProduceWorkloadOptions, workload: WorkloadOptions): Promise<ProduceResult> {
  const messageTimeoutMs = options.messageTimeoutMs ?? 120_000
  const config = {
    'bootstrap.servers': options.brokers,
    'client.id': 'tagstream-generate',
    'enable.idempotence': true,
    acks: 'all',
    'compression.codec': 'lz4',
    'linger.ms': 20,
    'batch.size': 1_000_000,
    // As the engine's sinks and its own partitioner (src/engine/partitioner.ts): Java's default.
    partitioner: 'murmur2_random',
    'queue.buffering.max.messages': 500_000,
    'message.timeout.ms': messageTimeoutMs,
    ...(options.librdkafka as ProducerGlobalConfig | undefined),
    // Delivery reports are how the command knows every message landed: not overridable.
    dr_cb: true,
  } as ProducerGlobalConfig
  const producer: Producer = new Kafka.Producer(config)
  let acknowledged = 0
  let failed = 0
  let firstFailure: string | undefined
  producer.on('delivery-report', (err: LibrdKafkaError | null) => {
    if (err) {
      failed++
      firstFailure ??= err.message
    } else acknowledged++
  })
  await new Promise<void>((resolve, reject) =>
    producer.connect({ timeout: 30_000 }, (err) =>
      err
        ? reject(new TagstreamError(ErrorCodes.SOURCE_FAILED, `cannot reach Kafka at ${options.brokers}: ${err.message}`, { retriable: true, cause: err, details: { brokers: options.brokers } }))
        : resolve(),
    ),
  )
  producer.setPollInterval(50)
  try {
    let events = 0
    let invalid = 0
    let duplicates = 0
    let bytes = 0
    for (const record of generateWorkload(workload)) {
      const value = messageValueOf(record, options.format)
      const key = record.kind === 'event' ? record.event.userId : null
      for (;;) {
        try {
          producer.produce(options.topic, null, value, key)
          break
        } catch (err) {
          if ((err as { code?: unknown }).code !== ERR_QUEUE_FULL) throw err
          // librdkafka's queue is full: let deliveries make room.
          await new Promise((resolve) => setTimeout(resolve, 5))
        }
      }
      bytes += value.length
      if (record.kind === 'event') {
        events++
        if (record.duplicate) duplicates++
      } else invalid++
      if (failed > 0) break
    }
    const messages = events + invalid
    // Every message is reported once, delivered or failed, within message.timeout.ms.
    const deadline = Date.now() + messageTimeoutMs + 10_000
    while (acknowledged + failed < messages && failed === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    if (failed > 0 || acknowledged < messages) {
      throw new TagstreamError(
        ErrorCodes.SINK_FAILED,
        `${options.topic}: ${acknowledged} of ${messages} messages acknowledged${firstFailure === undefined ? '' : `; first failure: ${firstFailure}`}`,
        { retriable: true, details: { topic: options.topic, acknowledged, failed, messages } },
      )
    }
    return { topic: options.topic, messages, events, invalid, duplicates, bytes }
  } finally {
    await new Promise<void>((resolve) => producer.disconnect(10_000, () => resolve()))
  }
}
