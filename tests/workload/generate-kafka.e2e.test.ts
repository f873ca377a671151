import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { unpack } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { partitionFor } from '../../src/engine/partitioner.js'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { runCli } from '../support/cli.js'
import { readTopic } from '../support/kafka-mock.js'
import { mockClusterForTests } from '../support/kafka-mock-suite.js'

const WORKLOAD = ['--events', '5000', '--users', '300', '--days', '20', '--seed', '7', '--invalid-ratio', '0.01']

describe('tagstream generate --brokers --topic (librdkafka mock cluster)', () => {
  const mock = mockClusterForTests()

  it('produces the same records as the NDJSON file, a message each, keyed by userId into the partition the engine routes the user to', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'ts-genk-')), 'events.ndjson')
    const written = await runCli(['generate', '--out', file, ...WORKLOAD])
    expect(written.code, written.stderr).toBe(0)
    const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1)
    expect(lines).toHaveLength(5000)

    const topic = `generated-${Date.now().toString(36)}`
    const produced = await runCli(['generate', '--brokers', mock.bootstrap, '--topic', topic, ...WORKLOAD])
    expect(produced.code, produced.stderr).toBe(0)
    const summary = JSON.parse(produced.stdout) as Record<string, unknown>
    const fileSummary = JSON.parse(written.stdout) as Record<string, number>
    expect(summary).toMatchObject({ topic, messages: 5000, events: fileSummary.events, invalid: fileSummary.invalid, duplicates: fileSummary.duplicates })
    expect(fileSummary.invalid).toBeGreaterThan(20)

    const messages = await readTopic(mock.bootstrap, topic, 4)
    expect(messages).toHaveLength(5000)
    // Per user, the file's order; malformed records (no key) are the file's, in any partition.
    const byUser = new Map<string, string[]>()
    const unkeyed: string[] = []
    for (const m of [...messages].sort((a, b) => a.partition - b.partition || a.offset - b.offset)) {
      const value = (m.value as Buffer).toString('utf8')
      if (m.key === null || m.key === undefined) {
        unkeyed.push(value)
        continue
      }
      const userId = m.key.toString()
      expect(m.partition).toBe(partitionFor(userId, 4))
      byUser.set(userId, [...(byUser.get(userId) ?? []), value])
    }
    // The generator's records, in the file's order (the CLI's default ratios): which lines are events.
    const records = [...generateWorkload({ seed: 7, users: 300, events: 5000, days: 20, invalidRatio: 0.01, duplicateRatio: 0.01, lateRatio: 0.01 })]
    expect(records.map((r) => encodeNdjsonLine(r).toString('utf8'))).toEqual(lines.map((l) => `${l}\n`))
    const expectedByUser = new Map<string, string[]>()
    const expectedUnkeyed: string[] = []
    records.forEach((r, i) => {
      const line = lines[i] as string
      if (r.kind === 'event') expectedByUser.set(r.event.userId, [...(expectedByUser.get(r.event.userId) ?? []), line])
      else expectedUnkeyed.push(line)
    })
    expect(unkeyed.length).toBe(fileSummary.invalid)
    expect([...unkeyed].sort()).toEqual([...expectedUnkeyed].sort())
    expect(new Map([...byUser].sort())).toEqual(new Map([...expectedByUser].sort()))
  })

  it('produces msgpack values with --format msgpack', async () => {
    const topic = `generated-mp-${Date.now().toString(36)}`
    const produced = await runCli(['generate', '--brokers', mock.bootstrap, '--topic', topic, '--format', 'msgpack', '--events', '500', '--users', '50', '--seed', '3'])
    expect(produced.code, produced.stderr).toBe(0)
    const messages = await readTopic(mock.bootstrap, topic, 4)
    expect(messages).toHaveLength(500)
    for (const m of messages) {
      const event = unpack(m.value as Buffer) as { userId: string; eventId: string }
      expect(m.key?.toString()).toBe(event.userId)
      expect(typeof event.eventId).toBe('string')
    }
  })

  it('refuses a Kafka target without a topic, or with a file too, as a usage error', async () => {
    const noTopic = await runCli(['generate', '--brokers', mock.bootstrap, '--events', '10'])
    expect(noTopic.code).toBe(2)
    expect(noTopic.stderr).toContain('TS_ERR_USAGE')
    const both = await runCli(['generate', '--brokers', mock.bootstrap, '--topic', 't', '--out', '/tmp/x.ndjson'])
    expect(both.code).toBe(2)
    expect(both.stderr).toContain('not both')
    const badX = await runCli(['generate', '--brokers', mock.bootstrap, '--topic', 't', '-X', 'novalue'])
    expect(badX.code).toBe(2)
    expect(badX.stderr).toContain('-X takes key=value')
  })
})
