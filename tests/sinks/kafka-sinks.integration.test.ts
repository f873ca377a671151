import { createServer } from 'node:net'
import { randomUUID } from 'node:crypto'
import Kafka from '@confluentinc/kafka-javascript'
import type { KafkaConsumer, LibrdKafkaError, Message } from '@confluentinc/kafka-javascript'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { DeadLetter } from '../../src/contracts/dead-letter.js'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { isTagstreamError, ErrorCodes } from '../../src/errors.js'
import { DeadLetterHeaders, KafkaDeadLetterSink, KafkaTagChangeSink } from '../../src/sinks/kafka-sinks.js'
import { readTopic, startKafkaMock, type KafkaMock } from '../support/kafka-mock.js'

/** The mock cluster auto-creates every topic with this many partitions (no CreateTopics). */
const MOCK_PARTITIONS = 4

let mock: KafkaMock

beforeAll(async () => {
  mock = await startKafkaMock()
})

afterAll(async () => {
  await mock?.stop()
})

function topicName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`
}

function tagChange(i: number): TagChange {
  const userId = `user-${(i * 7919) % 1500}`
  return {
    id: `${userId}:rfm.segment:${i + 1}`,
    userId,
    tag: i % 3 === 0 ? 'rfm.segment' : 'lifecycle.stage',
    op: i % 5 === 0 ? 'entered' : 'changed',
    from: i % 5 === 0 ? null : 'loyal_customers',
    to: i % 2 === 0 ? 'at_risk' : 'champions',
    tagVersion: 1 + (i % 4),
    at: new Date(Date.UTC(2024, 2, 1) + i * 1000).toISOString(),
    emittedAt: new Date(Date.UTC(2024, 2, 1, 0, 0, 1) + i * 1000).toISOString(),
    cause: { kind: 'event', eventId: `evt-${i}-${'x'.repeat(i % 17)}` },
    evidence: { monetary90d: 1250.25 + i, frequency90d: i % 11, daysSinceLastPurchase: i % 90, category: 'maison & jardin — été ☀', note: 'ü'.repeat(i % 5) },
    seq: i + 1,
  }
}

const readAll = (topic: string, timeoutMs?: number): Promise<Message[]> => readTopic(mock.bootstrap, topic, MOCK_PARTITIONS, timeoutMs)

function headerMap(m: Message): Map<string, string> {
  const map = new Map<string, string>()
  for (const h of m.headers ?? []) for (const [k, v] of Object.entries(h)) map.set(k, Buffer.isBuffer(v) ? v.toString('utf8') : String(v))
  return map
}

async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

describe('KafkaTagChangeSink (librdkafka mock cluster)', () => {
  it('delivers 10,000 tag changes exactly once, as JSON keyed by userId', async () => {
    const topic = topicName('tag-changes')
    const sink = new KafkaTagChangeSink({ brokers: mock.bootstrap, topic, connectTimeoutMs: 10_000 })
    await sink.open()
    const written: TagChange[] = []
    for (let i = 0; i < 10_000; i++) {
      const c = tagChange(i)
      written.push(c)
      sink.write(c)
      if (i % 2500 === 2499) {
        await sink.flush()
        expect(sink.stats.outstanding).toBe(0)
      }
    }
    await sink.flush()
    expect(sink.stats).toMatchObject({ written: 10_000, delivered: 10_000, failed: 0, outstanding: 0 })
    await sink.close()

    const messages = await readAll(topic)
    expect(messages).toHaveLength(10_000)
    const expected = new Map(written.map((c) => [c.id, JSON.stringify(c)]))
    const seen = new Set<string>()
    const lastSeqByUser = new Map<string, number>()
    for (const m of messages) {
      const text = m.value?.toString('utf8') ?? ''
      const change = JSON.parse(text) as TagChange
      expect(seen.has(change.id), `duplicate ${change.id}`).toBe(false)
      seen.add(change.id)
      expect(text).toBe(expected.get(change.id))
      expect(m.key?.toString()).toBe(change.userId)
      // One user's changes stay in one partition, in write order.
      expect(change.seq).toBeGreaterThan(lastSeqByUser.get(`${m.partition}/${change.userId}`) ?? 0)
      lastSeqByUser.set(`${m.partition}/${change.userId}`, change.seq)
    }
    expect(seen.size).toBe(10_000)
    const partitionsOfUser = new Map<string, Set<number>>()
    for (const m of messages) {
      const u = m.key?.toString() ?? ''
      partitionsOfUser.set(u, (partitionsOfUser.get(u) ?? new Set()).add(m.partition))
    }
    expect([...partitionsOfUser.values()].every((s) => s.size === 1)).toBe(true)
  })

  it('never drops under backpressure: a full librdkafka queue overflows in order and flush waits for it', async () => {
    const topic = topicName('backpressure')
    const sink = new KafkaTagChangeSink({ brokers: mock.bootstrap, topic, librdkafka: { 'queue.buffering.max.messages': 50 } })
    await sink.open()
    let maxOverflow = 0
    for (let i = 0; i < 3000; i++) {
      sink.write(tagChange(i))
      maxOverflow = Math.max(maxOverflow, sink.stats.overflowed)
    }
    expect(maxOverflow).toBeGreaterThan(0)
    await sink.flush()
    expect(sink.stats).toMatchObject({ written: 3000, delivered: 3000, failed: 0, outstanding: 0, overflowed: 0 })
    await sink.close()
    const messages = await readAll(topic)
    const seqs = messages.map((m) => (JSON.parse(m.value?.toString() ?? '{}') as TagChange).seq)
    expect(new Set(seqs).size).toBe(3000)
    // The overflow keeps write order: each user's changes arrive in increasing seq.
    const last = new Map<string, number>()
    for (const m of messages) {
      const c = JSON.parse(m.value?.toString() ?? '{}') as TagChange
      expect(c.seq).toBeGreaterThan(last.get(c.userId) ?? 0)
      last.set(c.userId, c.seq)
    }
  })

  it('flush rejects with a retriable TS_ERR_SINK_FAILED, without hanging, when the broker goes away', async () => {
    const own = await startKafkaMock()
    const sink = new KafkaTagChangeSink({ brokers: own.bootstrap, topic: topicName('outage'), messageTimeoutMs: 2000, connectTimeoutMs: 10_000 })
    try {
      await sink.open()
      sink.write(tagChange(1))
      await sink.flush()
      await own.stop() // now bootstrap points at closed ports
      for (let i = 2; i < 50; i++) sink.write(tagChange(i))
      const started = Date.now()
      const err = await sink.flush().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(Date.now() - started).toBeLessThan(15_000)
      expect(isTagstreamError(err, ErrorCodes.SINK_FAILED)).toBe(true)
      expect((err as { retriable: boolean }).retriable).toBe(true)
      expect(sink.stats.failed).toBe(48)
      // Lost messages cannot be flushed by retrying: every later flush fails too, immediately.
      sink.write(tagChange(99))
      await expect(sink.flush()).rejects.toMatchObject({ code: ErrorCodes.SINK_FAILED })
    } finally {
      await sink.close().catch(() => undefined)
      await own.stop()
    }
  })

  it('open rejects with TS_ERR_SINK_FAILED when no broker answers', async () => {
    const port = await closedPort()
    const sink = new KafkaTagChangeSink({ brokers: `127.0.0.1:${port}`, topic: 'nowhere', connectTimeoutMs: 1500, messageTimeoutMs: 1500 })
    const started = Date.now()
    await expect(sink.open()).rejects.toMatchObject({ code: ErrorCodes.SINK_FAILED, retriable: true })
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(() => sink.write(tagChange(1))).toThrow(/not open/)
  })
})

describe('KafkaDeadLetterSink (librdkafka mock cluster)', () => {
  it('writes the raw bytes as the value, the reason and coordinates as headers, the userId as key', async () => {
    const topic = topicName('dead-letters')
    const garbage = Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x90, 0x28, 0xbc, 0x0a, 0x80])
    const letters: DeadLetter[] = [
      {
        reason: { code: 'invalid_json', message: 'Unexpected token \u00ff in JSON at position 0' },
        coordinates: { source: 'kafka:orders', partition: 3, offset: 1234567890123 },
        raw: garbage.toString('base64'),
        truncated: false,
        rejectedAt: '2024-03-01T10:00:00.000Z',
      },
      {
        reason: { code: 'missing_field', message: 'type is required', field: 'type' },
        coordinates: { source: 'events-file', partition: 0, offset: 42 },
        raw: Buffer.from('{"eventId":"e1","userId":"u-ü-1","ts":1}').toString('base64'),
        truncated: false,
        rejectedAt: '2024-03-01T10:00:01.000Z',
        eventId: 'e1',
        userId: 'u-ü-1',
      },
      {
        reason: { code: 'record_too_large', message: 'record of 2000000 bytes exceeds 65536' },
        coordinates: { source: 'kafka:orders', partition: 1, offset: 7 },
        raw: Buffer.alloc(65536, 0x7b).toString('base64'),
        truncated: true,
        rejectedAt: '2024-03-01T10:00:02.000Z',
      },
    ]
    const sink = new KafkaDeadLetterSink({ brokers: mock.bootstrap, topic })
    await sink.open()
    for (const dl of letters) sink.write(dl)
    await sink.flush()
    await sink.close()

    const messages = await readAll(topic)
    expect(messages).toHaveLength(letters.length)
    for (const dl of letters) {
      const m = messages.find((x) => headerMap(x).get(DeadLetterHeaders.OFFSET) === String(dl.coordinates.offset))
      expect(m, `dead letter at offset ${dl.coordinates.offset}`).toBeDefined()
      if (m === undefined) continue
      expect(Buffer.compare(m.value ?? Buffer.alloc(0), Buffer.from(dl.raw, 'base64'))).toBe(0)
      const h = headerMap(m)
      expect(h.get(DeadLetterHeaders.REASON)).toBe(dl.reason.code)
      expect(h.get(DeadLetterHeaders.REASON_MESSAGE)).toBe(dl.reason.message)
      expect(h.get(DeadLetterHeaders.SOURCE)).toBe(dl.coordinates.source)
      expect(h.get(DeadLetterHeaders.PARTITION)).toBe(String(dl.coordinates.partition))
      expect(h.get(DeadLetterHeaders.TRUNCATED)).toBe(String(dl.truncated))
      expect(h.get(DeadLetterHeaders.REJECTED_AT)).toBe(dl.rejectedAt)
      expect(h.get(DeadLetterHeaders.REASON_FIELD)).toBe(dl.reason.field)
      expect(h.get(DeadLetterHeaders.EVENT_ID)).toBe(dl.eventId)
      if (dl.userId === undefined) expect(m.key ?? null).toBeNull()
      else expect(m.key?.toString('utf8')).toBe(dl.userId)
    }
  })
})
