import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { DeadLetterHeaders } from '../../src/sinks/kafka-sinks.js'
import { encodeNdjsonLine, generateWorkload, type GeneratedRecord } from '../../src/workload/generator.js'
import { FOUNDATION_OPERATORS, readNdjson, runCli, startCli, writeConfig } from '../support/cli.js'
import { endOffsets, produceMessages, readTopic, waitForGroupOffsets, type OutgoingMessage } from '../support/kafka-mock.js'
import { mockClusterForTests } from '../support/kafka-mock-suite.js'

/** The record as a Kafka message: keyed by user id when it has one (invalid records may not). */
function toMessage(r: GeneratedRecord): OutgoingMessage {
  if (r.kind === 'event') return { key: r.event.userId, value: Buffer.from(JSON.stringify(r.event)) }
  return { key: null, value: r.bytes }
}

/** A tag change without its wall-clock field: what the same change computed twice must equal. */
function stable(c: TagChange): string {
  const { emittedAt: _, ...rest } = c
  return JSON.stringify(rest)
}

function header(m: { headers?: Record<string, unknown>[] }, name: string): string | undefined {
  for (const h of m.headers ?? []) if (name in h) return String(h[name])
  return undefined
}

interface KafkaSetup {
  readonly input: string
  readonly output: string
  readonly dead: string
  readonly groupId: string
  readonly configPath: string
  readonly dataDir: string
}

/**
 * RFM among the operators, ranked within each partition: then how the consumer interleaves the
 * partitions cannot change a tag, and the output topic must equal a file replay, re-scored tags included.
 */
const RANKED_PER_PARTITION = { engine: { partitions: 4, populationScope: 'partition' }, operators: [...FOUNDATION_OPERATORS, { name: 'rfm', type: 'rfm' }] }

describe('Kafka source: consumer group in, tag changes and dead letters out (librdkafka mock cluster)', () => {
  const mock = mockClusterForTests()

  function setup(name: string): KafkaSetup {
    const suffix = `${name}-${Date.now().toString(36)}`
    const input = `events-${suffix}`
    const output = `changes-${suffix}`
    const dead = `dead-${suffix}`
    const groupId = `tagstream-${suffix}`
    const { configPath, dataDir } = writeConfig({
      sources: [{ name: 'events', type: 'kafka', brokers: mock.bootstrap, groupId, topics: [{ topic: input }], sessionTimeoutMs: 3000, heartbeatIntervalMs: 300 }],
      sinks: {
        tagChanges: [{ type: 'kafka', brokers: mock.bootstrap, topic: output }],
        deadLetter: { type: 'kafka', brokers: mock.bootstrap, topic: dead },
      },
      engine: { ...RANKED_PER_PARTITION.engine, commitIntervalMs: 100 },
      operators: RANKED_PER_PARTITION.operators,
      // Pure event time, as a replay: the comparison must not depend on the wall clock.
      time: { idleAdvanceMs: 0 },
    })
    return { input, output, dead, groupId, configPath, dataDir }
  }

  /** Runs the engine until the group has committed everything on the input topic, then stops it with SIGTERM. */
  async function runUntilCaughtUp(k: KafkaSetup): Promise<string> {
    const target = await endOffsets(mock.bootstrap, k.input)
    const run = startCli(['run', '--config', k.configPath])
    try {
      await waitForGroupOffsets(mock.bootstrap, k.groupId, k.input, target, 40_000)
    } finally {
      run.child.kill('SIGTERM')
    }
    const r = await run.done
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('stopped cleanly')
    expect(r.stderr).not.toContain('Set engine.populationScope')
    return r.stderr
  }

  /** What `tagstream replay` of the same records gives. */
  async function replay(records: readonly GeneratedRecord[]): Promise<{ changes: TagChange[]; dead: { raw: string; reason: { code: string } }[]; profiles: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'ts-kreplay-'))
    const file = join(dir, 'events.ndjson')
    writeFileSync(file, Buffer.concat(records.map(encodeNdjsonLine)))
    const files = writeConfig(RANKED_PER_PARTITION, dir)
    const r = await runCli(['replay', file, '--config', files.configPath])
    expect(r.code, r.stderr).toBe(0)
    const p = await runCli(['profile', '--all', '--config', files.configPath])
    expect(p.code, p.stderr).toBe(0)
    return {
      changes: readNdjson<TagChange>(join(files.dataDir, 'tag-changes.ndjson')),
      dead: readNdjson(join(files.dataDir, 'dead-letters.ndjson')),
      profiles: p.stdout,
    }
  }

  it('tag changes on the output topic equal a replay of the input; bad records land on the dead-letter topic with their coordinates', async () => {
    const records = [...generateWorkload({ seed: 11, users: 400, events: 12_000, days: 20, invalidRatio: 0.01 })]
    const k = setup('e2e')
    await produceMessages(mock.bootstrap, k.input, records.map(toMessage))
    const [expected] = await Promise.all([replay(records), runUntilCaughtUp(k)])

    // An independent consumer reads the output topic: every change of the replay, once, keyed by user.
    const messages = await readTopic(mock.bootstrap, k.output)
    for (const m of messages) expect(m.key?.toString()).toBe((JSON.parse(String(m.value)) as TagChange).userId)
    const got = messages.map((m) => stable(JSON.parse(String(m.value)) as TagChange))
    expect(expected.changes.length).toBeGreaterThan(1500)
    expect(got.sort()).toEqual(expected.changes.map(stable).sort())
    expect(expected.changes.filter((c) => c.tag === 'rfm_segment' && c.cause.kind === 'rescore').length).toBeGreaterThan(100)

    // The state equals the replay's, user by user.
    const profiles = await runCli(['profile', '--all', '--config', k.configPath])
    expect(profiles.stdout).toBe(expected.profiles)

    // Dead letters: the same records with the same reasons; each one's headers point at the record on the input topic.
    const dead = await readTopic(mock.bootstrap, k.dead)
    expect(expected.dead.length).toBeGreaterThan(60)
    expect(dead.map((m) => `${header(m, DeadLetterHeaders.REASON)} ${m.value?.toString('base64') ?? ''}`).sort()).toEqual(
      expected.dead.map((d) => `${d.reason.code} ${d.raw}`).sort(),
    )
    const inputMessages = await readTopic(mock.bootstrap, k.input)
    const byCoordinates = new Map(inputMessages.map((m) => [`${m.partition}:${m.offset}`, m.value ?? Buffer.alloc(0)]))
    let truncated = 0
    for (const m of dead) {
      expect(header(m, DeadLetterHeaders.SOURCE)).toBe(k.input)
      const at = `${header(m, DeadLetterHeaders.PARTITION)}:${header(m, DeadLetterHeaders.OFFSET)}`
      const original = byCoordinates.get(at) as Buffer
      const value = m.value ?? Buffer.alloc(0)
      // An oversized record is dead-lettered with its head (limits.maxRecordBytes + 1 bytes).
      if (header(m, DeadLetterHeaders.TRUNCATED) === 'true') {
        truncated++
        expect(value.length).toBe(65_537)
        expect(original.subarray(0, value.length).equals(value), at).toBe(true)
      } else {
        expect(original.equals(value), at).toBe(true)
      }
    }
    expect(truncated).toBeGreaterThan(0)
  }, 90_000)

  it('a restart after a clean shutdown resumes exactly where it stopped: nothing re-applied, nothing skipped', async () => {
    const records = [...generateWorkload({ seed: 12, users: 300, events: 10_000, days: 20, invalidRatio: 0.005 })]
    const k = setup('restart')
    await produceMessages(mock.bootstrap, k.input, records.slice(0, 6000).map(toMessage))
    const replayed = replay(records)
    await runUntilCaughtUp(k)
    const afterFirst = (await readTopic(mock.bootstrap, k.output)).length
    expect(afterFirst).toBeGreaterThan(500)

    // Produced while the engine was down: the second run starts from the offsets in its store.
    await produceMessages(mock.bootstrap, k.input, records.slice(6000).map(toMessage))
    await runUntilCaughtUp(k)

    const expected = await replayed
    const got = (await readTopic(mock.bootstrap, k.output)).map((m) => JSON.parse(String(m.value)) as TagChange)
    // Exactly the replay's changes: a re-applied record would repeat ids, a skipped one lose them.
    expect(got.length).toBe(expected.changes.length)
    expect(new Set(got.map((c) => c.id)).size).toBe(got.length)
    expect(got.map(stable).sort()).toEqual(expected.changes.map(stable).sort())
    const profiles = await runCli(['profile', '--all', '--config', k.configPath])
    expect(profiles.stdout).toBe(expected.profiles)
  }, 90_000)

  it('refuses to start when the topic has more partitions than engine.partitions', async () => {
    const k = setup('too-many')
    await produceMessages(mock.bootstrap, k.input, [{ key: 'u1', value: Buffer.from('{}') }])
    const { configPath } = writeConfig({
      sources: [{ name: 'events', type: 'kafka', brokers: mock.bootstrap, groupId: k.groupId, topics: [{ topic: k.input }] }],
      engine: { partitions: 2 },
    })
    const r = await runCli(['run', '--config', configPath])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`topic ${k.input} has 4 partitions but engine.partitions is 2`)
    const last = JSON.parse(r.stderr.trim().split('\n').pop() as string) as { error: { code: string; issues: { key: string }[] } }
    expect(last.error.code).toBe('TS_ERR_CONFIG_INVALID')
    expect(last.error.issues[0]?.key).toBe('engine.partitions')

    // Nor beside another source: users hashed by the file source could land in another process's partitions.
    const mixed = writeConfig({
      sources: [
        { name: 'events', type: 'kafka', brokers: mock.bootstrap, groupId: k.groupId, topics: [{ topic: k.input }] },
        { name: 'file', type: 'file', path: '/dev/null' },
      ],
    })
    const m = await runCli(['run', '--config', mixed.configPath])
    expect(m.code).toBe(2)
    expect(m.stderr).toContain('a kafka source must be the only source')
  }, 30_000)

  it('never starts a partition with state missing records: history gone -> TS_ERR_SOURCE_FAILED, unless allowMissingHistory', async () => {
    const k = setup('history')
    // 7 MiB of incompressible records under one key: the mock drops the oldest past 5 MiB, as retention would.
    const { randomBytes } = await import('node:crypto')
    await produceMessages(mock.bootstrap, k.input, Array.from({ length: 70 }, () => ({ key: 'u1', value: randomBytes(100_000) })))
    const refused = await runCli(['run', '--config', k.configPath])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(new RegExp(`${k.input}\\[\\d\\] must start at offset 0 but its oldest retained record is [1-9]`))
    expect(refused.stderr).toContain('"code":"TS_ERR_SOURCE_FAILED"')

    // Told to accept the gap, it starts at the oldest retained record and reads to the end. (With
    // RFM ranked across the partitions, the default scope, it warns at start that such tags are not replay-stable.)
    const { configPath } = writeConfig({
      sources: [{ name: 'events', type: 'kafka', brokers: mock.bootstrap, groupId: k.groupId, topics: [{ topic: k.input }], sessionTimeoutMs: 3000, heartbeatIntervalMs: 300, allowMissingHistory: true }],
      engine: { partitions: 4, commitIntervalMs: 100 },
      operators: RANKED_PER_PARTITION.operators,
    })
    const run = startCli(['run', '--config', configPath])
    try {
      await waitForGroupOffsets(mock.bootstrap, k.groupId, k.input, await endOffsets(mock.bootstrap, k.input), 30_000)
    } finally {
      run.child.kill('SIGTERM')
    }
    const r = await run.done
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/skips offsets 0\.\.\d+ \(no longer retained; allowMissingHistory\)/)
    expect(r.stderr).toContain('Set engine.populationScope: partition for replay-stable tags')
  }, 60_000)
})
