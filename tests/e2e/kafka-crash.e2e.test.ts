import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { DeadLetterHeaders } from '../../src/sinks/kafka-sinks.js'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { readNdjson, runCli, startCli, writeConfig } from '../support/cli.js'
import { endOffsets, groupOffsets, produceMessages, readTopic, waitForGroupOffsets } from '../support/kafka-mock.js'
import { mockClusterForTests } from '../support/kafka-mock-suite.js'

const EVENTS = 60_000
const KILLS = 3

/** A tag change without its wall-clock field: what a regenerated change must equal. */
function stable(c: TagChange): string {
  const { emittedAt: _, ...rest } = c
  return JSON.stringify(rest)
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + Math.max(0, b), 0)

describe('Kafka source crash safety (SIGKILL, librdkafka mock cluster)', () => {
  const mock = mockClusterForTests()

  it(`killed ${KILLS} times mid-stream, the engine ends with the state of an uninterrupted run and every expected tag change on the topic`, async () => {
    const records = [...generateWorkload({ seed: 2025, users: 6000, events: EVENTS, days: 60, invalidRatio: 0.001 })]
    const suffix = `crash-${Date.now().toString(36)}`
    const input = `events-${suffix}`
    const output = `changes-${suffix}`
    const dead = `dead-${suffix}`
    const groupId = `tagstream-${suffix}`
    await produceMessages(
      mock.bootstrap,
      input,
      records.map((r) => (r.kind === 'event' ? { key: r.event.userId, value: Buffer.from(JSON.stringify(r.event)) } : { key: null, value: r.bytes })),
    )
    const end = await endOffsets(mock.bootstrap, input)
    expect(sum(end)).toBe(EVENTS)

    // The uninterrupted reference: a replay of the same records from a file.
    const dir = mkdtempSync(join(tmpdir(), 'ts-kcrash-'))
    const file = join(dir, 'events.ndjson')
    writeFileSync(file, Buffer.concat(records.map(encodeNdjsonLine)))
    const reference = writeConfig({ engine: { partitions: 4 } }, dir)
    const referenceRun = runCli(['replay', file, '--config', reference.configPath])

    const crashed = writeConfig({
      sources: [{ name: 'events', type: 'kafka', brokers: mock.bootstrap, groupId, topics: [{ topic: input }], sessionTimeoutMs: 3000, heartbeatIntervalMs: 300 }],
      sinks: {
        tagChanges: [{ type: 'kafka', brokers: mock.bootstrap, topic: output }],
        deadLetter: { type: 'kafka', brokers: mock.bootstrap, topic: dead },
      },
      // Small batches and commits: many commit boundaries for the kills to fall around.
      engine: { partitions: 4, batchSize: 1024, commitEvents: 4000, commitIntervalMs: 100 },
      time: { idleAdvanceMs: 0 },
    })

    const t0 = Date.now()
    let seed = 777
    const random = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
    const killedAt: number[] = []
    while (killedAt.length < KILLS) {
      // Kill k falls after about (k + 1) / (KILLS + 2) of the stream is committed, then a random
      // moment later: in a batch, a sink flush or a store commit.
      const target = Math.floor((EVENTS * (killedAt.length + 1)) / (KILLS + 2))
      const { child, done } = startCli(['run', '--config', crashed.configPath])
      const waitStart = Date.now()
      while (sum(await groupOffsets(mock.bootstrap, groupId, input)) < target && child.exitCode === null && Date.now() - waitStart < 30_000) await sleep(50)
      await sleep(random() * 200)
      child.kill('SIGKILL')
      const res = await done
      expect(res.signal, res.stderr).toBe('SIGKILL')
      killedAt.push(sum(await groupOffsets(mock.bootstrap, groupId, input)))
    }
    console.log(`kafka crash: ${((Date.now() - t0) / 1000).toFixed(1)} s; killed at ${killedAt.join(", ")} of ${EVENTS} committed records`)
    // The kills fell mid-stream, at different points.
    expect(new Set(killedAt).size).toBe(KILLS)
    expect(killedAt.filter((n) => n < EVENTS).length).toBe(KILLS)

    // The last run catches up and stops cleanly.
    const last = startCli(['run', '--config', crashed.configPath])
    try {
      await waitForGroupOffsets(mock.bootstrap, groupId, input, end, 60_000)
    } finally {
      last.child.kill('SIGTERM')
    }
    const lastRes = await last.done
    expect(lastRes.code, lastRes.stderr).toBe(0)
    const ref = await referenceRun
    expect(ref.code, ref.stderr).toBe(0)

    // 1. The stored state equals the uninterrupted run's, user by user.
    const [pa, pb] = await Promise.all([
      runCli(['profile', '--all', '--config', reference.configPath]),
      runCli(['profile', '--all', '--config', crashed.configPath]),
    ])
    const refProfiles = pa.stdout.trim().split('\n')
    expect(refProfiles.length).toBeGreaterThan(3000)
    expect(pb.stdout.trim().split('\n')).toEqual(refProfiles)

    // 2. Every tag change of the uninterrupted run is on the topic; duplicates are the same change regenerated.
    const refChanges = readNdjson<TagChange>(join(reference.dataDir, 'tag-changes.ndjson'))
    const got = (await readTopic(mock.bootstrap, output)).map((m) => JSON.parse(String(m.value)) as TagChange)
    const gotById = new Map<string, string>()
    let duplicates = 0
    for (const c of got) {
      const previous = gotById.get(c.id)
      if (previous !== undefined) {
        duplicates++
        expect(stable(c)).toBe(previous)
      }
      gotById.set(c.id, stable(c))
    }
    expect(gotById.size).toBe(refChanges.length)
    for (const c of refChanges) expect(gotById.get(c.id)).toBe(stable(c))
    // Duplicates come only from what was produced after the last commit before each kill.
    expect(duplicates).toBeLessThan(refChanges.length / 2)

    // 3. Dead letters: the same records, each at least once.
    const refDead = new Set(readNdjson<{ raw: string; reason: { code: string } }>(join(reference.dataDir, 'dead-letters.ndjson')).map((d) => `${d.reason.code} ${d.raw}`))
    const gotDead = new Set(
      (await readTopic(mock.bootstrap, dead)).map((m) => {
        const reason = (m.headers ?? []).find((h) => DeadLetterHeaders.REASON in h)?.[DeadLetterHeaders.REASON]
        return `${String(reason)} ${m.value?.toString('base64') ?? ''}`
      }),
    )
    expect(refDead.size).toBeGreaterThan(20)
    expect([...gotDead].sort()).toEqual([...refDead].sort())
  }, 180_000)
})
