import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../src/config/load.js'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { partitionFor } from '../../src/engine/partitioner.js'
import { openRuntime, type Runtime } from '../../src/runtime.js'
import { encodeNdjsonLine, generateWorkload, type GeneratedRecord } from '../../src/workload/generator.js'
import { FOUNDATION_OPERATORS, assertBuilt, readNdjson, runCli, writeConfig } from '../support/cli.js'
import { endOffsets, produceMessages, readTopic, startKafkaMock, waitForGroupOffsets, type KafkaMock } from '../support/kafka-mock.js'

const toMessage = (r: GeneratedRecord) =>
  r.kind === 'event' ? { key: r.event.userId, value: Buffer.from(JSON.stringify(r.event)) } : { key: null, value: r.bytes }

/** Profile lines of a store, keyed by user id. */
async function storedProfiles(configPath: string): Promise<Map<string, string>> {
  const r = await runCli(['profile', '--all', '--config', configPath])
  expect(r.code, r.stderr).toBe(0)
  const lines = r.stdout.trim().split('\n').filter((l) => l !== '')
  return new Map(lines.map((l) => [(JSON.parse(l) as { userId: string }).userId, l]))
}

describe('Kafka source rebalance between two processes (librdkafka mock cluster)', () => {
  let mock: KafkaMock
  const runtimes: Runtime[] = []
  beforeAll(async () => {
    assertBuilt()
    mock = await startKafkaMock()
  })
  afterAll(async () => {
    await Promise.allSettled(runtimes.map(async (r) => {
      await r.stop()
      await r.close()
    }))
    await mock?.stop()
  })

  // RFM ranked within each partition: what a partition's users are tagged with cannot depend on
  // which member owned the other partitions, so two members together equal one replay.
  const RANKED = [...FOUNDATION_OPERATORS, { name: 'rfm', type: 'rfm' }]

  it('a second member takes half of the partitions: the first commits and forgets them, the second rebuilds them from the topic', async () => {
    const records = [...generateWorkload({ seed: 21, users: 400, events: 8000, days: 20, invalidRatio: 0.002 })]
    const suffix = `rebalance-${Date.now().toString(36)}`
    const input = `events-${suffix}`
    const output = `changes-${suffix}`
    const groupId = `tagstream-${suffix}`
    const member = (name: string) => {
      const dir = mkdtempSync(join(tmpdir(), `ts-${name}-`))
      const raw = {
        dataDir: join(dir, 'data'),
        timeZone: 'UTC',
        operators: RANKED,
        engine: { partitions: 4, commitIntervalMs: 100, populationScope: 'partition' },
        time: { idleAdvanceMs: 0 },
        sources: [{ name: 'events', type: 'kafka', brokers: mock.bootstrap, groupId, topics: [{ topic: input }], sessionTimeoutMs: 3000, heartbeatIntervalMs: 300 }],
        sinks: { tagChanges: [{ type: 'kafka', brokers: mock.bootstrap, topic: output }] },
        http: { enabled: true, port: 0 },
      }
      const result = validateConfig(raw)
      if (result.config === undefined) throw new Error(JSON.stringify(result.issues))
      return { config: result.config, configPath: writeConfig(raw, dir).configPath }
    }

    // The reference: one replay of everything.
    const dir = mkdtempSync(join(tmpdir(), 'ts-rebalance-ref-'))
    const file = join(dir, 'events.ndjson')
    writeFileSync(file, Buffer.concat(records.map(encodeNdjsonLine)))
    const reference = writeConfig({ engine: { partitions: 4, populationScope: 'partition' }, operators: RANKED }, dir)
    const referenceRun = runCli(['replay', file, '--config', reference.configPath])

    // Member A alone reads the first half.
    await produceMessages(mock.bootstrap, input, records.slice(0, 4000).map(toMessage))
    const a = member('a')
    const ra = await openRuntime(a.config, { live: true })
    runtimes.push(ra)
    expect(ra.engine.ready).toBe(false) // not before its partitions are assigned and started
    const runA = ra.engine.run({ untilEnd: false })
    await waitForGroupOffsets(mock.bootstrap, groupId, input, await endOffsets(mock.bootstrap, input), 30_000)
    expect(ra.engine.ready).toBe(true)
    expect([...ra.engine.watermarks().keys()].sort()).toEqual([0, 1, 2, 3])
    // Lag per owned partition, read from the client's high watermarks.
    const metrics = await (ra.registry as NonNullable<Runtime['registry']>).getSingleMetricAsString('tagstream_consumer_lag_records')
    for (let p = 0; p < 4; p++) expect(metrics).toContain(`tagstream_consumer_lag_records{topic="${input}",partition="${p}"} 0`)

    // Member B joins; the rest of the events arrive during the rebalance.
    const b = member('b')
    const rb = await openRuntime(b.config, { live: true })
    runtimes.push(rb)
    // Records B's last commit holds: its partitions' offsets (B starts them from 0). Not
    // stats.recordsIn, which counts a batch when it is read, possibly before it is applied.
    let committedByB = 0
    rb.engine.onCommitted((_positions, offsets) => {
      if (offsets === undefined) return
      let held = 0
      for (const byTopic of offsets.values()) held += byTopic.get(input) ?? 0
      committedByB = held
    })
    const runB = rb.engine.run({ untilEnd: false })
    await produceMessages(mock.bootstrap, input, records.slice(4000).map(toMessage))
    const end = await endOffsets(mock.bootstrap, input)
    // Generous: inside the full suite the group join and the rebuild share two cores with other files.
    await waitForGroupOffsets(mock.bootstrap, groupId, input, end, 90_000)
    const deadline = Date.now() + 20_000
    while (!(ra.engine.ready && rb.engine.ready && ra.engine.watermarks().size + rb.engine.watermarks().size === 4) && Date.now() < deadline) await sleep(50)
    const ownedByA = new Set(ra.engine.watermarks().keys())
    const ownedByB = new Set(rb.engine.watermarks().keys())
    expect(ownedByA.size).toBe(2)
    expect(ownedByB.size).toBe(2)
    expect([...ownedByA, ...ownedByB].sort()).toEqual([0, 1, 2, 3])
    // A resumes its partitions from its stored offsets, and its assignment commits them to the
    // group even when it has nothing new to read (a commit sent while the group rebalanced is
    // refused); B rebuilds its partitions from offset 0 (its assignment commits 0 to the group), so
    // it has caught up once it has read and committed every record they hold.
    await waitForGroupOffsets(mock.bootstrap, groupId, input, end.map((o, p) => (ownedByA.has(p) ? o : 0)), 30_000)
    const inB = [...ownedByB].reduce((n, p) => n + (end[p] as number), 0)
    const caughtUp = Date.now() + 30_000
    while (committedByB < inB && Date.now() < caughtUp) await sleep(50)
    expect(committedByB).toBe(inB)

    // A has forgotten the users of the partitions it handed over; B serves them.
    const movedUser = records.find((r) => r.kind === 'event' && ownedByB.has(partitionFor(r.event.userId, 4)))
    if (movedUser?.kind !== 'event') throw new Error('no user in a moved partition')
    expect(await ra.engine.profile(movedUser.event.userId)).toBeUndefined()
    expect(await rb.engine.profile(movedUser.event.userId)).toBeDefined()

    await Promise.all([ra.stop(), rb.stop()])
    await Promise.all([runA, runB])
    await Promise.all([ra.close(), rb.close()])
    runtimes.length = 0
    expect((await referenceRun).code).toBe(0)

    // Each partition's state, in the store of the member that owns it, equals the replay's.
    const [pa, pb, pref] = await Promise.all([storedProfiles(a.configPath), storedProfiles(b.configPath), storedProfiles(reference.configPath)])
    const merged = new Map<string, string>()
    for (const [user, line] of pa) if (ownedByA.has(partitionFor(user, 4))) merged.set(user, line)
    for (const [user, line] of pb) if (ownedByB.has(partitionFor(user, 4))) merged.set(user, line)
    expect(pref.size).toBeGreaterThan(300)
    expect([...merged].sort()).toEqual([...pref].sort())

    // Every tag change of the replay is on the output topic; B's rebuild re-emits some with the same ids and content.
    const expected = readNdjson<TagChange>(join(reference.dataDir, 'tag-changes.ndjson'))
    const strip = (c: TagChange) => JSON.stringify({ ...c, emittedAt: '' })
    const got = new Map<string, string>()
    for (const m of await readTopic(mock.bootstrap, output)) {
      const c = JSON.parse(String(m.value)) as TagChange
      const before = got.get(c.id)
      if (before !== undefined) expect(strip(c)).toBe(before)
      got.set(c.id, strip(c))
    }
    expect(got.size).toBe(expected.length)
    for (const c of expected) expect(got.get(c.id)).toBe(strip(c))
    expect(expected.filter((c) => c.tag === 'rfm_segment' && c.cause.kind === 'rescore').length).toBeGreaterThan(100)
  }, 180_000)
})
