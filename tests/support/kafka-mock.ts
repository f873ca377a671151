import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import Kafka from '@confluentinc/kafka-javascript'
import type { KafkaConsumer, LibrdKafkaError, Message } from '@confluentinc/kafka-javascript'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * librdkafka's mock Kafka cluster, run in a child process (`kafka-mock-process.cjs`).
 *
 * It speaks the real wire protocol, so the real client and the engine run against it unchanged:
 * point `bootstrap.servers` at `bootstrap`. It lives in its own process so that tests can stop it
 * (to simulate a broker outage) without touching the clients under test, and so that it never
 * shares a librdkafka handle with them.
 *
 * What it is not (DESIGN.md, Testing), and what tests must respect:
 * - Topics are auto-created on first use (produce or metadata request) with **4 partitions**.
 *   There is no CreateTopics: you cannot pick the partition count. Use a fresh topic name per test.
 * - Each partition keeps at most **5 MiB and 100,000 message batches** (as stored, i.e. after
 *   compression); older batches are **silently dropped** (the log start offset moves). Keep test
 *   volumes below that, or read-back checks will miss the oldest data without any error.
 * - The **first join of a consumer group takes ~3 s** (the mock's group.initial.rebalance.delay.ms);
 *   **later rebalances wait for `session.timeout.ms`** of the members that left: give test
 *   consumers a low one (e.g. 6000) and close them cleanly.
 * - **Transactions are not enforced**: a read_committed consumer also sees aborted data. Tests
 *   cannot prove exactly-once output through Kafka transactions.
 * - Everything is in memory and lost at `stop()`. Brokers listen on ephemeral 127.0.0.1 ports.
 *
 * The child exits when `stop()` is called, when this process exits (its stdin pipe closes, even on
 * SIGKILL of the parent), or when it notices its parent is gone.
 */
export interface KafkaMock {
  /** Comma-separated `host:port` list to use as `bootstrap.servers`. */
  readonly bootstrap: string
  /** Number of mock brokers. */
  readonly brokers: number
  /** Stops the cluster (kills the child); resolves when it has exited. Idempotent. */
  stop(): Promise<void>
}

export interface KafkaMockOptions {
  /** Number of brokers (1 by default; 3 to exercise leaders and replicas). */
  brokers?: number
  /** How long to wait for the bootstrap address before failing. Default 15 s. */
  startTimeoutMs?: number
}

// Next to this module in tests/support; compiled into dist/ (the bench suite), the .cjs stays in the source tree.
const SCRIPT = [new URL('./kafka-mock-process.cjs', import.meta.url), new URL('../../../tests/support/kafka-mock-process.cjs', import.meta.url)]
  .map((u) => fileURLToPath(u))
  .find((p) => existsSync(p)) as string

export async function startKafkaMock(options: KafkaMockOptions = {}): Promise<KafkaMock> {
  const brokers = options.brokers ?? 1
  const startTimeoutMs = options.startTimeoutMs ?? 15_000
  const child = spawn(process.execPath, [SCRIPT, String(brokers)], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000)
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  // Exiting this process closes the pipe anyway; this is for an orderly `process.exit`.
  const onExit = (): void => {
    child.kill('SIGKILL')
  }
  process.once('exit', onExit)

  const kill = async (): Promise<void> => {
    process.removeListener('exit', onExit)
    if (child.exitCode === null && child.signalCode === null) {
      child.stdin.end()
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(t)
    }
  }

  let bootstrap: string
  try {
    bootstrap = await new Promise<string>((resolve, reject) => {
      let buf = ''
      const timer = setTimeout(
        () => reject(new Error(`kafka mock cluster did not report its bootstrap address within ${startTimeoutMs} ms; stderr: ${stderr.trim() || '(empty)'}`)),
        startTimeoutMs,
      )
      const fail = (err: Error): void => {
        clearTimeout(timer)
        reject(err)
      }
      child.once('error', (err) => fail(new Error(`cannot start the kafka mock cluster process: ${err.message}`)))
      child.once('exit', (code, signal) =>
        fail(new Error(`kafka mock cluster process exited (code ${code}, signal ${signal}) before reporting its address; stderr: ${stderr.trim() || '(empty)'}`)),
      )
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        buf += d
        let nl: number
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim()
          buf = buf.slice(nl + 1)
          if (line === '') continue
          let msg: { bootstrap?: unknown; error?: unknown }
          try {
            msg = JSON.parse(line) as typeof msg
          } catch {
            continue
          }
          if (typeof msg.error === 'string') return fail(new Error(`kafka mock cluster: ${msg.error}`))
          if (typeof msg.bootstrap === 'string' && msg.bootstrap !== '') {
            clearTimeout(timer)
            return resolve(msg.bootstrap)
          }
        }
      })
    })
  } catch (err) {
    await kill()
    throw err
  }
  // Keep draining stdout so that the child can never block on a full pipe.
  child.stdout.resume()

  let stopping: Promise<void> | undefined
  return {
    bootstrap,
    brokers,
    stop: () => (stopping ??= kill()),
  }
}

/** Reads a topic from the beginning, up to the high watermark of every partition, without joining a group. */
export async function readTopic(bootstrap: string, topic: string, partitions = 4, timeoutMs = 30_000): Promise<Message[]> {
  const consumer: KafkaConsumer = new Kafka.KafkaConsumer({
    'bootstrap.servers': bootstrap,
    'group.id': `reader-${randomUUID()}`,
    'auto.offset.reset': 'earliest',
    'enable.auto.commit': false,
    'session.timeout.ms': 6000,
    'heartbeat.interval.ms': 500,
  })
  await new Promise<void>((resolve, reject) => consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())))
  try {
    const highs = new Map<number, number>()
    for (let p = 0; p < partitions; p++) {
      const { lowOffset, highOffset } = await new Promise<{ lowOffset: number; highOffset: number }>((resolve, reject) =>
        consumer.queryWatermarkOffsets(topic, p, 5000, (err, offsets) => (err ? reject(err) : resolve(offsets))),
      )
      // The mock silently drops old batches past 5 MiB / 100,000 batches per partition: make sure it did not.
      if (lowOffset !== 0) throw new Error(`readTopic(${topic}): partition ${p} lost its oldest data (low watermark ${lowOffset})`)
      highs.set(p, highOffset)
    }
    const next = new Map<number, number>([...highs.keys()].map((p) => [p, 0]))
    const done = (): boolean => [...highs].every(([p, high]) => (next.get(p) ?? 0) >= high)
    consumer.setDefaultConsumeTimeout(200)
    // Assigned, not subscribed: no group join (the mock's first join alone takes ~3 s).
    consumer.assign([...highs.keys()].map((partition) => ({ topic, partition, offset: 0 })))
    const out: Message[] = []
    const deadline = Date.now() + timeoutMs
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`readTopic(${topic}): timed out with ${out.length} messages; positions ${JSON.stringify([...next])} of ${JSON.stringify([...highs])}`)
      const batch = await new Promise<Message[]>((resolve, reject) => consumer.consume(1000, (err: LibrdKafkaError, msgs: Message[]) => (err ? reject(err) : resolve(msgs))))
      for (const m of batch) {
        out.push(m)
        next.set(m.partition, m.offset + 1)
      }
    }
    return out
  } finally {
    await new Promise<void>((resolve) => consumer.disconnect(() => resolve()))
  }
}


export interface OutgoingMessage {
  readonly key: string | null
  readonly value: Buffer
}

/**
 * Produces messages to a topic and resolves when every one is acknowledged. Keyed messages go
 * where Kafka's Java producer puts them (murmur2), so a user's events land in the partition the
 * engine's replay routes them to. lz4 keeps the mock's 5 MiB per partition further away.
 */
export async function produceMessages(bootstrap: string, topic: string, messages: readonly OutgoingMessage[]): Promise<void> {
  const producer = new Kafka.Producer({
    'bootstrap.servers': bootstrap,
    'compression.codec': 'lz4',
    'linger.ms': 5,
    partitioner: 'murmur2_random',
    'enable.idempotence': true,
    'queue.buffering.max.messages': 1_000_000,
    dr_cb: true,
  })
  await new Promise<void>((resolve, reject) => producer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())))
  producer.setPollInterval(5)
  try {
    let pending = messages.length
    let failure: Error | undefined
    const done = new Promise<void>((resolve) => {
      if (pending === 0) resolve()
      producer.on('delivery-report', (err) => {
        if (err) failure ??= new Error(err.message)
        if (--pending === 0) resolve()
      })
    })
    for (const m of messages) producer.produce(topic, null, m.value, m.key)
    await done
    if (failure !== undefined) throw failure
  } finally {
    await new Promise<void>((resolve) => producer.disconnect(5000, () => resolve()))
  }
}

/** High watermark of each partition of a topic. */
export async function endOffsets(bootstrap: string, topic: string, partitions = 4): Promise<number[]> {
  const consumer: KafkaConsumer = new Kafka.KafkaConsumer({ 'bootstrap.servers': bootstrap, 'group.id': `probe-${randomUUID()}` })
  await new Promise<void>((resolve, reject) => consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())))
  try {
    const out: number[] = []
    for (let p = 0; p < partitions; p++) {
      const { highOffset } = await new Promise<{ highOffset: number }>((resolve, reject) =>
        consumer.queryWatermarkOffsets(topic, p, 5000, (err, offsets) => (err ? reject(err) : resolve(offsets))),
      )
      out.push(highOffset)
    }
    return out
  } finally {
    await new Promise<void>((resolve) => consumer.disconnect(() => resolve()))
  }
}

/**
 * The offsets a consumer group has committed for a topic's partitions (-1: none), read with
 * OffsetFetch by a client that does not join the group (it would cause a rebalance).
 */
export async function groupOffsets(bootstrap: string, groupId: string, topic: string, partitions = 4): Promise<number[]> {
  const consumer: KafkaConsumer = new Kafka.KafkaConsumer({ 'bootstrap.servers': bootstrap, 'group.id': groupId, 'enable.auto.commit': false })
  await new Promise<void>((resolve, reject) => consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())))
  try {
    const toppars = Array.from({ length: partitions }, (_, partition) => ({ topic, partition }))
    const committed = await new Promise<{ partition: number; offset: number }[]>((resolve, reject) =>
      consumer.committed(toppars, 5000, (err, tps) => (err ? reject(err) : resolve(tps))),
    )
    const out = Array.from({ length: partitions }, () => -1)
    for (const tp of committed) out[tp.partition] = tp.offset ?? -1
    return out
  } finally {
    await new Promise<void>((resolve) => consumer.disconnect(() => resolve()))
  }
}

/** Waits until the group has committed `target` offsets on every partition (the engine's store commit is mirrored there). */
export async function waitForGroupOffsets(bootstrap: string, groupId: string, topic: string, target: readonly number[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: number[] = []
  while (Date.now() < deadline) {
    last = await groupOffsets(bootstrap, groupId, topic, target.length)
    // An empty partition never gets a commit: a target of 0 is reached from the start.
    if (last.every((o, p) => (target[p] as number) <= 0 || o >= (target[p] as number))) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`group ${groupId} did not reach offsets ${JSON.stringify(target)} on ${topic} in ${timeoutMs} ms (at ${JSON.stringify(last)})`)
}
