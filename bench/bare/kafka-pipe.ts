/**
 * The bare Kafka pipe, scenario 3's limit: consume the input topic in a consumer group and produce,
 * for every event, a small message naming it to the output topic. Nothing is kept, nothing is
 * committed, nothing waits for a delivery report: the latency of this process is what the two
 * Kafka hops of the engine's path cost on this machine and cluster, with the engine's own client
 * settings (src/sources/kafka-source.ts, src/sinks/kafka-sinks.ts) and its batch read.
 *
 *   node dist/bench/bare/kafka-pipe.js BOOTSTRAP INPUT OUTPUT GROUP FETCH_WAIT_MS
 *
 * Prints `ready` once partitions are assigned, and stops on SIGTERM.
 */
import Kafka from '@confluentinc/kafka-javascript'
import type { Assignment, LibrdKafkaError, Message } from '@confluentinc/kafka-javascript'

const BATCH = 4096
const CONSUME_TIMEOUT_MS = 100

async function main(bootstrap: string, input: string, output: string, group: string, fetchWaitMs: number): Promise<void> {
  const producer = new Kafka.Producer({
    'bootstrap.servers': bootstrap,
    'enable.idempotence': true,
    acks: -1,
    'compression.codec': 'lz4',
    'linger.ms': 5,
    partitioner: 'murmur2_random',
  })
  await new Promise<void>((res, rej) => producer.connect({ timeout: 30_000 }, (err) => (err ? rej(err) : res())))
  producer.setPollInterval(100)

  let assigned = false
  const consumer = new Kafka.KafkaConsumer({
    'bootstrap.servers': bootstrap,
    'group.id': group,
    'session.timeout.ms': 6000,
    'heartbeat.interval.ms': 1000,
    'enable.partition.eof': false,
    'enable.auto.commit': false,
    // From the topic's start, as the engine reads a partition it has no offset for: with the
    // default (latest), the records produced before the offsets were looked up were skipped.
    'auto.offset.reset': 'earliest',
    'partition.assignment.strategy': 'range',
    'fetch.wait.max.ms': fetchWaitMs,
    rebalance_cb: (err: LibrdKafkaError, assignment: Assignment[]) => {
      if (err.code === Kafka.CODES.ERRORS.ERR__ASSIGN_PARTITIONS) {
        consumer.assign(assignment)
        if (!assigned) {
          assigned = true
          process.stdout.write('ready\n')
        }
      } else consumer.unassign()
    },
  })
  await new Promise<void>((res, rej) => consumer.connect({ timeout: 30_000 }, (err) => (err ? rej(err) : res())))
  consumer.setDefaultConsumeTimeout(CONSUME_TIMEOUT_MS)
  ;(consumer as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(only: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true)
  consumer.subscribe([input])

  let stopping = false
  process.on('SIGTERM', () => (stopping = true))
  while (!stopping) {
    const batch = await new Promise<Message[]>((res) => consumer.consume(BATCH, (err: LibrdKafkaError, msgs: Message[]) => res(err ? [] : msgs)))
    for (const m of batch) {
      let event: { eventId?: unknown; userId?: unknown }
      try {
        event = JSON.parse((m.value as Buffer).toString('utf8')) as typeof event
      } catch {
        continue
      }
      if (typeof event.eventId !== 'string' || typeof event.userId !== 'string') continue
      producer.produce(output, null, Buffer.from(JSON.stringify({ cause: { kind: 'event', eventId: event.eventId } })), event.userId)
    }
  }
  await new Promise<void>((res) => producer.flush(5000, () => res()))
  await new Promise<void>((res) => consumer.disconnect(() => res()))
  await new Promise<void>((res) => producer.disconnect(5000, () => res()))
}

const [bootstrap, input, output, group, fetchWait] = process.argv.slice(2)
if (bootstrap === undefined || input === undefined || output === undefined || group === undefined) {
  process.stderr.write('usage: kafka-pipe.js BOOTSTRAP INPUT OUTPUT GROUP [FETCH_WAIT_MS]\n')
  process.exit(2)
}
await main(bootstrap, input, output, group, Number(fetchWait ?? 5))
process.exit(0)
