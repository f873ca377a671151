import Kafka from '@confluentinc/kafka-javascript'
import type { KafkaConsumer, LibrdKafkaError, Message } from '@confluentinc/kafka-javascript'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KafkaSource, type Decoder } from '../../src/sources/kafka-source.js'
import type { PartitionOffsets } from '../../src/sources/source.js'
import { endOffsets, groupOffsets, produceMessages, startKafkaMock, waitForGroupOffsets, type KafkaMock } from '../support/kafka-mock.js'

// The source hands raw records over; decoding is the engine's business.
const decode: Decoder = () => {
  throw new Error('not decoded in these tests')
}

/**
 * The engine's side of a KafkaSource, reduced to offsets: rebalances are handled between two polls
 * (revoked: release; assigned: start at the "store" offsets), and `commit()` stores the positions
 * read so far and mirrors them to the group, as the engine does after a store commit.
 */
class Member {
  readonly store = new Map<number, number>()
  readonly read = new Map<number, number>()
  readonly logs: string[] = []
  readonly source: KafkaSource
  assigned: readonly number[] = []
  private driving: Promise<void> | undefined
  private stopping = false

  constructor(mock: KafkaMock, readonly topic: string, groupId: string, options: { heartbeatIntervalMs?: number } = {}) {
    this.source = new KafkaSource({
      name: 'events',
      brokers: mock.bootstrap,
      groupId,
      topics: [{ topic, decode }],
      maxPartitions: 4,
      maxRecordBytes: 1 << 20,
      sessionTimeoutMs: 6000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 300,
      log: (message) => this.logs.push(message),
    })
  }

  private offsets(partitions: Iterable<number>, from: ReadonlyMap<number, number>): PartitionOffsets {
    return new Map([...partitions].map((p) => [p, new Map(from.has(p) ? [[this.topic, from.get(p) as number]] : [])]))
  }

  async step(): Promise<void> {
    for (let r = this.source.takeRebalance(); r !== undefined; r = this.source.takeRebalance()) {
      if (r.kind === 'revoked') {
        this.assigned = []
        r.release()
        continue
      }
      for (const p of r.partitions) if (this.store.has(p)) this.read.set(p, this.store.get(p) as number)
      await r.start(this.offsets(r.partitions, this.store))
      this.assigned = r.partitions
    }
    for (const record of await this.source.poll(1000, 50)) this.read.set(record.partition as number, record.nextOffset)
  }

  /** Polls in the background until `pause()`. */
  drive(): void {
    this.stopping = false
    this.driving = (async () => {
      while (!this.stopping) await this.step()
    })()
  }

  async pause(): Promise<void> {
    this.stopping = true
    await this.driving
    this.driving = undefined
  }

  commit(): void {
    for (const [p, offset] of this.read) this.store.set(p, offset)
    this.source.committed(this.offsets(this.assigned, this.store))
  }

  async until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await sleep(20)
    }
  }
}

/** Resolves when the consumer's librdkafka sends its JoinGroup request (its `cgrp` debug log says so). */
function joinGroupSent(consumer: KafkaConsumer): Promise<void> {
  return new Promise((resolve) => {
    const onLog = (log: { message: string }): void => {
      if (!log.message.includes('Joining group')) return
      consumer.removeListener('event.log', onLog)
      resolve()
    }
    consumer.on('event.log', onLog)
  })
}

describe('KafkaSource: the group offsets follow the store (librdkafka mock cluster)', () => {
  let mock: KafkaMock
  const members: Member[] = []
  beforeAll(async () => {
    mock = await startKafkaMock()
  })
  afterAll(async () => {
    await Promise.allSettled(members.map(async (m) => {
      await m.pause()
      await m.source.close()
    }))
    await mock?.stop()
  })

  async function topicWith(name: string, count: number): Promise<{ topic: string; groupId: string; end: number[] }> {
    const suffix = `${name}-${Date.now().toString(36)}`
    const topic = `events-${suffix}`
    await produceMessages(mock.bootstrap, topic, Array.from({ length: count }, (_, i) => ({ key: `user-${i}`, value: Buffer.from(`{"n":${i}}`) })))
    const end = await endOffsets(mock.bootstrap, topic)
    expect(end.reduce((a, b) => a + b, 0)).toBe(count)
    expect(end.every((o) => o > 0)).toBe(true)
    return { topic, groupId: `group-${suffix}`, end }
  }

  it('an assignment commits the stored offsets: the group shows them without any new record', async () => {
    const { topic, groupId, end } = await topicWith('assign', 200)
    // A previous run stored everything, but the group never heard of it (e.g. a crash between the
    // store commit and the group commit): nothing new arrives, so no store commit follows.
    const a = new Member(mock, topic, groupId)
    members.push(a)
    end.forEach((offset, p) => a.store.set(p, offset))
    await a.source.open(0)
    expect(await groupOffsets(mock.bootstrap, groupId, topic)).toEqual([-1, -1, -1, -1])
    a.drive()
    await a.until(() => a.assigned.length === 4, 'the assignment')
    await waitForGroupOffsets(mock.bootstrap, groupId, topic, end, 15_000)
    await a.pause()
    expect(a.read).toEqual(new Map(end.map((o, p) => [p, o])))
    expect(await groupOffsets(mock.bootstrap, groupId, topic)).toEqual(end)
  }, 60_000)

  it('a commit refused during a rebalance is made good: the member that caught up shows its stored offsets', async () => {
    const { topic, groupId, end } = await topicWith('refused', 400)
    const a = new Member(mock, topic, groupId)
    members.push(a)
    await a.source.open(0)
    a.drive()
    await a.until(() => a.assigned.length === 4 && end.every((o, p) => a.read.get(p) === o), 'member A to read everything')
    await a.pause()
    // Let the read-ahead consume return: no poll serves A's rebalance callback from now on.
    await sleep(300)
    expect(a.logs.filter((l) => l.includes('the group refused'))).toEqual([])

    // B joins. The group is rebalancing at once, but A hears of it only at its next poll: A's
    // store commit of everything it read is mirrored to the group during the rebalance, which
    // refuses it (REBALANCE_IN_PROGRESS). That was the last commit A would ever make: it has
    // caught up.
    const b: KafkaConsumer = new Kafka.KafkaConsumer({
      'bootstrap.servers': mock.bootstrap,
      'group.id': groupId,
      'partition.assignment.strategy': 'range',
      'enable.auto.commit': false,
      'session.timeout.ms': 6000,
      'heartbeat.interval.ms': 300,
      debug: 'cgrp',
      event_cb: true,
    })
    await new Promise<void>((resolve, reject) => b.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())))
    const joining = joinGroupSent(b)
    b.subscribe([topic])
    b.setDefaultConsumeTimeout(50)
    let bStopping = false
    const bLoop = (async () => {
      while (!bStopping) await new Promise<Message[]>((resolve) => b.consume(100, (_err: LibrdKafkaError, messages: Message[]) => resolve(messages ?? [])))
    })()
    try {
      await joining
      await sleep(300)
      a.commit()
      expect(a.store).toEqual(new Map(end.map((o, p) => [p, o])))
      a.drive()
      // Eager range assignment: each member gets two adjacent partitions. Which half is A's depends
      // on the order of the member ids, which the broker draws at random.
      await a.until(() => a.assigned.length === 2 && b.assignments().length === 2, 'the new assignment')
      const kept = [...a.assigned].sort((x, y) => x - y)
      expect([[0, 1], [2, 3]]).toContainEqual(kept)
      expect(b.assignments().map((t) => t.partition).sort((x, y) => x - y)).toEqual([0, 1, 2, 3].filter((p) => !kept.includes(p)))
      expect(a.logs.filter((l) => l.includes('the group refused the commit of its offsets'))).toHaveLength(1)
      // A reads nothing more, so it makes no store commit, yet the group shows where its store is.
      await waitForGroupOffsets(mock.bootstrap, groupId, topic, end.map((o, p) => (kept.includes(p) ? o : 0)), 15_000)
      const shown = await groupOffsets(mock.bootstrap, groupId, topic)
      expect(kept.map((p) => shown[p])).toEqual(kept.map((p) => end[p]))
      await a.pause()
    } finally {
      bStopping = true
      await bLoop
      await new Promise<void>((resolve) => b.disconnect(() => resolve()))
    }
  }, 90_000)
})
