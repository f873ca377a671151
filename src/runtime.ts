import { mkdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Config } from './config/schema.js'
import { createEventDecoder, parseIsoTimestamp } from './contracts/validate-event.js'
import { DEFAULT_FIELD_NAMES } from './contracts/input-event.js'
import { Engine } from './engine/engine.js'
import { createOperators } from './engine/operators.js'
import { NdjsonDeadLetterSink, NdjsonTagChangeSink } from './sinks/ndjson-file-sink.js'
import type { TagChangeSink } from './sinks/sink.js'
import { StdoutSink } from './sinks/stdout-sink.js'
import { FileSource } from './sources/file-source.js'
import { GeneratorSource } from './sources/generator-source.js'
import type { Source } from './sources/source.js'
import { Store } from './store/store.js'

export interface Runtime {
  readonly engine: Engine
  readonly store: Store
  readonly config: Readonly<Config>
  readonly stdout: StdoutSink | undefined
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

function buildSources(config: Readonly<Config>, options: RuntimeOptions): Source[] {
  const limits = config.limits
  const decoderFor = (fields = DEFAULT_FIELD_NAMES, timestampUnit: 'ms' | 's' = 'ms') =>
    createEventDecoder({
      fields,
      format: 'json',
      maxRecordBytes: limits.maxRecordBytes,
      maxIdLength: limits.maxIdLength,
      maxFutureMs: limits.maxFutureMs,
      timestampUnit,
    })
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
  return config.sources.map((s) => {
    if (s.type === 'file') {
      return new FileSource({
        name: s.name,
        path: s.path,
        decode: decoderFor(s.fields, s.timestampUnit),
        maxRecordBytes: limits.maxRecordBytes,
        follow: s.follow && options.live,
        pollIntervalMs: s.pollIntervalMs,
      })
    }
    return new GeneratorSource({
      name: s.name,
      decode: decoderFor(),
      users: s.users,
      eventsPerSecond: s.eventsPerSecond,
      seed: s.seed,
      timeScale: s.timeScale,
      invalidRatio: s.invalidRatio,
      startAt: parseIsoTimestamp(s.startAt),
      ...(s.limit !== undefined ? { limit: s.limit } : {}),
    })
  })
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
      } else {
        stdout = new StdoutSink({ mode: s.mode, intervalMs: s.intervalMs, ...(options.out ? { out: options.out } : {}) })
        sinks.push(stdout)
      }
    }
    const dl = config.sinks.deadLetter
    const deadLetters = new NdjsonDeadLetterSink(dl.path ?? join(resolve(config.dataDir), 'dead-letters.ndjson'), dl.fsync)
    await deadLetters.open()
    const engine = new Engine({
      config,
      store,
      operators,
      sources: buildSources(config, options),
      sinks,
      deadLetters,
      idleAdvance: options.live,
    })
    await engine.open()
    return {
      engine,
      store,
      config,
      stdout,
      async close() {
        await engine.close()
        await store.close()
      },
    }
  } catch (err) {
    await store.close()
    throw err
  }
}
