/**
 * Kafka pipeline throughput and latency on librdkafka's mock cluster (tests/support/kafka-mock.ts).
 *
 *   npx tsx bench/kafka-pipeline.ts                 # throughput, median of 3, then latency
 *   EVENTS=100000 REPEATS=3 npx tsx bench/kafka-pipeline.ts
 *   LATENCY=0 npx tsx bench/kafka-pipeline.ts       # throughput only
 *   OPERATORS=light npx tsx bench/kafka-pipeline.ts # fact + two counters instead of the default six
 *   POPULATION_SCOPE=partition npx tsx bench/kafka-pipeline.ts  # RFM ranked within each partition
 *   THROUGHPUT=0 RATE=5000 npx tsx bench/kafka-pipeline.ts  # latency only, at another offered rate
 *   THROUGHPUT=0 PIPE=bare npx tsx bench/kafka-pipeline.ts  # latency through the bare pipe (the limit)
 *
 * measureKafkaPipeline: in one run, against the same input topic,
 *   - bare: the same client (`KafkaConsumer.consume(n)`, the source's settings) assigned to every
 *     partition from offset 0, JSON.parse of every value, until every record is read;
 *   - pipeline: the engine (config/tagstream.yaml's operators) from its first assignment until the
 *     commit that holds the last record: state committed in the store (fsync), tag changes
 *     acknowledged on the output topic (idempotent producer, acks=all).
 * Both clocks start when the partitions are assigned (the group join is not counted). The input is
 * produced once with lz4 and stays under the mock's 5 MiB per partition; each pipeline run writes a
 * fresh output topic, checked afterwards for dropped data (low watermark 0).
 *
 * measureKafkaLatency: the engine as its own process (`tagstream run`), events produced at a steady
 * offered rate with live event times, tag changes read by an independent consumer; latency = time
 * the change was consumed - time its causing event was produced, both in this process, recorded in
 * an HDR histogram (microseconds).
 */
import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import Kafka from '@confluentinc/kafka-javascript'
import type { KafkaConsumer, LibrdKafkaError, Message } from '@confluentinc/kafka-javascript'
import * as hdr from 'hdr-histogram-js'
import { parse } from 'yaml'
import { validateConfig } from '../src/config/load.js'
import type { Config } from '../src/config/schema.js'
import type { PopulationScope } from '../src/engine/population.js'
import { openRuntime } from '../src/runtime.js'
import { createLiveWorkload, encodeNdjsonLine, generateWorkload } from '../src/workload/generator.js'
import { FOUNDATION_OPERATORS, REPO_ROOT, startCli, writeConfig, type CliResult } from '../tests/support/cli.js'
import { metricValue } from './lib/metrics-text.js'
import { ENGINE_ENV, startNode } from './lib/processes.js'
import { endOffsets, produceMessages, startKafkaMock, type KafkaMock } from '../tests/support/kafka-mock.js'

const PARTITIONS = 4
const CONSUME_BATCH = 4096
const EMPTY = Buffer.alloc(0)

export interface KafkaPipelineOptions {
  /** Records on the input topic (default 100,000: ~1.2 MB per partition after lz4). */
  readonly events?: number
  readonly users?: number
  /** Runs of each side; the figures are medians (default 3). */
  readonly repeats?: number
  /** An existing cluster; default: a mock cluster started (and stopped) here. */
  readonly bootstrap?: string
  /**
   * `default`: config/tagstream.yaml's six operators (RFM with daily re-scoring sweeps, lifecycle
   * timers, ...); `light`: fact + two counters (the e2e tests' set), where the Kafka path weighs more.
   */
  readonly operators?: OperatorSet
  /** `engine.populationScope` of the pipeline and file runs (default: the config's default, `process`). */
  readonly populationScope?: PopulationScope
  /**
   * Profiles each pipeline run (the engine runs in this process) from its start to the commit that
   * holds every record, with V8's sampling profiler, into `<profileDir>/CPU.kafka-pipeline.<time>.<run>.cpuprofile`.
   */
  readonly profileDir?: string
  /**
   * One round of both sides before the measured ones, discarded (default true). Without it the first
   * pipeline run in a process ran at about half the rate of the next two in every quick run, with
   * every cost in its profile 1.6-2x: code not yet optimized, which a running engine is past.
   */
  readonly warmup?: boolean
  readonly log?: (line: string) => void
}

export type OperatorSet = 'default' | 'light'

export interface KafkaPipelineResult {
  readonly operators: OperatorSet
  readonly events: number
  readonly bareEventsPerSecond: readonly number[]
  readonly pipelineEventsPerSecond: readonly number[]
  /** The same engine and events from an NDJSON file (`replay`): what the engine does without Kafka. */
  readonly fileEventsPerSecond: readonly number[]
  readonly medianFile: number
  /** Tag changes on the output topic, by measured run: equal when the engine's output is deterministic. */
  readonly tagChangesPerRun: readonly number[]
  readonly medianBare: number
  readonly medianPipeline: number
  /** Pipeline over bare, medians. */
  readonly ratio: number
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

export async function withCluster<T>(bootstrap: string | undefined, fn: (bootstrap: string) => Promise<T>): Promise<T> {
  let mock: KafkaMock | undefined
  if (bootstrap === undefined) mock = await startKafkaMock()
  try {
    return await fn(bootstrap ?? (mock as KafkaMock).bootstrap)
  } finally {
    await mock?.stop()
  }
}

/** What the pipeline and file runs of one measurement configure. */
interface EngineChoice {
  readonly operators: OperatorSet
  readonly populationScope: PopulationScope
}

/** The operators and time zone of the default configuration, or the light set. */
export function operatorConfig(set: OperatorSet = 'default'): Pick<Config, 'operators' | 'timeZone'> {
  if (set === 'light') return { operators: FOUNDATION_OPERATORS as Config['operators'], timeZone: 'UTC' }
  const raw = parse(readFileSync(resolve(REPO_ROOT, 'config/tagstream.yaml'), 'utf8')) as Pick<Config, 'operators' | 'timeZone'>
  return { operators: raw.operators, timeZone: raw.timeZone }
}

function buildConfig(raw: Record<string, unknown>): Config {
  // The engines run in the bench's process: their info lines (sweeps, restores) would bury the bench's own.
  const result = validateConfig({ log: { level: 'warn' }, ...raw })
  if (result.config === undefined) throw new Error(`bench config invalid: ${JSON.stringify(result.issues)}`)
  return result.config
}

/** The bare rate: consume and JSON.parse every record of the topic with the source's client and settings. */
async function bareConsume(bootstrap: string, topic: string, total: number): Promise<number> {
  const consumer: KafkaConsumer = new Kafka.KafkaConsumer({
    'bootstrap.servers': bootstrap,
    'group.id': `bench-bare-${randomUUID()}`,
    'enable.auto.commit': false,
    'enable.partition.eof': false,
  })
  await new Promise<void>((res, rej) => consumer.connect({ timeout: 10_000 }, (err) => (err ? rej(err) : res())))
  try {
    consumer.setDefaultConsumeTimeout(100)
    ;(consumer as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(b: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true)
    const t0 = performance.now()
    consumer.assign(Array.from({ length: PARTITIONS }, (_, partition) => ({ topic, partition, offset: 0 })))
    let n = 0
    let parsed = 0
    while (n < total) {
      const batch = await new Promise<Message[]>((res, rej) => consumer.consume(CONSUME_BATCH, (err: LibrdKafkaError, msgs: Message[]) => (err ? rej(err) : res(msgs))))
      for (const m of batch) {
        n++
        // The input holds a few malformed records on purpose (as the engine's input does).
        try {
          const v = JSON.parse((m.value ?? EMPTY).toString('utf8')) as { userId?: unknown } | null
          if (v !== null && typeof v === 'object' && v.userId !== undefined) parsed++
        } catch {
          continue
        }
      }
    }
    const seconds = (performance.now() - t0) / 1000
    if (parsed === 0) throw new Error('bare consumer parsed nothing')
    return total / seconds
  } finally {
    await new Promise<void>((res) => consumer.disconnect(() => res()))
  }
}

/** V8's sampling profiler on this thread, through the inspector: what `--cpu-prof` writes, for one stretch of a run. */
async function startCpuProfile(): Promise<(path: string) => Promise<void>> {
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  // --cpu-prof's interval, so the two kinds of profile compare.
  await session.post('Profiler.setSamplingInterval', { interval: 1000 })
  await session.post('Profiler.start')
  return async (path) => {
    const { profile } = await session.post('Profiler.stop')
    writeFileSync(path, JSON.stringify(profile))
    session.disconnect()
  }
}

/** The engine in this process: from its first assignment until the commit that holds the last record. */
async function pipelineRun(
  bootstrap: string,
  input: string,
  total: number,
  run: number,
  choice: EngineChoice,
  profileDir?: string,
): Promise<{ eventsPerSecond: number; tagChanges: number; commits: number; sweepStepMs: number }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ts-bench-kafka-'))
  const output = `bench-changes-${run}-${Date.now().toString(36)}`
  const config = buildConfig({
    dataDir,
    ...operatorConfig(choice.operators),
    engine: { partitions: PARTITIONS, populationScope: choice.populationScope },
    time: { idleAdvanceMs: 0 },
    sources: [{ name: 'events', type: 'kafka', brokers: bootstrap, groupId: `bench-${run}-${randomUUID()}`, topics: [{ topic: input }], sessionTimeoutMs: 6000 }],
    sinks: { tagChanges: [{ type: 'kafka', brokers: bootstrap, topic: output }], deadLetter: { type: 'ndjson-file' } },
  })
  const runtime = await openRuntime(config, { live: true })
  const { engine } = runtime
  let t0 = 0
  let t1 = 0
  // The first commit whose offsets cover every record: stats.recordsIn counts a batch when it is
  // read, and a commit can land while that batch waits for its users' records (about a batch of
  // events unapplied, and the rate overstated, in one run of three).
  const committedAll = new Promise<void>((res) => {
    engine.onCommitted((_positions, partitionOffsets) => {
      if (t1 !== 0 || partitionOffsets === undefined) return
      let committed = 0
      for (const byTopic of partitionOffsets.values()) committed += byTopic.get(input) ?? 0
      if (committed >= total) {
        t1 = performance.now()
        res()
      }
    })
  })
  // The profile covers what the clock covers: from the assignment (the group join left out) to the end.
  let profiling: Promise<(path: string) => Promise<void>> | undefined
  const ready = setInterval(() => {
    if (t0 === 0 && engine.ready) {
      t0 = performance.now()
      if (profileDir !== undefined) profiling = startCpuProfile()
    }
  }, 1)
  const running = engine.run({ untilEnd: false })
  await committedAll
  clearInterval(ready)
  const stopProfile = await profiling
  await stopProfile?.(join(profileDir as string, `CPU.kafka-pipeline.${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '')}.${run + 1}.cpuprofile`))
  const { tagChanges, commits, sweepStepMs } = engine.stats
  // Every record the commit holds was applied, skipped as a duplicate, or rejected, before it was written.
  const handled = engine.stats.eventsApplied + engine.stats.duplicates + Object.values(engine.stats.invalid).reduce((a, b) => a + b, 0)
  await runtime.stop()
  await running
  await runtime.close()
  if (engine.stats.recordsIn !== total) throw new Error(`pipeline read ${engine.stats.recordsIn} records, expected ${total}`)
  if (handled !== total) throw new Error(`the commit holding every offset came with ${handled} records handled, expected ${total}`)
  // The mock drops the oldest data of a partition past 5 MiB: a figure over lost output is void.
  const consumer: KafkaConsumer = new Kafka.KafkaConsumer({ 'bootstrap.servers': bootstrap, 'group.id': `bench-probe-${randomUUID()}` })
  await new Promise<void>((res, rej) => consumer.connect({ timeout: 10_000 }, (err) => (err ? rej(err) : res())))
  for (let p = 0; p < PARTITIONS; p++) {
    const { lowOffset } = await new Promise<{ lowOffset: number }>((res, rej) => consumer.queryWatermarkOffsets(output, p, 5000, (err, o) => (err ? rej(err) : res(o))))
    if (lowOffset !== 0) throw new Error(`output partition ${p} lost data in the mock (low watermark ${lowOffset}): lower EVENTS`)
  }
  await new Promise<void>((res) => consumer.disconnect(() => res()))
  return { eventsPerSecond: total / ((t1 - t0) / 1000), tagChanges, commits, sweepStepMs }
}

/** The same engine over the same records from an NDJSON file, in this process: open to the final commit. */
async function fileRun(file: string, total: number, choice: EngineChoice): Promise<number> {
  const dataDir = mkdtempSync(join(tmpdir(), 'ts-bench-file-'))
  const config = buildConfig({ dataDir, ...operatorConfig(choice.operators), engine: { partitions: PARTITIONS, populationScope: choice.populationScope }, sinks: { tagChanges: [{ type: 'ndjson-file' }] } })
  const runtime = await openRuntime(config, { live: false, replayFiles: [file] })
  const t0 = performance.now()
  await runtime.engine.run({ untilEnd: true })
  const seconds = (performance.now() - t0) / 1000
  const read = runtime.engine.stats.recordsIn
  await runtime.close()
  if (read !== total) throw new Error(`file run read ${read} records, expected ${total}`)
  return total / seconds
}

export async function measureKafkaPipeline(options: KafkaPipelineOptions = {}): Promise<KafkaPipelineResult> {
  const events = options.events ?? 100_000
  const users = options.users ?? 20_000
  const repeats = options.repeats ?? 3
  const log = options.log ?? (() => undefined)
  return withCluster(options.bootstrap, async (bootstrap) => {
    const input = `bench-events-${Date.now().toString(36)}`
    const records = [...generateWorkload({ seed: 7, users, events, days: 30, invalidRatio: 0.001 })]
    await produceMessages(
      bootstrap,
      input,
      records.map((r) => (r.kind === 'event' ? { key: r.event.userId, value: Buffer.from(JSON.stringify(r.event)) } : { key: null, value: r.bytes })),
    )
    const end = await endOffsets(bootstrap, input, PARTITIONS)
    if (end.reduce((a, b) => a + b, 0) !== events) throw new Error(`input topic holds ${end.join('+')} records, expected ${events}`)
    const file = join(mkdtempSync(join(tmpdir(), 'ts-bench-input-')), 'events.ndjson')
    writeFileSync(file, Buffer.concat(records.map(encodeNdjsonLine)))
    const bare: number[] = []
    const pipeline: number[] = []
    const fromFile: number[] = []
    const tagChanges: number[] = []
    const engine: EngineChoice = { operators: options.operators ?? 'default', populationScope: options.populationScope ?? 'process' }
    if (options.warmup ?? true) {
      const warmBare = await bareConsume(bootstrap, input, events)
      const warmPipeline = await pipelineRun(bootstrap, input, events, -1, engine)
      log(`warm-up, not measured: bare ${Math.round(warmBare)} events/s, pipeline ${Math.round(warmPipeline.eventsPerSecond)} events/s (${warmPipeline.commits} commits)`)
    }
    for (let i = 0; i < repeats; i++) {
      bare.push(await bareConsume(bootstrap, input, events))
      const p = await pipelineRun(bootstrap, input, events, i, engine, options.profileDir)
      pipeline.push(p.eventsPerSecond)
      tagChanges.push(p.tagChanges)
      fromFile.push(await fileRun(file, events, engine))
      log(
        `run ${i + 1}/${repeats}: bare ${Math.round(bare[i] as number)} events/s, pipeline ${Math.round(p.eventsPerSecond)} events/s ` +
          `(${p.tagChanges} tag changes, ${p.commits} commits, ${Math.round(p.sweepStepMs)} ms in sweep steps), same engine from a file ${Math.round(fromFile[i] as number)} events/s`,
      )
    }
    const medianBare = median(bare)
    const medianPipeline = median(pipeline)
    return { operators: options.operators ?? 'default', events, bareEventsPerSecond: bare, pipelineEventsPerSecond: pipeline, fileEventsPerSecond: fromFile, medianFile: median(fromFile), tagChangesPerRun: tagChanges, medianBare, medianPipeline, ratio: medianPipeline / medianBare }
  })
}

// ---------------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------------

/** One steady offered rate: `warmupSeconds` of traffic, then `seconds` measured. */
export interface LatencyPhase {
  readonly eventsPerSecond: number
  readonly seconds: number
  readonly warmupSeconds: number
}

export interface KafkaLatencyOptions {
  /** Offered rate, events per second (default 20,000). */
  readonly eventsPerSecond?: number
  /** Measured seconds, after `warmupSeconds` (defaults 10 and 3). */
  readonly seconds?: number
  readonly warmupSeconds?: number
  /**
   * Several rates in turn through one engine process (one group join), each drained before the
   * next starts; replaces the three fields above.
   */
  readonly phases?: readonly LatencyPhase[]
  readonly users?: number
  readonly bootstrap?: string
  readonly operators?: OperatorSet
  /**
   * What sits between the two topics: the engine (`tagstream run`, default), or the bare pipe
   * (bench/bare/kafka-pipe.ts: consume, produce a message per event, nothing else), the limit.
   */
  readonly pipe?: 'engine' | 'bare'
  readonly log?: (line: string) => void
}

export interface KafkaLatencyResult {
  readonly offeredEventsPerSecond: number
  readonly producedEventsPerSecond: number
  /** Events produced in the measured window. */
  readonly measuredEvents: number
  /** Tag changes caused by an event produced in the measured window, matched to it. */
  readonly samples: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly p999Ms: number
  readonly maxMs: number
  /** From the window's end until the pipe had read every record and no change came for DRAIN_QUIET_MS. */
  readonly drainMs: number
  /**
   * The engine's event-loop delay over the measured window (prom-client's monitorEventLoopDelay,
   * 10 ms resolution, reset by the scrape at the window's start): its longest stall, and p99.
   */
  readonly engineLoopDelayMaxMs: number
  readonly engineLoopDelayP99Ms: number
}

/** Records the engine has applied, skipped as duplicates or rejected, from its metrics. */
function recordsHandled(metrics: string): number {
  return ['tagstream_events_applied_total', 'tagstream_events_duplicate_total', 'tagstream_events_invalid_total'].reduce((n, name) => n + (metricValue(metrics, name) || 0), 0)
}

/** bench/bare/kafka-pipe as a child process: built JS beside this module, or TS under tsx. */
function startBarePipe(bootstrap: string, input: string, output: string, group: string, fetchWaitMs: number): ReturnType<typeof startNode> {
  const fromSource = import.meta.url.endsWith('.ts')
  const script = fileURLToPath(new URL(`./bare/kafka-pipe.${fromSource ? 'ts' : 'js'}`, import.meta.url))
  return startNode([...(fromSource ? ['--import', 'tsx'] : []), script, bootstrap, input, output, group, String(fetchWaitMs)])
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const server = createServer()
    server.once('error', rej)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port
      server.close(() => res(port))
    })
  })
}

/**
 * A window's changes have all arrived once the pipe has handled every record produced and no
 * change came for this long (the changes of the last records are with the Kafka producer by then).
 */
const DRAIN_QUIET_MS = 1000
/** A pipe still behind after this long is broken, not slow: the measurement fails. */
const DRAIN_LIMIT_MS = 60_000

/** The latency of one offered rate (see `measureKafkaLatencyPhases`). */
export async function measureKafkaLatency(options: KafkaLatencyOptions = {}): Promise<KafkaLatencyResult> {
  return (await measureKafkaLatencyPhases(options))[0] as KafkaLatencyResult
}

/**
 * Starts the pipe (the engine or the bare pipe) on fresh topics, then for each phase: produces at
 * its rate, measures the changes caused by the events of its window, and waits until every one of
 * them could have arrived: the pipe has handled every record produced (the engine's applied,
 * duplicate and rejected counters; the bare pipe produces one message per event) and no change
 * came for DRAIN_QUIET_MS. Records read are not enough: a batch is counted as received when read,
 * before it waits for its users' records and is applied. A window whose changes never arrive fails
 * the measurement rather than report the latency of none.
 */
export async function measureKafkaLatencyPhases(options: KafkaLatencyOptions = {}): Promise<KafkaLatencyResult[]> {
  const phases: readonly LatencyPhase[] = options.phases ?? [
    { eventsPerSecond: options.eventsPerSecond ?? 20_000, seconds: options.seconds ?? 10, warmupSeconds: options.warmupSeconds ?? 3 },
  ]
  const log = options.log ?? (() => undefined)
  return withCluster(options.bootstrap, async (bootstrap) => {
    const suffix = Date.now().toString(36)
    const input = `lat-events-${suffix}`
    const output = `lat-changes-${suffix}`
    // The mock creates a topic on first use: one record (dead-lettered) creates the input topic.
    await produceMessages(bootstrap, input, [{ key: null, value: Buffer.from('{}') }])
    const port = await freePort()
    const pipe = options.pipe ?? 'engine'
    const fetchWaitMs = Number(process.env.FETCH_WAIT_MS ?? 5)
    const { configPath } = writeConfig({
      ...operatorConfig(options.operators),
      // As the README configures a Kafka source (and scenario 2 measures it).
      engine: { partitions: PARTITIONS, commitIntervalMs: 1000, populationScope: 'partition' },
      sources: [
        {
          name: 'events',
          type: 'kafka',
          brokers: bootstrap,
          groupId: `lat-${suffix}`,
          topics: [{ topic: input }],
          sessionTimeoutMs: 6000,
          // The mock answers a fetch only when fetch.wait.max.ms (default 500) expires if no data was
          // there when it came in; a real broker answers as soon as data arrives.
          librdkafka: { 'fetch.wait.max.ms': fetchWaitMs },
        },
      ],
      sinks: { tagChanges: [{ type: 'kafka', brokers: bootstrap, topic: output }], deadLetter: { type: 'ndjson-file' } },
      http: { enabled: true, port },
    })
    const engine: { child: ChildProcess; done: Promise<Pick<CliResult, 'code' | 'stderr'>>; stdout?: () => string } =
      pipe === 'engine' ? startCli(['run', '--config', configPath], { env: ENGINE_ENV }) : startBarePipe(bootstrap, input, output, `lat-bare-${suffix}`, fetchWaitMs)
    const stopEngine = async (): Promise<void> => {
      engine.child.kill('SIGTERM')
      const r = await engine.done
      if (r.code !== 0) throw new Error(`${pipe} exited ${r.code}: ${r.stderr}`)
    }
    /** The engine's metrics (a scrape resets its event-loop delay histogram); none from the bare pipe. */
    const scrape = (): Promise<string> => (pipe === 'engine' ? fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()) : Promise.resolve(''))
    let producer: InstanceType<typeof Kafka.Producer> | undefined
    let consumer: KafkaConsumer | undefined
    let reading = true
    let reader: Promise<void> | undefined
    try {
      // Ready: partitions assigned and started at their offsets.
      const startedAt = performance.now()
      const deadline = Date.now() + 60_000
      for (;;) {
        if (engine.child.exitCode !== null) throw new Error(`${pipe} exited early: ${(await engine.done).stderr}`)
        const ok = pipe === 'engine' ? await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false) : (engine.stdout?.() ?? '').includes('ready')
        if (ok) break
        if (Date.now() > deadline) throw new Error(`${pipe} not ready after 60 s`)
        await new Promise((r) => setTimeout(r, 100))
      }
      log(`${pipe} ready after ${Math.round(performance.now() - startedAt)} ms (the mock cluster delays a new group's first join by 3 s, as Kafka does)`)

      const p = new Kafka.Producer({
        'bootstrap.servers': bootstrap,
        'compression.codec': 'lz4',
        'linger.ms': 1,
        partitioner: 'murmur2_random',
        'queue.buffering.max.messages': 1_000_000,
      })
      producer = p
      await new Promise<void>((res, rej) => p.connect({ timeout: 10_000 }, (err) => (err ? rej(err) : res())))
      p.setPollInterval(50)
      const c: KafkaConsumer = new Kafka.KafkaConsumer({ 'bootstrap.servers': bootstrap, 'group.id': `lat-reader-${suffix}`, 'enable.partition.eof': false, 'fetch.wait.max.ms': 5 })
      consumer = c
      await new Promise<void>((res, rej) => c.connect({ timeout: 10_000 }, (err) => (err ? rej(err) : res())))
      c.setDefaultConsumeTimeout(20)
      ;(c as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(b: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true)
      c.assign(Array.from({ length: PARTITIONS }, (_, partition) => ({ topic: output, partition, offset: 0 })))

      /** The phase being measured: its histogram, and the produce time (performance.now(), ms) of each measured event. */
      let current = { producedAt: new Map<string, number>(), histogram: newLatencyHistogram(), samples: 0, measureFrom: 0 }
      /** Messages read from the output topic, and when the last one came. */
      let consumed = 0
      let lastConsumedAt = performance.now()
      /** With ENGINE_METRICS=1: the worst latency of the events produced in each second. */
      const perSecond = process.env.ENGINE_METRICS === '1' ? new Map<number, number>() : undefined
      reader = (async () => {
        while (reading) {
          // An error is logged, not thrown: a reader that stopped would leave every later change unread.
          const batch = await new Promise<Message[]>((res) =>
            c.consume(4096, (err: LibrdKafkaError, msgs: Message[]) => {
              if (err) log(`latency reader: ${err.message}`)
              res(err ? [] : msgs)
            }),
          )
          const now = performance.now()
          if (batch.length > 0) {
            consumed += batch.length
            lastConsumedAt = now
          }
          const phase = current
          for (const m of batch) {
            const change = JSON.parse((m.value as Buffer).toString('utf8')) as { cause: { kind: string; eventId?: string } }
            if (change.cause.kind !== 'event') continue
            const at = phase.producedAt.get(change.cause.eventId as string)
            if (at === undefined) continue
            phase.histogram.recordValue(Math.max(1, Math.round((now - at) * 1000)))
            phase.samples++
            if (perSecond !== undefined) {
              const second = Math.floor((at - phase.measureFrom) / 1000)
              const worst = perSecond.get(second) ?? 0
              if (now - at > worst) perSecond.set(second, now - at)
            }
          }
        }
      })()

      const workload = createLiveWorkload({ seed: 9, users: options.users ?? 20_000, timeScale: 1, invalidRatio: 0 })
      /** Records on the input topic, the one that created it included. */
      let producedTotal = 1
      const results: KafkaLatencyResult[] = []
      for (const phase of phases) {
        current = { producedAt: new Map(), histogram: newLatencyHistogram(), samples: 0, measureFrom: 0 }
        const { producedAt } = current
        const start = performance.now()
        const measureFrom = start + phase.warmupSeconds * 1000
        current.measureFrom = measureFrom
        const stopAt = measureFrom + phase.seconds * 1000
        let produced = 0
        let measuredProduced = 0
        // A scrape resets the engine's event-loop delay histogram: the one at the window's start leaves
        // the start-up (module loading, the group join) and the phase before out of the stall figures.
        let windowScrape: Promise<unknown> | undefined
        // Steady offered rate: every tick, produce what the schedule says is due by now.
        while (performance.now() < stopAt) {
          const now = performance.now()
          const due = Math.floor(((now - start) / 1000) * phase.eventsPerSecond)
          const wall = Date.now()
          for (; produced < due; produced++) {
            const r = workload.next(wall)
            if (r.kind !== 'event') continue
            const e = r.event
            p.produce(input, null, Buffer.from(JSON.stringify(e)), e.userId)
            producedTotal++
            if (now >= measureFrom) {
              windowScrape ??= scrape()
              producedAt.set(e.eventId, performance.now())
              measuredProduced++
            }
          }
          await new Promise((r) => setTimeout(r, 1))
        }
        const windowEnd = await scrape()
        await windowScrape
        const drainFrom = performance.now()
        for (;;) {
          const waited = performance.now() - drainFrom
          const handled = pipe === 'engine' ? recordsHandled(await scrape()) : consumed + 1
          if (waited > DRAIN_LIMIT_MS) {
            throw new Error(`${pipe} at ${phase.eventsPerSecond} ev/s: ${DRAIN_LIMIT_MS / 1000} s after the window, ${handled} of ${producedTotal} records handled (the bare pipe: changes consumed + 1)`)
          }
          if (handled >= producedTotal && performance.now() - lastConsumedAt >= DRAIN_QUIET_MS && waited >= DRAIN_QUIET_MS) break
          await new Promise((r) => setTimeout(r, 100))
        }
        const drainMs = performance.now() - drainFrom
        if (current.samples === 0) throw new Error(`${pipe} at ${phase.eventsPerSecond} ev/s: no tag change of the ${measuredProduced} events of the window arrived`)
        if (perSecond !== undefined && pipe === 'engine') {
          log(`worst latency by second of production: ${JSON.stringify([...perSecond].map(([sec, ms]) => [sec, Math.round(ms)]))}`)
          perSecond.clear()
          const text = await scrape()
          log(text.split('\n').filter((l) => /^(tagstream_(commit|event_processing|end_to_end|consumer_lag)|nodejs_eventloop_lag)/.test(l) && (!l.includes('_bucket') || l.includes('event_processing'))).join('\n'))
        }
        const { histogram } = current
        const ms = (q: number): number => histogram.getValueAtPercentile(q) / 1000
        const result: KafkaLatencyResult = {
          offeredEventsPerSecond: phase.eventsPerSecond,
          producedEventsPerSecond: measuredProduced / phase.seconds,
          measuredEvents: measuredProduced,
          samples: current.samples,
          p50Ms: ms(50),
          p99Ms: ms(99),
          p999Ms: ms(99.9),
          maxMs: histogram.maxValue / 1000,
          drainMs: Math.round(drainMs),
          engineLoopDelayMaxMs: metricValue(windowEnd, 'nodejs_eventloop_lag_max_seconds') * 1000,
          engineLoopDelayP99Ms: metricValue(windowEnd, 'nodejs_eventloop_lag_p99_seconds') * 1000,
        }
        log(`latency through the ${pipe} at ${phase.eventsPerSecond} events/s offered: ${JSON.stringify(result)}`)
        results.push(result)
      }
      return results
    } finally {
      reading = false
      await reader?.catch(() => undefined)
      if (producer !== undefined) {
        const p = producer
        await new Promise<void>((res) => p.disconnect(5000, () => res()))
      }
      if (consumer !== undefined) {
        const c = consumer
        await new Promise<void>((res) => c.disconnect(() => res()))
      }
      await stopEngine()
    }
  })
}

/** Microseconds, 1 µs to 120 s, 3 significant digits. */
function newLatencyHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 })
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const log = (line: string): void => console.log(line)
  const operators = (process.env.OPERATORS ?? 'default') as OperatorSet
  if (process.env.THROUGHPUT !== '0') {
    const result = await measureKafkaPipeline({
      events: Number(process.env.EVENTS ?? 100_000),
      repeats: Number(process.env.REPEATS ?? 3),
      operators,
      ...(process.env.POPULATION_SCOPE === undefined ? {} : { populationScope: process.env.POPULATION_SCOPE as PopulationScope }),
      log,
    })
    console.log(
      `kafka pipeline (${operators} operators): ${result.events} events; bare consume + JSON.parse ${Math.round(result.medianBare)} events/s, ` +
        `pipeline to committed state and output topic ${Math.round(result.medianPipeline)} events/s, same engine from a file ${Math.round(result.medianFile)} events/s ` +
        `(medians of ${result.bareEventsPerSecond.length}); pipeline/bare ${result.ratio.toFixed(3)}, pipeline/file ${(result.medianPipeline / result.medianFile).toFixed(2)}; ` +
        `${result.tagChangesPerRun.join('/')} tag changes by run`,
    )
  }
  if (process.env.LATENCY !== '0') {
    const pipe = process.env.PIPE === 'bare' ? 'bare' : 'engine'
    const latency = await measureKafkaLatency({ eventsPerSecond: Number(process.env.RATE ?? 20_000), operators, pipe, log })
    console.log(
      `kafka latency through the ${pipe} at ${latency.offeredEventsPerSecond} events/s offered (${Math.round(latency.producedEventsPerSecond)} produced): ` +
        `p50 ${latency.p50Ms.toFixed(1)} ms, p99 ${latency.p99Ms.toFixed(1)} ms, p99.9 ${latency.p999Ms.toFixed(1)} ms, max ${latency.maxMs.toFixed(1)} ms over ${latency.samples} tag changes`,
    )
  }
}
