/**
 * HTTP load figures: requests/s and p99 latency of `GET /v1/users/:userId` and of
 * `POST /v1/events` (JSON batches of 500 events), on loopback, while the engine ingests.
 *
 *   npx tsx bench/http-load.ts      # 3 runs of 10 s per scenario, median; writes bench/results/http-load.json (OUT=)
 *   DURATION=5 RUNS=1 npx tsx bench/http-load.ts    # quicker look
 *   ENGINE_BATCH=512 OUT=/tmp/http-load-512.json npx tsx bench/http-load.ts   # smaller engine batches
 *
 * Method. The engine runs as its own process (`tagstream run` from the sources, through tsx),
 * configured like `config/tagstream.yaml` (every built-in operator, 4 partitions, tag changes
 * to an fsynced NDJSON file, commits every second), on a store seeded by a replay of
 * `users` users' history, with a generator source offering `generatorEventsPerSecond` live
 * events for the whole session: the engine ingests while it answers. autocannon runs in this
 * process, so load generation and the engine do not share an event loop (they do share the
 * machine's cores). Profile reads pick a seeded user at random per request. Ingest requests
 * each carry 500 fresh events (unique ids, live timestamps, random seeded users) and answer once
 * the events are queued (202); a full queue answers 429, counted apart. Ingest is measured twice:
 * as fast as the connections go (the engine falls behind, the queue fills, 429s show the
 * backpressure), and at a fixed offered rate it keeps up with (`ingestRequestsPerSecond`). Each
 * scenario runs `runs` times after a warm-up; the report gives every run and the median of each
 * figure, with the engine's own read rate from `/metrics`.
 *
 * An engine batch (`engine.batchSize` records) is applied without yielding to the event loop, so
 * requests arriving meanwhile wait for it: under heavy ingest, p99 follows the batch time
 * (`ENGINE_BATCH=512` shows the trade: lower p99, lower engine throughput).
 *
 * `measureHttpLoad(options)` is the same measurement for the bench suite.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, cpus, tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { parse, stringify } from 'yaml'
import { writeNdjsonFile } from '../src/workload/generator.js'
import { metricValue } from './lib/metrics-text.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')

export interface HttpLoadOptions {
  /** Seconds per measured run. Default 10. */
  readonly durationSeconds?: number
  /** Measured runs per scenario (the median is reported). Default 3. */
  readonly runs?: number
  /** Seconds of warm-up before the runs of a scenario (not measured). Default 3. */
  readonly warmupSeconds?: number
  /** Concurrent connections of profile reads. Default 10. */
  readonly readConnections?: number
  /** Concurrent connections of ingest requests. Default 4. */
  readonly ingestConnections?: number
  /** Events per ingest request. Default 500. */
  readonly batchSize?: number
  /**
   * A third scenario: ingest requests at this fixed rate (all connections together), below what
   * the engine keeps up with, so latency is that of a sustained load rather than of a full queue
   * answering 429. 0: skip it. Default 4 (2000 events/s at 500 per request).
   */
  readonly ingestRequestsPerSecond?: number
  /** Users seeded in the store before the runs (and read back at random). Default 10,000. */
  readonly users?: number
  /** Events of seeded history. Default 200,000. */
  readonly seedEvents?: number
  /** Live events per second the generator source offers throughout. Default 2000. */
  readonly generatorEventsPerSecond?: number
  /**
   * The engine's `engine.batchSize` (default 4096, as configured). A batch is applied without
   * yielding to the event loop, so it bounds how long a request can wait behind ingest.
   */
  readonly engineBatchSize?: number
  /** Write the report as JSON there. */
  readonly out?: string
  /** Progress lines on stderr. Default true. */
  readonly verbose?: boolean
}

export interface RunFigures {
  readonly requestsPerSecond: number
  readonly latencyP50Ms: number
  readonly latencyP99Ms: number
  readonly latencyMaxMs: number
  readonly requests2xx: number
  /** Refusals (429 backpressure for ingest) and other non-2xx answers. */
  readonly requestsNon2xx: number
  readonly errors: number
  /** Records the engine read from all sources during the run, per second (from /metrics). */
  readonly engineRecordsPerSecond: number
  /** Ingest only: events accepted per second (2xx requests x batch size / duration). */
  readonly eventsAcceptedPerSecond?: number
}

export interface ScenarioReport {
  readonly name: string
  readonly method: 'GET' | 'POST'
  readonly path: string
  readonly connections: number
  readonly runs: readonly RunFigures[]
  /** Each figure's median over the runs. */
  readonly median: RunFigures
}

export interface HttpLoadReport {
  readonly startedAt: string
  readonly machine: { readonly cpus: number; readonly model: string; readonly loadAverage1m: number; readonly node: string }
  readonly options: Required<Omit<HttpLoadOptions, 'out' | 'verbose'>>
  /** Users in the seeded store (the ones reads and ingested events pick from). */
  readonly usersStored: number
  readonly scenarios: readonly ScenarioReport[]
}

interface Engine {
  readonly child: ChildProcess
  readonly base: string
  readonly stderr: () => string
  stop(): Promise<void>
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** Runs the CLI from the sources (tsx), so the figures are those of the code checked out. */
function cli(args: string[]): ChildProcess {
  // From the repository root, where `--import tsx` resolves; every path in the configs is absolute.
  return spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...args], {
    cwd: ROOT,
    env: { ...process.env, TAGSTREAM_LOG__LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((ok) => (child.exitCode !== null ? ok(child.exitCode) : child.once('close', (code) => ok(code))))
}

/** Replays a generated history into the store; returns the ids of the users it holds. */
async function seedStore(dir: string, configPath: string, options: Required<Omit<HttpLoadOptions, 'out' | 'verbose'>>): Promise<string[]> {
  const history = join(dir, 'history.ndjson')
  const days = 30
  await writeNdjsonFile(history, {
    seed: 11,
    users: options.users,
    events: options.seedEvents,
    days,
    startTs: Date.now() - days * 86_400_000 - 60_000,
    invalidRatio: 0,
  })
  const child = cli(['replay', history, '--config', configPath])
  let err = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d))
  const code = await exited(child)
  if (code !== 0) throw new Error(`seeding replay failed (${code}): ${err}`)
  // Not every simulated customer shows up in the history: read only users that exist.
  const users = new Set<string>()
  for (const line of readFileSync(history, 'utf8').split('\n')) {
    if (line !== '') users.add((JSON.parse(line) as { userId: string }).userId)
  }
  return [...users]
}

async function startEngine(configPath: string): Promise<Engine> {
  const child = cli(['run', '--config', configPath])
  let err = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d))
  child.stdout?.resume()
  const deadline = Date.now() + 60_000
  let base: string | undefined
  while (base === undefined) {
    if (child.exitCode !== null) throw new Error(`engine exited: ${err}`)
    if (Date.now() > deadline) throw new Error(`engine did not start: ${err}`)
    for (const line of err.split('\n')) {
      if (!line.startsWith('{')) continue
      const entry = JSON.parse(line) as { url?: string }
      if (entry.url !== undefined) base = entry.url
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    child,
    base,
    stderr: () => err,
    async stop() {
      child.kill('SIGTERM')
      await exited(child)
    },
  }
}

async function metric(base: string, name: string): Promise<number> {
  return metricValue(await (await fetch(`${base}/metrics`)).text(), name)
}

const recordsIn = (base: string) => metric(base, 'tagstream_events_received_total')

/** Waits until the engine has read everything HTTP queued (a scenario must not pay for the last one's backlog). */
async function drained(base: string, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while ((await metric(base, 'tagstream_http_ingest_queued_records')) > 0) {
    if (Date.now() > deadline) throw new Error('the ingest queue did not drain')
    await new Promise((r) => setTimeout(r, 250))
  }
}

type CannonOptions = Parameters<typeof autocannon>[0]

async function cannon(options: CannonOptions): Promise<autocannon.Result> {
  return new Promise((ok, fail) => {
    autocannon(options, (err, result) => (err ? fail(err) : ok(result)))
  })
}

async function measure(base: string, options: CannonOptions, batchSize: number | undefined): Promise<RunFigures> {
  const before = await recordsIn(base)
  const t0 = performance.now()
  const r = await cannon(options)
  const seconds = (performance.now() - t0) / 1000
  const after = await recordsIn(base)
  return {
    requestsPerSecond: r.requests.average,
    latencyP50Ms: r.latency.p50,
    latencyP99Ms: r.latency.p99,
    latencyMaxMs: r.latency.max,
    requests2xx: r['2xx'],
    requestsNon2xx: r.non2xx,
    errors: r.errors,
    engineRecordsPerSecond: Math.round((after - before) / seconds),
    ...(batchSize !== undefined ? { eventsAcceptedPerSecond: Math.round((r['2xx'] * batchSize) / r.duration) } : {}),
  }
}

function medianFigures(runs: readonly RunFigures[]): RunFigures {
  const keys = Object.keys(runs[0] as RunFigures) as (keyof RunFigures)[]
  return Object.fromEntries(keys.map((k) => [k, median(runs.map((r) => r[k] as number))])) as unknown as RunFigures
}

/** Seeds a store, starts the engine, and measures profile reads and batch ingest under load. */
export async function measureHttpLoad(options: HttpLoadOptions = {}): Promise<HttpLoadReport> {
  const o = {
    durationSeconds: options.durationSeconds ?? 10,
    runs: options.runs ?? 3,
    warmupSeconds: options.warmupSeconds ?? 5,
    readConnections: options.readConnections ?? 10,
    ingestConnections: options.ingestConnections ?? 4,
    batchSize: options.batchSize ?? 500,
    ingestRequestsPerSecond: options.ingestRequestsPerSecond ?? 4,
    users: options.users ?? 10_000,
    seedEvents: options.seedEvents ?? 200_000,
    generatorEventsPerSecond: options.generatorEventsPerSecond ?? 2000,
    engineBatchSize: options.engineBatchSize ?? 4096,
  }
  const log = options.verbose === false ? () => undefined : (msg: string) => process.stderr.write(`http-load: ${msg}\n`)
  const dir = mkdtempSync(join(tmpdir(), 'ts-http-load-'))
  const base = parse(readFileSync(join(ROOT, 'config/tagstream.yaml'), 'utf8')) as Record<string, unknown>
  const config = {
    ...base,
    dataDir: join(dir, 'data'),
    engine: { ...(base.engine as object), batchSize: o.engineBatchSize },
    sinks: { tagChanges: [{ type: 'ndjson-file' }], deadLetter: { type: 'ndjson-file' } },
    http: { enabled: true, host: '127.0.0.1', port: 0 },
  }
  const seedConfig = join(dir, 'seed.yaml')
  writeFileSync(seedConfig, stringify({ ...config, sources: [], http: { enabled: false } }))
  const runConfig = join(dir, 'run.yaml')
  writeFileSync(
    runConfig,
    stringify({
      ...config,
      sources: [
        {
          name: 'live',
          type: 'generator',
          users: o.users,
          eventsPerSecond: o.generatorEventsPerSecond,
          timeScale: 1,
          invalidRatio: 0,
          seed: 99,
          startAt: new Date().toISOString(),
        },
      ],
    }),
  )
  const startedAt = new Date().toISOString()
  let engine: Engine | undefined
  try {
    log(`seeding a store: ${o.seedEvents} events of up to ${o.users} users over 30 days`)
    const seeded = await seedStore(dir, seedConfig, o)
    const randomUser = (): string => seeded[Math.floor(Math.random() * seeded.length)] as string
    engine = await startEngine(runConfig)
    log(`${seeded.length} users stored; engine on ${engine.base}, generator offering ${o.generatorEventsPerSecond} events/s`)
    const scenarios: ScenarioReport[] = []

    const readOptions = (duration: number): CannonOptions => ({
      url: engine!.base,
      connections: o.readConnections,
      duration,
      requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/v1/users/${randomUser()}` }) }],
    })
    let eventSeq = 0
    const batch = (): string => {
      const now = Date.now()
      const events = new Array<unknown>(o.batchSize)
      for (let i = 0; i < o.batchSize; i++) {
        const user = randomUser()
        const purchase = i % 10 === 0
        events[i] = {
          eventId: `load-${eventSeq++}`,
          userId: user,
          type: purchase ? 'purchase' : 'view',
          ts: now,
          properties: purchase ? { amount: 20 + (i % 80), category: 'electronics' } : { productId: `p${i % 500}` },
        }
      }
      return JSON.stringify(events)
    }
    const ingestOptions = (duration: number, overallRate?: number): CannonOptions => ({
      url: engine!.base,
      connections: o.ingestConnections,
      duration,
      ...(overallRate !== undefined ? { overallRate } : {}),
      requests: [{ method: 'POST', path: '/v1/events', headers: { 'content-type': 'application/json' }, setupRequest: (req) => ({ ...req, body: batch() }) }],
    })

    // The fixed-rate ingest runs before the saturating one, and each scenario starts on an empty queue.
    for (const s of [
      { name: 'profile read', method: 'GET' as const, path: '/v1/users/:userId', connections: o.readConnections, make: readOptions, batchSize: undefined },
      ...(o.ingestRequestsPerSecond > 0
        ? [
            {
              name: `ingest, batches of ${o.batchSize}, ${o.ingestRequestsPerSecond} req/s offered`,
              method: 'POST' as const,
              path: '/v1/events',
              connections: o.ingestConnections,
              make: (d: number) => ingestOptions(d, o.ingestRequestsPerSecond),
              batchSize: o.batchSize,
            },
          ]
        : []),
      { name: `ingest, batches of ${o.batchSize}`, method: 'POST' as const, path: '/v1/events', connections: o.ingestConnections, make: (d: number) => ingestOptions(d), batchSize: o.batchSize },
    ]) {
      await drained(engine.base)
      log(`${s.name}: warm-up ${o.warmupSeconds} s`)
      await cannon(s.make(o.warmupSeconds))
      const runs: RunFigures[] = []
      for (let i = 1; i <= o.runs; i++) {
        await drained(engine.base)
        const figures = await measure(engine.base, s.make(o.durationSeconds), s.batchSize)
        log(`${s.name}: run ${i}/${o.runs}: ${figures.requestsPerSecond.toFixed(0)} req/s, p99 ${figures.latencyP99Ms} ms`)
        runs.push(figures)
      }
      scenarios.push({ name: s.name, method: s.method, path: s.path, connections: s.connections, runs, median: medianFigures(runs) })
    }
    const report: HttpLoadReport = {
      startedAt,
      machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', loadAverage1m: loadavg()[0] as number, node: process.version },
      options: o,
      usersStored: seeded.length,
      scenarios,
    }
    if (options.out !== undefined) {
      mkdirSync(dirname(options.out), { recursive: true })
      writeFileSync(options.out, JSON.stringify(report, null, 2) + '\n')
    }
    return report
  } finally {
    await engine?.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export function formatReport(report: HttpLoadReport): string {
  const rows = [
    ['scenario', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'non-2xx', 'errors', 'events/s in', 'engine rec/s'],
    ...report.scenarios.map((s) => [
      `${s.method} ${s.path} (${s.name})`,
      String(s.connections),
      s.median.requestsPerSecond.toFixed(0),
      String(s.median.latencyP50Ms),
      String(s.median.latencyP99Ms),
      String(s.median.latencyMaxMs),
      String(s.median.requestsNon2xx),
      String(s.median.errors),
      s.median.eventsAcceptedPerSecond === undefined ? '-' : String(s.median.eventsAcceptedPerSecond),
      String(s.median.engineRecordsPerSecond),
    ]),
  ]
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] as string).length)))
  const lines = rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  '))
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '))
  const m = report.machine
  return [
    `median of ${report.options.runs} runs x ${report.options.durationSeconds} s per scenario; ${report.usersStored} users stored; generator offering ${report.options.generatorEventsPerSecond} events/s throughout; engine.batchSize ${report.options.engineBatchSize}`,
    `${m.cpus} x ${m.model}, load average ${m.loadAverage1m.toFixed(2)}, node ${m.node}`,
    ...lines,
  ].join('\n')
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('bench/http-load.ts')) {
  const env = process.env
  const report = await measureHttpLoad({
    ...(env.DURATION ? { durationSeconds: Number(env.DURATION) } : {}),
    ...(env.RUNS ? { runs: Number(env.RUNS) } : {}),
    ...(env.USERS ? { users: Number(env.USERS) } : {}),
    ...(env.RATE ? { generatorEventsPerSecond: Number(env.RATE) } : {}),
    ...(env.SEED_EVENTS ? { seedEvents: Number(env.SEED_EVENTS) } : {}),
    ...(env.WARMUP ? { warmupSeconds: Number(env.WARMUP) } : {}),
    ...(env.ENGINE_BATCH ? { engineBatchSize: Number(env.ENGINE_BATCH) } : {}),
    ...(env.INGEST_RATE ? { ingestRequestsPerSecond: Number(env.INGEST_RATE) } : {}),
    out: env.OUT ?? join(ROOT, 'bench/results/http-load.json'),
  })
  process.stdout.write(formatReport(report) + '\n')
}
