import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricObjectWithValues, type MetricType, type MetricValueWithName } from 'prom-client'
import { REJECT_REASON_LIST } from '../contracts/input-event.js'
import { TagChangeOps, type TagChangeOp } from '../contracts/tag-change.js'
import { OPERATION_NAMES, type OperationName, type OperationOutcome, type OperationsLike } from '../progress.js'

/**
 * Metrics of the engine (DESIGN.md, Interfaces). The engine keeps plain counters on its hot path;
 * everything here reads them in prom-client `collect()` callbacks, at scrape time. Latencies are
 * recorded into plain bucket arrays (`LatencyRecorder`) and exposed as histograms at scrape time
 * too, so no per-event or per-batch path ever calls prom-client.
 */

/** Per tag, the changes by op. The engine can keep one such object per tag slot, built at start. */
export type TagChangeCounts = Readonly<Record<TagChangeOp, number>>

/** The counters of `EngineStats` the metrics read (a structural subset: `Engine['stats']` fits). */
export interface EngineStatsLike {
  readonly recordsIn: number
  readonly eventsApplied: number
  /** Rejected records by reason (validation, too late, operator errors): each one is dead-lettered. */
  readonly invalid: Readonly<Record<string, number>>
  /** Dead letters written, by reason; when absent, every rejection counts as dead-lettered. */
  readonly deadLettered?: Readonly<Record<string, number>>
  readonly duplicates: number
  /** Emitted tag changes. */
  readonly tagChanges: number
  /** Changes of tags in `testing`: evaluated and counted, not emitted. */
  readonly testingChanges: number
  /** Emitted changes by tag id and op, when the engine keeps them (see `TagChangeCounts`). */
  readonly tagChangesByTag?: Readonly<Record<string, TagChangeCounts>>
  readonly timersFired: number
  readonly operatorErrors: number
  readonly commits: number
  readonly lastCommitMs: number
  readonly cacheHits: number
  readonly cacheMisses: number
  readonly usersCreated: number
  readonly sweepsStarted: number
  readonly sweepsCompleted: number
  readonly usersRescored: number
  readonly lastSweepMs: number
  /** Strategy-rule evaluations, and their errors by tag (the user keeps its previous value). */
  readonly ruleEvaluations?: number
  readonly ruleErrorsByTag?: Readonly<Record<string, number>>
  /** Entries kept quiet by a tag's re-entry policy, by tag. */
  readonly reentrySuppressed?: Readonly<Record<string, number>>
  /** Definition passes (publish, retire, testing) started and completed, and the users they re-evaluated. */
  readonly definitionPassesStarted?: number
  readonly definitionPassesCompleted?: number
  readonly usersReevaluated?: number
  /** Projection page builds (rule previews read them), and builds that failed (previews then read every projection). */
  readonly projectionPageBuilds?: number
  readonly projectionPageBuildErrors?: number
}

/** What the metrics need of the engine (a structural subset of `Engine`). */
export interface EngineLike {
  readonly stats: EngineStatsLike
  readonly userCount: number
  readonly cachedUsers: number
  readonly ready: boolean
  /** Watermark (event time, epoch ms) by partition; -Infinity before a partition's first event. */
  watermarks(): ReadonlyMap<number, number>
}

/** What the metrics need of the HTTP ingest source (`HttpIngestSource` fits). */
export interface IngestLike {
  readonly queued: number
  readonly capacity: number
  readonly commitWaiters: number
  readonly stats: {
    readonly acceptedRecords: number
    readonly refusedRecords: number
    readonly invalid: Readonly<Record<string, number>>
  }
}

/** Called by the engine after each commit with its wall duration, ms (`performance.now()` deltas). */
export type CommitObserver = (durationMs: number) => void
/** Called by the engine after each batch: ms from the source handing it over to its last event applied, and its record count. */
export type BatchObserver = (durationMs: number, records: number) => void
/** Event time to tag change, ms (`emittedAt - at`), per change or per group of changes with a count. */
export type LatencyObserver = (ms: number, count?: number) => void

/** The hooks the engine calls; plain arithmetic, safe on the hot path. */
export interface EngineObserver {
  readonly commit: CommitObserver
  readonly batch: BatchObserver
  readonly endToEnd: LatencyObserver
}

/** Histogram bounds, ms: 0.1 ms to 10 s. */
export const LATENCY_BUCKETS_MS: readonly number[] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]

/**
 * A histogram as plain numbers: per-bucket counts (not cumulative; the last slot is +Inf), sum
 * and count. `observe` is a few comparisons and three additions; prom-client reads it at scrape.
 */
export class LatencyRecorder {
  readonly boundsMs: Float64Array
  readonly counts: Float64Array
  sumMs = 0
  count = 0

  constructor(boundsMs: readonly number[] = LATENCY_BUCKETS_MS) {
    for (let i = 1; i < boundsMs.length; i++) {
      if (!((boundsMs[i] as number) > (boundsMs[i - 1] as number))) throw new RangeError('bucket bounds must increase')
    }
    this.boundsMs = Float64Array.from(boundsMs)
    this.counts = new Float64Array(boundsMs.length + 1)
  }

  readonly observe = (ms: number, count = 1): void => {
    // A clock step or an event stamped ahead of the wall clock gives a negative delay: count it as 0.
    const v = ms > 0 ? ms : 0
    const bounds = this.boundsMs
    let i = 0
    while (i < bounds.length && v > (bounds[i] as number)) i++
    this.counts[i] = (this.counts[i] as number) + count
    this.sumMs += v * count
    this.count += count
  }
}

/** The recorders behind the engine's hooks. Create it before the engine, hand it to both. */
export interface RecordingObserver extends EngineObserver {
  readonly commitDuration: LatencyRecorder
  readonly processing: LatencyRecorder
  readonly endToEndLatency: LatencyRecorder
}

export function createEngineObserver(boundsMs: readonly number[] = LATENCY_BUCKETS_MS): RecordingObserver {
  const commitDuration = new LatencyRecorder(boundsMs)
  const processing = new LatencyRecorder(boundsMs)
  const endToEndLatency = new LatencyRecorder(boundsMs)
  return {
    commitDuration,
    processing,
    endToEndLatency,
    commit: (ms) => commitDuration.observe(ms),
    // Every record of a batch waited for the whole batch: weigh the duration by the record count.
    batch: (ms, records) => processing.observe(ms, records),
    endToEnd: endToEndLatency.observe,
  }
}

/** prom-client's typings declare `type` as a numeric enum it does not export; at runtime it is this string. */
const HISTOGRAM = 'histogram' as unknown as MetricType

/**
 * A prom-client histogram whose values come from a `LatencyRecorder` (ms) at scrape time, in
 * seconds. It is registered like any metric; its own `observe` is not used.
 */
class RecordedHistogram extends Histogram<string> {
  private readonly recorder: LatencyRecorder
  private readonly bucketLabels: readonly string[]
  private readonly metricName: string
  private readonly metricHelp: string

  constructor(registry: Registry, name: string, help: string, recorder: LatencyRecorder) {
    const bucketsSeconds = [...recorder.boundsMs].map((ms) => ms / 1000)
    super({ name, help, buckets: bucketsSeconds, registers: [registry] })
    this.recorder = recorder
    this.bucketLabels = bucketsSeconds.map(String)
    this.metricName = name
    this.metricHelp = help
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const r = this.recorder
    const name = this.metricName
    const bucket = `${name}_bucket`
    const values: MetricValueWithName<string>[] = []
    let cumulative = 0
    for (let i = 0; i < this.bucketLabels.length; i++) {
      cumulative += r.counts[i] as number
      values.push({ metricName: bucket, labels: { le: this.bucketLabels[i] as string }, value: cumulative })
    }
    values.push({ metricName: bucket, labels: { le: '+Inf' }, value: r.count })
    values.push({ metricName: `${name}_sum`, labels: {}, value: r.sumMs / 1000 })
    values.push({ metricName: `${name}_count`, labels: {}, value: r.count })
    return { name, help: this.metricHelp, type: HISTOGRAM, values, aggregator: 'sum', collect: () => undefined }
  }

  /** The registry formats through this one when a metric has it: keep it on our values. */
  async getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    return this.get()
  }
}

export interface MetricsOptions {
  /** The engine's hook recorders; created here when absent (then hand `observer` to the engine). */
  readonly observer?: RecordingObserver
  /** The HTTP ingest source, for its queue and refusal metrics. */
  readonly ingest?: IngestLike
  /** Node.js and process metrics (`collectDefaultMetrics`) on the same registry. Default true. */
  readonly defaultMetrics?: boolean
  /** Progress of long operations (replays, restores, sweeps, publications). */
  readonly operations?: OperationsLike
  /** Partitioned sources (Kafka) whose consumer lag is exported per topic and partition. */
  readonly consumerLag?: readonly ConsumerLagSource[]
}

/** What the lag gauge needs of a Kafka source (`KafkaSource` fits). */
export interface ConsumerLagSource {
  /** Records behind the high watermark, for each partition the source reads now. */
  lag(): readonly { readonly topic: string; readonly partition: number; readonly records: number }[]
}

export interface Metrics {
  readonly registry: Registry
  /** The hooks to call from the engine (commit, batch, end-to-end latency). */
  readonly observer: RecordingObserver
}

/**
 * prom-client's default gauges `nodejs_active_{handles,requests,resources}_total` break the
 * convention that only counters end in `_total` (promtool reports them); the same numbers are
 * exposed by type under `nodejs_active_handles` etc., so these three are dropped.
 */
const NONCONFORMING_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']

/**
 * A monotonic counter that follows a plain number: adds the difference since the last scrape.
 * Children are created once, here, and the entry exists (at 0) from the start.
 */
function follower(child: { inc(value: number): void }): (value: number) => void {
  let last = 0
  child.inc(0)
  return (value) => {
    if (value > last) {
      child.inc(value - last)
      last = value
    }
  }
}

/** Registers every metric of the engine (and of the ingest source) on `registry`. */
export function createMetrics(engine: EngineLike, registry: Registry = new Registry(), options: MetricsOptions = {}): Metrics {
  const observer = options.observer ?? createEngineObserver()
  const stats = (): EngineStatsLike => engine.stats
  const registers = [registry]

  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry })
    for (const name of NONCONFORMING_DEFAULT_METRICS) registry.removeSingleMetric(name)
  }

  const counter = (name: string, help: string, read: (s: EngineStatsLike) => number): void => {
    let follow: ((v: number) => void) | undefined
    const c: Counter = new Counter({
      name,
      help,
      registers,
      collect() {
        follow?.(read(stats()))
      },
    })
    follow = follower(c)
  }
  const gauge = (name: string, help: string, read: () => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read())
      },
    })
  }

  // ---------------------------------------------------------------- intake
  counter('tagstream_events_received_total', 'Records read from all sources, valid or not.', (s) => s.recordsIn)
  counter('tagstream_events_applied_total', 'Valid, non-duplicate events applied to user state.', (s) => s.eventsApplied)
  counter('tagstream_events_duplicate_total', 'Events skipped as duplicates (same event id for the same user within the dedup horizon).', (s) => s.duplicates)

  const byReason = (name: string, help: string, read: (s: EngineStatsLike) => Readonly<Record<string, number>>): void => {
    let children: [string, (v: number) => void][] = []
    const c: Counter<'reason'> = new Counter({
      name,
      help,
      labelNames: ['reason'] as const,
      registers,
      collect() {
        const counts = read(stats())
        for (const [reason, follow] of children) follow(counts[reason] ?? 0)
      },
    })
    children = REJECT_REASON_LIST.map((reason) => [reason, follower(c.labels({ reason }))])
  }
  byReason('tagstream_events_invalid_total', 'Records rejected, by reason (validation, too late, operator error).', (s) => s.invalid)
  byReason('tagstream_events_dead_lettered_total', 'Records written to the dead-letter sink, by reason.', (s) => s.deadLettered ?? s.invalid)

  // ---------------------------------------------------------------- output
  counter('tagstream_tag_changes_total', 'Tag changes emitted (entered, left or changed), all tags.', (s) => s.tagChanges)
  counter('tagstream_tag_changes_testing_total', 'Tag changes of tags in testing: evaluated and counted, not emitted.', (s) => s.testingChanges)
  {
    const followers = new Map<string, (v: number) => void>()
    const ops = Object.values(TagChangeOps)
    const c: Counter<'tag' | 'op'> = new Counter({
      name: 'tagstream_tag_changes_by_tag_total',
      help: 'Tag changes emitted, by tag and op (present when the engine keeps per-tag counts).',
      labelNames: ['tag', 'op'] as const,
      registers,
      collect() {
        const byTag = stats().tagChangesByTag
        if (byTag === undefined) return
        for (const tag of Object.keys(byTag)) {
          const counts = byTag[tag] as TagChangeCounts
          for (const op of ops) {
            const key = `${tag}\u0000${op}`
            let follow = followers.get(key)
            if (follow === undefined) {
              follow = follower(c.labels({ tag, op }))
              followers.set(key, follow)
            }
            follow(counts[op])
          }
        }
      },
    })
  }
  /** A counter per tag from a tag -> count record of the stats (tags are bounded by the catalog). */
  const byTagCounter = (name: string, help: string, pick: (s: EngineStatsLike) => Readonly<Record<string, number>> | undefined): void => {
    const followers = new Map<string, (v: number) => void>()
    const c: Counter<'tag'> = new Counter({
      name,
      help,
      labelNames: ['tag'] as const,
      registers,
      collect() {
        const byTag = pick(stats())
        if (byTag === undefined) return
        for (const tag of Object.keys(byTag)) {
          let follow = followers.get(tag)
          if (follow === undefined) {
            follow = follower(c.labels({ tag }))
            followers.set(tag, follow)
          }
          follow(byTag[tag] as number)
        }
      },
    })
  }
  counter('tagstream_rule_evaluations_total', 'Strategy-tag rule evaluations (only for users whose inputs changed, and in sweeps and definition passes).', (s) => s.ruleEvaluations ?? 0)
  byTagCounter('tagstream_rule_evaluation_errors_total', 'Rule evaluations that failed at run time (division by zero, type errors), by tag; the user keeps its previous value.', (s) => s.ruleErrorsByTag)
  byTagCounter('tagstream_reentry_suppressed_total', "Entries kept quiet by the tag's journey re-entry policy (once, cooldown), by tag.", (s) => s.reentrySuppressed)
  counter('tagstream_definition_passes_started_total', 'Re-evaluations of the stored users started by a publish, retire or testing change.', (s) => s.definitionPassesStarted ?? 0)
  counter('tagstream_definition_passes_completed_total', 'Re-evaluations of the stored users completed.', (s) => s.definitionPassesCompleted ?? 0)
  counter('tagstream_definition_users_reevaluated_total', 'Users re-evaluated by definition passes.', (s) => s.usersReevaluated ?? 0)
  counter('tagstream_timers_fired_total', 'Operator timers fired (the watermark passed their due time).', (s) => s.timersFired)
  counter('tagstream_operator_errors_total', 'Operator calls that threw (the event is dead-lettered, the state left as it was).', (s) => s.operatorErrors)

  // ---------------------------------------------------------------- commits and latency
  counter('tagstream_commits_total', 'Commits: sinks flushed, then state, timers and source positions written in one batch.', (s) => s.commits)
  gauge('tagstream_last_commit_duration_seconds', 'Wall duration of the last commit.', () => stats().lastCommitMs / 1000)
  new RecordedHistogram(registry, 'tagstream_commit_duration_seconds', 'Wall duration of commits.', observer.commitDuration)
  new RecordedHistogram(
    registry,
    'tagstream_event_processing_duration_seconds',
    'Per record: from its batch being read from the source to the batch being applied.',
    observer.processing,
  )
  new RecordedHistogram(
    registry,
    'tagstream_end_to_end_latency_seconds',
    'Per tag change caused by an event: wall time the change was produced minus the event time.',
    observer.endToEndLatency,
  )

  // ---------------------------------------------------------------- state and cache
  gauge('tagstream_users', 'Users held in the store, all partitions.', () => engine.userCount)
  counter('tagstream_users_created_total', 'Users seen for the first time.', (s) => s.usersCreated)
  gauge('tagstream_user_cache_entries', 'User states held in the in-memory cache.', () => engine.cachedUsers)
  {
    let hit: ((v: number) => void) | undefined
    let miss: ((v: number) => void) | undefined
    const c: Counter<'result'> = new Counter({
      name: 'tagstream_user_cache_lookups_total',
      help: 'User state lookups, by result: hit (in the cache) or miss (read from the store).',
      labelNames: ['result'] as const,
      registers,
      collect() {
        const s = stats()
        hit?.(s.cacheHits)
        miss?.(s.cacheMisses)
      },
    })
    hit = follower(c.labels({ result: 'hit' }))
    miss = follower(c.labels({ result: 'miss' }))
  }
  gauge('tagstream_user_cache_hit_ratio', 'Cache hits over lookups since start (0 before the first lookup).', () => {
    const { cacheHits, cacheMisses } = stats()
    const lookups = cacheHits + cacheMisses
    return lookups === 0 ? 0 : cacheHits / lookups
  })

  // ---------------------------------------------------------------- time
  {
    const children = new Map<number, { set(v: number): void }>()
    const g: Gauge<'partition'> = new Gauge({
      name: 'tagstream_watermark_timestamp_seconds',
      help: 'Event-time clock of each partition: highest event time seen minus the allowed lateness (absent before its first event).',
      labelNames: ['partition'] as const,
      registers,
      collect() {
        for (const [partition, ms] of engine.watermarks()) {
          if (!Number.isFinite(ms)) continue
          let child = children.get(partition)
          if (child === undefined) {
            child = g.labels({ partition: String(partition) })
            children.set(partition, child)
          }
          child.set(ms / 1000)
        }
      },
    })
  }

  // ---------------------------------------------------------------- re-scoring sweeps
  counter('tagstream_rescore_sweeps_started_total', 'Population re-scoring sweeps started (per partition).', (s) => s.sweepsStarted)
  counter('tagstream_rescore_sweeps_completed_total', 'Population re-scoring sweeps completed (per partition).', (s) => s.sweepsCompleted)
  counter('tagstream_rescore_users_total', 'Users re-scored by sweeps.', (s) => s.usersRescored)
  gauge('tagstream_rescore_last_sweep_duration_seconds', 'Wall duration of the last completed sweep.', () => stats().lastSweepMs / 1000)

  // ---------------------------------------------------------------- rule previews
  counter('tagstream_projection_page_builds_total', 'Builds of a partition\'s projection pages, which rule previews read.', (s) => s.projectionPageBuilds ?? 0)
  counter(
    'tagstream_projection_page_build_errors_total',
    'Projection page builds that failed: previews of the partition read every user\'s projection until a restart.',
    (s) => s.projectionPageBuildErrors ?? 0,
  )

  gauge('tagstream_ready', '1 once the store is open and clocks and positions are restored, 0 before and while stopping.', () => (engine.ready ? 1 : 0))

  if (options.ingest !== undefined) registerIngestMetrics(options.ingest, registry)
  if (options.operations !== undefined) registerOperationMetrics(options.operations, registry)
  if (options.consumerLag !== undefined && options.consumerLag.length > 0) registerConsumerLag(options.consumerLag, registry)
  return { registry, observer }
}

/**
 * Progress of long operations, by operation (a fixed set of names). Ratio, ETA and duration are
 * those of the running run, else of the last one; a series is absent while it is unknown (no run
 * yet, a total or a rate not known yet).
 */
export function registerOperationMetrics(operations: OperationsLike, registry: Registry): void {
  const registers = [registry]
  const perOperation = (name: string, help: string, read: (s: ReturnType<OperationsLike['snapshot']>[number]) => number | undefined): void => {
    new Gauge({
      name,
      help,
      labelNames: ['operation'] as const,
      registers,
      collect() {
        this.reset()
        for (const s of operations.snapshot()) {
          const v = read(s)
          if (v !== undefined && Number.isFinite(v)) this.labels({ operation: s.name }).set(v)
        }
      },
    })
  }
  {
    const g: Gauge<'operation'> = new Gauge({
      name: 'tagstream_operation_running',
      help: '1 while an operation (replay, restore, rescore, publish) runs, else 0.',
      labelNames: ['operation'] as const,
      registers,
      collect() {
        const running = new Set(operations.snapshot().filter((s) => s.running).map((s) => s.name))
        for (const name of OPERATION_NAMES) g.labels({ operation: name }).set(running.has(name) ? 1 : 0)
      },
    })
  }
  perOperation('tagstream_operation_progress_ratio', 'Work done over work expected (0 to 1) of the running or last run of an operation; 1 once completed.', (s) => s.ratio)
  perOperation('tagstream_operation_eta_seconds', 'Time left to the running operation at its rate over the last 10 s (0 once ended).', (s) => s.etaSeconds)
  perOperation('tagstream_operation_duration_seconds', 'Wall time of the running run of an operation so far, else of its last run.', (s) => s.durationMs / 1000)
  {
    const outcomes: readonly OperationOutcome[] = ['completed', 'stopped', 'failed']
    let children: [OperationName, OperationOutcome, (v: number) => void][] = []
    const c: Counter<'operation' | 'outcome'> = new Counter({
      name: 'tagstream_operations_total',
      help: 'Runs of long operations ended, by operation and outcome (completed, stopped by a shutdown, failed).',
      labelNames: ['operation', 'outcome'] as const,
      registers,
      collect() {
        for (const [name, outcome, follow] of children) follow(operations.ended[name][outcome])
      },
    })
    children = OPERATION_NAMES.flatMap((name) => outcomes.map((outcome) => [name, outcome, follower(c.labels({ operation: name, outcome }))] as [OperationName, OperationOutcome, (v: number) => void]))
  }
}

/** Queue and refusal metrics of the HTTP ingest source. */
export function registerIngestMetrics(ingest: IngestLike, registry: Registry): void {
  const registers = [registry]
  new Gauge({
    name: 'tagstream_http_ingest_queued_records',
    help: 'Records accepted over HTTP and not yet read by the engine.',
    registers,
    collect() {
      this.set(ingest.queued)
    },
  })
  new Gauge({
    name: 'tagstream_http_ingest_capacity_records',
    help: 'Records the HTTP ingest queue holds before refusing batches (429).',
    registers,
    collect() {
      this.set(ingest.capacity)
    },
  })
  new Gauge({
    name: 'tagstream_http_ingest_commit_waiters',
    help: 'Ingest requests waiting for their records to be committed (wait=committed).',
    registers,
    collect() {
      this.set(ingest.commitWaiters)
    },
  })
  {
    let accepted: ((v: number) => void) | undefined
    let refused: ((v: number) => void) | undefined
    const c: Counter<'result'> = new Counter({
      name: 'tagstream_http_ingest_records_total',
      help: 'Valid records offered over HTTP, by result: accepted into the queue, or refused because it was full (429).',
      labelNames: ['result'] as const,
      registers,
      collect() {
        accepted?.(ingest.stats.acceptedRecords)
        refused?.(ingest.stats.refusedRecords)
      },
    })
    accepted = follower(c.labels({ result: 'accepted' }))
    refused = follower(c.labels({ result: 'refused' }))
  }
  {
    let children: [string, (v: number) => void][] = []
    const c: Counter<'reason'> = new Counter({
      name: 'tagstream_http_ingest_invalid_total',
      help: 'Records rejected by the HTTP ingest route before reaching the engine (answered to the client), by reason.',
      labelNames: ['reason'] as const,
      registers,
      collect() {
        const counts = ingest.stats.invalid
        for (const [reason, follow] of children) follow(counts[reason] ?? 0)
      },
    })
    children = REJECT_REASON_LIST.map((reason) => [reason, follower(c.labels({ reason }))])
  }
}

/**
 * `tagstream_consumer_lag_records{topic,partition}`: records between what the engine has read and
 * each partition's high watermark, for the partitions this process owns now (a partition handed to
 * another process disappears from the series).
 */
export function registerConsumerLag(sources: readonly ConsumerLagSource[], registry: Registry): void {
  const g: Gauge<'topic' | 'partition'> = new Gauge({
    name: 'tagstream_consumer_lag_records',
    help: 'Records not yet read by the engine, per input topic and partition owned by this process (high watermark minus next offset).',
    labelNames: ['topic', 'partition'] as const,
    registers: [registry],
    collect() {
      g.reset()
      for (const source of sources) {
        for (const { topic, partition, records } of source.lag()) g.labels({ topic, partition: String(partition) }).set(records)
      }
    },
  })
}
