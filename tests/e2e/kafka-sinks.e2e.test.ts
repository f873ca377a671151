import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { readNdjson, runCli, writeConfig } from '../support/cli.js'
import { readTopic } from '../support/kafka-mock.js'
import { mockClusterForTests } from '../support/kafka-mock-suite.js'

describe('replay into Kafka (librdkafka mock cluster)', () => {
  const mock = mockClusterForTests()

  it('puts every tag change on the topic, keyed by user, and every bad record on the dead-letter topic', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-kafka-'))
    const input = join(dir, 'events.ndjson')
    writeFileSync(input, Buffer.concat([...generateWorkload({ seed: 3, users: 300, events: 6000, days: 20, invalidRatio: 0.01 })].map(encodeNdjsonLine)))
    const suffix = Date.now().toString(36)
    const kafka = writeConfig({
      sinks: {
        tagChanges: [{ type: 'kafka', brokers: mock.bootstrap, topic: `tag-changes-${suffix}` }],
        deadLetter: { type: 'kafka', brokers: mock.bootstrap, topic: `dead-letters-${suffix}` },
      },
    })
    const files = writeConfig()
    const [rk, rf] = await Promise.all([runCli(['replay', input, '--config', kafka.configPath]), runCli(['replay', input, '--config', files.configPath])])
    expect(rk.code, rk.stderr).toBe(0)
    expect(rf.code, rf.stderr).toBe(0)

    const expected = readNdjson<TagChange>(join(files.dataDir, 'tag-changes.ndjson'))
    const messages = await readTopic(mock.bootstrap, `tag-changes-${suffix}`)
    const got = messages.map((m) => ({ key: m.key?.toString(), change: JSON.parse(String(m.value)) as TagChange }))
    for (const g of got) expect(g.key).toBe(g.change.userId)
    const strip = (c: TagChange) => JSON.stringify({ ...c, emittedAt: '' })
    expect(got.map((g) => strip(g.change)).sort()).toEqual(expected.map(strip).sort())

    const expectedDead = readNdjson<{ raw: string; reason: { code: string } }>(join(files.dataDir, 'dead-letters.ndjson'))
    const dead = await readTopic(mock.bootstrap, `dead-letters-${suffix}`)
    expect(expectedDead.length).toBeGreaterThan(20)
    const reasonOf = (m: (typeof dead)[number]) => {
      for (const h of m.headers ?? []) if ('tagstream-reason' in h) return String(h['tagstream-reason'])
      return undefined
    }
    expect(dead.map((m) => `${reasonOf(m)} ${m.value?.toString('base64') ?? ''}`).sort()).toEqual(expectedDead.map((d) => `${d.reason.code} ${d.raw}`).sort())
  }, 90_000)
})
