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

export interface Runtime {
  readonly engine: Engine
  readonly store: Store
  readonly config: Readonly<Config>
  readonly stdout: StdoutSink | undefined
  /** The metrics registry, served at /metrics (only when HTTP is enabled). */
  readonly registry: Registry | undefined
  /** The HTTP server, when `http.enabled` (listening once `openRuntime` resolves). */
  readonly http: TagstreamServer | undefined
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

/** Opens the store, loads operators, builds sources and sinks, and opens the engine. */
export async function openRuntime(config: Readonly<Config>, options: RuntimeOptions): Promise<Runtime> {
  const operators = await createOperators(config)
  mkdirSync(resolve(config.dataDir), { recursive: true })
  const store = await Store.open(storePath(config))
  const sinks: TagChangeSink[] = []
  let stdout: StdoutSink | undefined
  try {
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
    const engine = new Engine({
      config,
      store,
      operators,
      sources,
      sinks,
      deadLetters,
      idleAdvance: options.live,
      ...(observer ? { observer } : {}),
    })
    let http: TagstreamServer | undefined
    let registry: Registry | undefined
    if (ingest !== undefined && metrics !== undefined) {
      const { Registry: PromRegistry } = await import('prom-client')
      const { buildServer } = await import('./http/server.js')
      registry = new PromRegistry()
      const lagSources = sources.filter((s): s is Source & ConsumerLagSource => typeof (s as Partial<ConsumerLagSource>).lag === 'function')
      metrics.createMetrics(engine, registry, { ...(observer ? { observer } : {}), ingest, consumerLag: lagSources })
      http = buildServer({ engine, ingest, registry, config: config.http, ...(stream ? { stream } : {}) })
      // Listen before the restore: /healthz answers and /readyz says 503 until the engine is open.
      await http.listen({ host: config.http.host, port: config.http.port })
    }
    try {
      await engine.open()
    } catch (err) {
      await http?.close()
      throw err
    }
    return {
      engine,
      store,
      config,
      stdout,
      registry,
      http,
      async stop() {
        if (http !== undefined && ingest !== undefined) {
          await http.close()
          // Give the engine the records HTTP already accepted, within the shutdown budget.
          await Promise.race([ingest.drained(), new Promise((r) => setTimeout(r, config.engine.shutdownTimeoutMs / 2).unref())])
        }
        await engine.stop()
      },
      async close() {
        await engine.close()
        await store.close()
      },
    }
  } catch (err) {
    // A sink that opened keeps connections (a Kafka producer keeps the process alive): close them.
    await Promise.allSettled(sinks.map((sink) => sink.close()))
    await store.close()
    throw err
  }
}
