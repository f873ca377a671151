/**
 * Scale-out on librdkafka's mock cluster: the same input consumed by 1 and by 2 `tagstream run`
 * processes in one consumer group ("when one process is not enough, more join the group").
 *
 *   npx tsx bench/kafka-scaling.ts                   # 100,000 events, members 1 and 2, 3 rounds
 *   EVENTS=60000 MEMBERS=1,2 REPEATS=3 npx tsx bench/kafka-scaling.ts
 *
 * One measurement, per member count: fresh input, output topics and group; the members start and
 * each waits until the group has settled (every member owns partitions/members partitions, read
 * from its lag metric); then the input is produced (lz4), and the clock runs from the first
 * record produced until the group's committed offsets (written after each store commit) reach
 * the end of every partition. Member counts alternate round by round, so drift on a shared
 * machine hits them alike. Aggregate events/s and the ratio to one member are printed.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { generateWorkload } from '../src/workload/generator.js'
import { startCli, writeConfig } from '../tests/support/cli.js'
import { ENGINE_ENV } from './lib/processes.js'
import { endOffsets, produceMessages, waitForGroupOffsets } from '../tests/support/kafka-mock.js'
import { freePort, median, operatorConfig, withCluster, type OperatorSet } from './kafka-pipeline.js'

const PARTITIONS = 4

export interface ScalingOptions {
  readonly events?: number
  readonly users?: number
  readonly members?: readonly number[]
  readonly repeats?: number
  readonly operators?: OperatorSet
  readonly bootstrap?: string
  readonly log?: (line: string) => void
}

export interface ScalingResult {
  readonly events: number
  /** Member count -> aggregate events/s of each round. */
  readonly eventsPerSecond: ReadonlyMap<number, readonly number[]>
}

async function ownedPartitions(port: number): Promise<number> {
  const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => '')
  return text.split('\n').filter((l) => l.startsWith('tagstream_consumer_lag_records{')).length
}

async function oneRound(bootstrap: string, members: number, events: number, users: number, operators: OperatorSet, round: number): Promise<number> {
  const suffix = `${members}m-${round}-${Date.now().toString(36)}`
  const input = `scale-events-${suffix}`
  const output = `scale-changes-${suffix}`
  const groupId = `scale-${suffix}`
  // The mock creates a topic on its first record: a malformed one (dead-lettered), then the rest later.
  await produceMessages(bootstrap, input, [{ key: null, value: Buffer.from('{}') }])
  const procs: { port: number; run: ReturnType<typeof startCli> }[] = []
  for (let i = 0; i < members; i++) {
    const port = await freePort()
    const { configPath } = writeConfig(
      {
        ...operatorConfig(operators),
        engine: { partitions: PARTITIONS, commitIntervalMs: 200 },
        time: { idleAdvanceMs: 0 },
        sources: [{ name: 'events', type: 'kafka', brokers: bootstrap, groupId, topics: [{ topic: input }], sessionTimeoutMs: 3000, heartbeatIntervalMs: 300 }],
        sinks: { tagChanges: [{ type: 'kafka', brokers: bootstrap, topic: output }], deadLetter: { type: 'ndjson-file' } },
        http: { enabled: true, port },
      },
      mkdtempSync(join(tmpdir(), `ts-scale-${i}-`)),
    )
    procs.push({ port, run: startCli(['run', '--config', configPath], { env: ENGINE_ENV }) })
  }
  try {
    const settleBy = Date.now() + 60_000
    for (;;) {
      for (const p of procs) if (p.run.child.exitCode !== null) throw new Error(`member exited early: ${(await p.run.done).stderr.slice(-2000)}`)
      const owned = await Promise.all(procs.map((p) => ownedPartitions(p.port)))
      if (owned.every((n) => n === PARTITIONS / members)) break
      if (Date.now() > settleBy) throw new Error(`group did not settle: partitions per member ${JSON.stringify(owned)}`)
      await new Promise((r) => setTimeout(r, 200))
    }
    const records = [...generateWorkload({ seed: 7, users, events, days: 30, invalidRatio: 0.001 })]
    const t0 = performance.now()
    await produceMessages(
      bootstrap,
      input,
      records.map((r) => (r.kind === 'event' ? { key: r.event.userId, value: Buffer.from(JSON.stringify(r.event)) } : { key: null, value: r.bytes })),
    )
    const end = await endOffsets(bootstrap, input, PARTITIONS)
    await waitForGroupOffsets(bootstrap, groupId, input, end, 600_000)
    return events / ((performance.now() - t0) / 1000)
  } finally {
    for (const p of procs) p.run.child.kill('SIGTERM')
    await Promise.all(procs.map((p) => p.run.done))
  }
}

export async function measureKafkaScaling(options: ScalingOptions = {}): Promise<ScalingResult> {
  const events = options.events ?? 100_000
  const users = options.users ?? 20_000
  const memberCounts = options.members ?? [1, 2]
  for (const m of memberCounts) if (PARTITIONS % m !== 0) throw new Error(`members must divide ${PARTITIONS} partitions, got ${m}`)
  const log = options.log ?? (() => undefined)
  return withCluster(options.bootstrap, async (bootstrap) => {
    const rates = new Map<number, number[]>(memberCounts.map((m) => [m, []]))
    for (let round = 0; round < (options.repeats ?? 3); round++) {
      for (const members of memberCounts) {
        const rate = await oneRound(bootstrap, members, events, users, options.operators ?? 'default', round)
        rates.get(members)?.push(rate)
        log(`round ${round + 1}: ${members} member(s): ${Math.round(rate)} events/s`)
      }
    }
    return { events, eventsPerSecond: rates }
  })
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const members = (process.env.MEMBERS ?? '1,2').split(',').map(Number)
  const result = await measureKafkaScaling({
    events: Number(process.env.EVENTS ?? 100_000),
    members,
    repeats: Number(process.env.REPEATS ?? 3),
    operators: (process.env.OPERATORS ?? 'default') as OperatorSet,
    log: (line) => console.log(line),
  })
  const one = median(result.eventsPerSecond.get(members[0] as number) ?? [])
  for (const [m, rates] of result.eventsPerSecond) {
    console.log(`${m} member(s): median ${Math.round(median(rates))} events/s over ${rates.length} rounds (${(median(rates) / one).toFixed(2)}x ${members[0]} member(s))`)
  }
}
