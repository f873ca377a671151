import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Config } from './config/schema.js'
import { createEventDecoder, parseIsoTimestamp } from './contracts/validate-event.js'
import { DEFAULT_FIELD_NAMES } from './contracts/input-event.js'
import { Engine } from './engine/engine.js'
import { ErrorCodes, TagstreamError } from './errors.js'
import { createOperators } from './engine/operators.js'
import { NdjsonDeadLetterSink, NdjsonTagChangeSink } from './sinks/ndjson-file-sink.js'
import type { DeadLetterSink, TagChangeSink } from './sinks/sink.js'
import { StdoutSink } from './sinks/stdout-sink.js'
import { FileSource } from './sources/file-source.js'
import { GeneratorSource } from './sources/generator-source.js'
import type { Source } from './sources/source.js'
import { Store } from './store/store.js'
import type { Registry } from 'prom-client'
import type { TagstreamServer } from './http/server.js'
import type { ConsumerLagSource, RecordingObserver } from './metrics/metrics.js'
import { HttpIngestSource } from './sources/http-ingest-source.js'
import { LevelCatalogStorage, TagCatalog, type CatalogStorage } from './tags/catalog.js'
import { catalogRuleValidator } from './tags/lanes.js'
import type { Operator } from './operator-api.js'
import type { EngineLifecycle } from './engine/lifecycle.js'
import { createLogger, type Logger } from './log.js'
import { Operations, ProgressReporter, type Operation } from './progress.js'

export interface Runtime {
  readonly engine: Engine
  readonly store: Store
  /** The tag catalog the engine follows (stored in the engine's LevelDB; merged with `catalog.file`). */
  readonly catalog: TagCatalog
  readonly config: Readonly<Config>
  readonly stdout: StdoutSink | undefined
  /** The metrics registry, served at /metrics (only when HTTP is enabled). */
  readonly registry: Registry | undefined
  /** The HTTP server, when `http.enabled` (listening once `openRuntime` resolves). */
  readonly http: TagstreamServer | undefined
  /** The engine's sources (a replay's file sources tell how far they have read). */
  readonly sources: readonly Source[]
  readonly logger: Logger
  /** Progress of long operations: the runtime reports restores and sweeps; callers add theirs (replays, publications). */
  readonly progress: ProgressReporter
  /** Graceful stop: HTTP intake ends, what it accepted is applied, the engine finishes its batch and commits. */
  stop(): Promise<void>
  close(): Promise<void>
}

export interface RuntimeOptions {
  /** Replace the configured sources by these NDJSON files, read to their end (`tagstream replay`). */
  readonly replayFiles?: readonly string[]
  /** Live runs advance idle partitions with the wall clock; replays do not. */
  readonly live: boolean
  /** Stdout sinks print to this stream (tests capture it). */
  readonly out?: NodeJS.WriteStream
  /** Lifecycle logs (default: JSON lines on stderr at `config.log.level`). */
  readonly logger?: Logger
  /** Where long operations report progress (default: log lines every `config.log.progressIntervalMs`). */
  readonly progress?: ProgressReporter
}

export function storePath(config: Readonly<Config>): string {
  return join(resolve(config.dataDir), 'store')
}

/** The decoder of a source: built once per source, with the configured limits. */
function eventDecoder(config: Readonly<Config>, fields = DEFAULT_FIELD_NAMES, timestampUnit: 'ms' | 's' = 'ms', format: 'json' | 'msgpack' = 'json') {
  const limits = config.limits
  return createEventDecoder({
    fields,
    format,
    maxRecordBytes: limits.maxRecordBytes,
    maxIdLength: limits.maxIdLength,
    maxFutureMs: limits.maxFutureMs,
    timestampUnit,
  })
}

async function buildSources(config: Readonly<Config>, options: RuntimeOptions, ingest: HttpIngestSource | undefined): Promise<Source[]> {
  const limits = config.limits
  const decoderFor = (fields = DEFAULT_FIELD_NAMES, timestampUnit: 'ms' | 's' = 'ms') => eventDecoder(config, fields, timestampUnit)
  if (options.replayFiles !== undefined) {
    return options.replayFiles.map(
      (file) =>
        new FileSource({
          name: `file:${resolve(file)}`,
          path: file,
          decode: decoderFor(),
          maxRecordBytes: limits.maxRecordBytes,
          follow: false,
          pollIntervalMs: 200,
        }),
    )
  }
  const configured: Source[] = []
  for (const s of config.sources) {
    if (s.type !== 'kafka') continue
    // The native client is loaded only when a Kafka source is configured.
    const { KafkaSource } = await import('./sources/kafka-source.js')
    configured.push(
      new KafkaSource({
        name: s.name,
        brokers: s.brokers,
        groupId: s.groupId,
        topics: s.topics.map((t) => ({ topic: t.topic, decode: eventDecoder(config, s.fields, s.timestampUnit, t.format) })),
        maxPartitions: config.engine.partitions,
        maxRecordBytes: limits.maxRecordBytes,
        clientId: s.clientId,
        sessionTimeoutMs: s.sessionTimeoutMs,
        heartbeatIntervalMs: s.heartbeatIntervalMs,
        startFrom: s.startFrom,
        allowMissingHistory: s.allowMissingHistory,
        connectTimeoutMs: s.connectTimeoutMs,
        librdkafka: s.librdkafka,
      }),
    )
  }
  // A Kafka source decides which partitions this process owns: HTTP ingest (hashed by user) is off
  // then, and file or generator sources (hashed by user too) cannot run beside it.
  if (configured.length > 0) {
    const others = config.sources.filter((s) => s.type !== 'kafka')
    if (configured.length > 1 || others.length > 0) {
      throw new TagstreamError(ErrorCodes.CONFIG_INVALID, 'a kafka source must be the only source: the consumer group decides which partitions this process owns', {
        details: { issues: [{ key: 'sources', message: 'one kafka source (with several topics if needed), and no other source' }] },
      })
    }
    return configured
  }
  const embedded: Source[] = config.sources.flatMap((s): Source[] => {
    if (s.type === 'kafka') return []
    if (s.type === 'file') {
      return [
        new FileSource({
          name: s.name,
          path: s.path,
          decode: decoderFor(s.fields, s.timestampUnit),
          maxRecordBytes: limits.maxRecordBytes,
          follow: s.follow && options.live,
          pollIntervalMs: s.pollIntervalMs,
        }),
      ]
    }
    return [new GeneratorSource({
      name: s.name,
      decode: decoderFor(),
      users: s.users,
      eventsPerSecond: s.eventsPerSecond,
      seed: s.seed,
      timeScale: s.timeScale,
      invalidRatio: s.invalidRatio,
      startAt: parseIsoTimestamp(s.startAt),
      ...(s.limit !== undefined ? { limit: s.limit } : {}),
    })]
  })
  return ingest === undefined ? embedded : [...embedded, ingest]
}

/**
 * Opens the tag catalog in the store, checking rules against the configured operators' views, and
 * merges the configured tags file. Warnings (kept stored versions, leaf sizes) go to `warn`.
 */
export async function openCatalog(
  config: Readonly<Config>,
  storage: CatalogStorage,
  operators: readonly Operator[],
  warn: (message: string) => void = (m) => process.emitWarning(m),
): Promise<TagCatalog> {
  let opened: TagCatalog | undefined
  const catalog = await TagCatalog.open(storage, {
    validateRule: catalogRuleValidator(operators, () => opened),
  })
  opened = catalog
  if (config.catalog.file !== undefined) {
    const report = await catalog.loadFile(config.catalog.file)
    for (const w of report.warnings) warn(`${config.catalog.file}: ${w.key}: ${w.message}`)
  }
  return catalog
}

/** Opens the store, loads operators, builds sources and sinks, and opens the engine. */
export async function openRuntime(config: Readonly<Config>, options: RuntimeOptions): Promise<Runtime> {
  const logger = options.logger ?? createLogger({ level: config.log.level })
  const progress = options.progress ?? new ProgressReporter({ logger, logIntervalMs: config.log.progressIntervalMs })
  const operators = await createOperators(config)
  mkdirSync(resolve(config.dataDir), { recursive: true })
  const store = await Store.open(storePath(config), { maxOpenFiles: config.engine.storeMaxOpenFiles })
  logger.info({ store: store.path, partitions: config.engine.partitions, operators: operators.map((o) => o.name) }, 'store opened')
  const sinks: TagChangeSink[] = []
  let stdout: StdoutSink | undefined
  try {
    const catalog = await openCatalog(config, new LevelCatalogStorage(store.level), operators)
    for (const s of config.sinks.tagChanges) {
      if (s.type === 'ndjson-file') {
        const sink = new NdjsonTagChangeSink(s.path ?? join(resolve(config.dataDir), 'tag-changes.ndjson'), s.fsync)
        await sink.open()
        sinks.push(sink)
      } else if (s.type === 'kafka') {
        const { KafkaTagChangeSink } = await import('./sinks/kafka-sinks.js')
        const sink = new KafkaTagChangeSink(s)
        await sink.open()
        sinks.push(sink)
      } else {
        stdout = new StdoutSink({ mode: s.mode, intervalMs: s.intervalMs, ...(options.out ? { out: options.out } : {}) })
        sinks.push(stdout)
      }
    }
    const dl = config.sinks.deadLetter
    let deadLetters: DeadLetterSink
    if (dl.type === 'kafka') {
      const { KafkaDeadLetterSink } = await import('./sinks/kafka-sinks.js')
      const sink = new KafkaDeadLetterSink(dl)
      await sink.open()
      deadLetters = sink
    } else {
      const sink = new NdjsonDeadLetterSink(dl.path ?? join(resolve(config.dataDir), 'dead-letters.ndjson'), dl.fsync)
      await sink.open()
      deadLetters = sink
    }
    // HTTP ingest is a source like any other; its position is stored under the fixed name `http`.
    const ingest =
      config.http.enabled && options.replayFiles === undefined
        ? new HttpIngestSource({ name: 'http', decode: eventDecoder(config), capacity: config.http.ingestQueueRecords })
        : undefined
    // The service surface (fastify, prom-client) is loaded only when it is served: replays and
    // profile reads start faster without it.
    const metrics = ingest === undefined ? undefined : await import('./metrics/metrics.js')
    // The server-sent-event stream is a sink like the others, fed at commit.
    const stream = ingest === undefined ? undefined : new (await import('./sinks/sse-sink.js')).SseSink({ replayWindow: config.http.streamReplayWindow })
    if (stream !== undefined) sinks.push(stream)
    const observer: RecordingObserver | undefined = metrics?.createEngineObserver()
    const sources = await buildSources(config, options, ingest)
    // With a Kafka source, POST /v1/events answers 503: produce to the topic instead.
    if (ingest !== undefined && !sources.includes(ingest)) ingest.end()
    const engine: Engine = new Engine({
      config,
      store,
      operators,
      sources,
      sinks,
      deadLetters,
      operatorEntries: config.operators,
      idleAdvance: options.live,
      catalog,
      // Called only once the engine runs: `engine` is assigned by then.
      lifecycle: engineLifecycle(() => engine, logger, progress, options.live),
      ...(observer ? { observer } : {}),
    })
    let http: TagstreamServer | undefined
    let registry: Registry | undefined
    if (ingest !== undefined && metrics !== undefined) {
      const { Registry: PromRegistry } = await import('prom-client')
      const { buildServer } = await import('./http/server.js')
      registry = new PromRegistry()
      const lagSources = sources.filter((s): s is Source & ConsumerLagSource => typeof (s as Partial<ConsumerLagSource>).lag === 'function')
      metrics.createMetrics(engine, registry, { ...(observer ? { observer } : {}), ingest, operations: progress, consumerLag: lagSources })
      http = buildServer({
        engine,
        ingest,
        registry,
        catalog,
        config: config.http,
        logger: logger.child({ component: 'http' }),
        ...(stream ? { stream } : {}),
      })
      // Listen before the restore: /healthz answers and /readyz says 503 until the engine is open.
      await http.listen({ host: config.http.host, port: config.http.port })
    }
    // The restore: partition clocks, population statistics (a pass over the stored users), segment counts, source positions.
    const restore = progress.start(Operations.RESTORE, {
      unit: 'users',
      total: () => engine.userCount,
      done: () => engine.stats.usersRestored,
    })
    try {
      await engine.open()
    } catch (err) {
      // The caller logs the error itself (the CLI: one fatal line with its code).
      restore.finish('failed')
      await http?.close()
      throw err
    }
    restore.finish()
    logger.info(
      {
        partitions: config.engine.partitions,
        users: engine.userCount,
        sources: sources.map((s) => s.name),
        sinks: sinks.map((s) => s.name),
        restoreMs: restore.durationMs(Date.now()),
      },
      'engine ready',
    )
    const ranked = operators.filter((op) => (op.population?.length ?? 0) > 0).map((op) => op.name)
    if (ranked.length > 0 && config.engine.populationScope === 'process' && config.sources.some((s) => s.type === 'kafka')) {
      // Not an error (one process, no crash: exact ranks), but the stable-id promise does not hold for these tags.
      logger.warn(
        { operators: ranked, populationScope: 'process' },
        'population-ranked tags read from Kafka depend on how the consumer interleaves partitions: a replay after a crash or rebalance may re-score them differently. Set engine.populationScope: partition for replay-stable tags',
      )
    }
    return {
      engine,
      store,
      catalog,
      config,
      stdout,
      registry,
      http,
      sources,
      logger,
      progress,
      async stop() {
        const started = Date.now()
        if (http !== undefined && ingest !== undefined) {
          await http.close()
          logger.info({ queuedRecords: ingest.queued }, 'http closed; applying the records it accepted')
          // Give the engine the records HTTP already accepted, within the shutdown budget.
          await Promise.race([ingest.drained(), new Promise((r) => setTimeout(r, config.engine.shutdownTimeoutMs / 2).unref())])
        }
        await engine.stop()
        logger.info({ commits: engine.stats.commits, records: engine.stats.recordsIn, stopMs: Date.now() - started }, 'engine stopped after its last commit')
      },
      async close() {
        progress.close()
        await engine.close()
        await store.close()
        logger.debug('store closed')
      },
    }
  } catch (err) {
    // A sink that opened keeps connections (a Kafka producer keeps the process alive): close them.
    await Promise.allSettled(sinks.map((sink) => sink.close()))
    await store.close()
    throw err
  }
}

/**
 * Logs the engine's sweeps and commit failures, and reports a sweep's progress: one `rescore`
 * operation from the first partition's start to the last partition's end, over the users the
 * engine holds. A replay crosses a sweep instant every simulated day: its sweeps log at debug.
 */
function engineLifecycle(engine: () => Engine, logger: Logger, progress: ProgressReporter, live: boolean): EngineLifecycle {
  let rescore: Operation | undefined
  let publish: Operation | undefined
  return {
    sweepStarted(partition, atMs) {
      logger.debug({ partition, at: new Date(atMs).toISOString() }, 'rescore sweep of a partition started')
      if (rescore?.running) return
      const e = engine()
      const rescoredBefore = e.stats.usersRescored
      rescore = progress.start(Operations.RESCORE, {
        unit: 'users',
        total: e.userCount,
        done: () => e.stats.usersRescored - rescoredBefore,
        quiet: !live,
        fields: { at: new Date(atMs).toISOString() },
      })
    },
    sweepFinished(partition, atMs) {
      logger.debug({ partition, at: new Date(atMs).toISOString() }, 'rescore sweep of a partition finished')
      if (!engine().sweeping) rescore?.finish()
    },
    definitionPassStarted(pass) {
      logger.info(pass, 'definition pass started: re-evaluating the stored users')
      if (publish?.running) return
      const e = engine()
      const before = e.stats.usersReevaluated
      publish = progress.start(Operations.PUBLISH, { unit: 'users', total: e.userCount, done: () => e.stats.usersReevaluated - before, fields: { tag: pass.tag } })
    },
    definitionPassesFinished() {
      logger.info('definition passes finished')
      publish?.finish()
    },
    sweepThreadFailed(error) {
      logger.error({ err: error }, 'a sweep worker thread failed: sweeps continue on the engine thread (same results, slower ingestion during sweeps)')
    },
    projectionPagesFailed(partition, error) {
      logger.error({ err: error, partition }, 'projection page build failed: rule previews of this partition read every user\'s projection until a restart (same results, slower)')
    },
    commitFailed(error) {
      logger.error({ err: error }, 'commit failed: nothing of the batch is stored, the engine stops and resumes from the last commit on restart')
    },
  }
}
