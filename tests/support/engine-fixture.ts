import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { validateConfig } from '../../src/config/load.js'
import type { Config } from '../../src/config/schema.js'
import type { DeadLetter } from '../../src/contracts/dead-letter.js'
import { DEFAULT_FIELD_NAMES } from '../../src/contracts/input-event.js'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { createEventDecoder } from '../../src/contracts/validate-event.js'
import { Engine } from '../../src/engine/engine.js'
import type { EngineLifecycle } from '../../src/engine/lifecycle.js'
import type { CompactionPolicy } from '../../src/engine/population.js'
import type { Operator } from '../../src/operator-api.js'
import type { DeadLetterSink, TagChangeSink } from '../../src/sinks/sink.js'
import type { Source, SourceRecord } from '../../src/sources/source.js'
import { Store } from '../../src/store/store.js'
import { LevelCatalogStorage, TagCatalog } from '../../src/tags/catalog.js'
import { catalogRuleValidator } from '../../src/tags/lanes.js'

/** A source fed by the test: records are pushed, and `end()` makes the next empty poll return null. */
export class ArraySource implements Source {
  readonly name: string
  readonly decode = createEventDecoder({
    fields: DEFAULT_FIELD_NAMES,
    format: 'json',
    maxRecordBytes: 65536,
    maxIdLength: 256,
    maxFutureMs: 86_400_000,
    timestampUnit: 'ms',
  })
  private records: Buffer[] = []
  private position = 0
  private ended = false

  constructor(name = 'test') {
    this.name = name
  }

  push(...items: unknown[]): this {
    for (const item of items) this.records.push(Buffer.isBuffer(item) ? item : Buffer.from(typeof item === 'string' ? item : JSON.stringify(item)))
    return this
  }

  end(): this {
    this.ended = true
    return this
  }

  async open(position: number): Promise<void> {
    this.position = position
  }

  async poll(max: number, waitMs = 0): Promise<SourceRecord[] | null> {
    // Drained but not ended: wait a little, as a live source does (at most `waitMs`), so that a
    // running engine's loop lets timers and I/O in.
    if (this.position >= this.records.length && !this.ended && waitMs > 0) await new Promise((r) => setTimeout(r, Math.min(waitMs, 5)))
    const out: SourceRecord[] = []
    while (out.length < max && this.position < this.records.length) {
      out.push({ value: this.records[this.position] as Buffer, offset: this.position, nextOffset: this.position + 1 })
      this.position++
    }
    if (out.length === 0 && this.ended) return null
    return out
  }

  async close(): Promise<void> {}
}

export class CaptureSink implements TagChangeSink, DeadLetterSink {
  readonly name = 'capture'
  readonly pending: unknown[] = []
  readonly flushed: unknown[] = []
  write(item: TagChange | DeadLetter): void {
    this.pending.push(item)
  }
  async flush(): Promise<void> {
    this.flushed.push(...this.pending.splice(0))
  }
  async close(): Promise<void> {}
  get changes(): TagChange[] {
    return this.flushed as TagChange[]
  }
  get deadLetters(): DeadLetter[] {
    return this.flushed as DeadLetter[]
  }
}

export interface Fixture {
  engine: Engine
  store: Store
  source: ArraySource
  changes: CaptureSink
  deadLetters: CaptureSink
  dir: string
  /** The tag catalog the engine follows (with `options.tags`). */
  catalog: TagCatalog | undefined
  /** Runs until the source is drained, commits. */
  drain(): Promise<void>
  close(): Promise<void>
  /** Closes and reopens the engine on the same store, with a fresh source at the stored position. */
  reopen(): Promise<Fixture>
}

export async function createFixture(
  operators: Operator<any>[],
  overrides: Record<string, unknown> = {},
  options: {
    dir?: string
    records?: Buffer[]
    timerScanLimit?: number
    now?: () => number
    idleAdvance?: boolean
    lifecycle?: EngineLifecycle
    sinks?: TagChangeSink[]
    /** Tag definitions (entries of a tags file) for a catalog in the store; merged again on reopen. */
    tags?: unknown[]
    /** False: sweeps and previews read full records only (the reference for the projection path). */
    readProjections?: boolean
    /** When population deltas are folded into snapshots (default: the engine's). */
    populationCompaction?: CompactionPolicy
    /** Stored users from which previews use `engine.previewThreads` worker threads (default: the engine's). */
    previewWorkerMinUsers?: number
    /** Stored users from which sweeps use `engine.sweepThreads` worker threads (default: the engine's). */
    sweepWorkerMinUsers?: number
    /** When partitions get projection pages and when they are stale (default: the engine's). */
    projectionPages?: { minUsers?: number; minFresh?: number }
    /** The configuration `operators` were created from: sweep threads create theirs from it (none: no sweep threads). */
    operatorEntries?: Config['operators']
  } = {},
): Promise<Fixture> {
  const { config, issues } = validateConfig({ engine: { partitions: 2, ...((overrides.engine as object) ?? {}) }, ...overrides, ...(overrides.engine ? {} : {}) })
  if (config === undefined) throw new Error(JSON.stringify(issues))
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'ts-engine-'))
  const store = await Store.open(join(dir, 'store'))
  const source = new ArraySource()
  if (options.records) source.push(...options.records)
  const changes = new CaptureSink()
  const deadLetters = new CaptureSink()
  let catalog: TagCatalog | undefined
  if (options.tags !== undefined) {
    let opened: TagCatalog | undefined
    catalog = await TagCatalog.open(new LevelCatalogStorage(store.level), {
      validateRule: catalogRuleValidator(operators, () => opened),
      now: () => Date.UTC(2030, 0, 1),
    })
    opened = catalog
    await catalog.loadDefinitions({ tags: options.tags })
  }
  const engine = new Engine({
    config: config as Config,
    store,
    operators,
    sources: [source],
    sinks: [changes, ...(options.sinks ?? [])],
    deadLetters,
    now: options.now ?? (() => Date.UTC(2030, 0, 1)),
    idleAdvance: options.idleAdvance ?? false,
    ...(catalog !== undefined ? { catalog } : {}),
    ...(options.timerScanLimit !== undefined ? { timerScanLimit: options.timerScanLimit } : {}),
    ...(options.lifecycle !== undefined ? { lifecycle: options.lifecycle } : {}),
    ...(options.readProjections !== undefined ? { readProjections: options.readProjections } : {}),
    ...(options.populationCompaction !== undefined ? { populationCompaction: options.populationCompaction } : {}),
    ...(options.previewWorkerMinUsers !== undefined ? { previewWorkerMinUsers: options.previewWorkerMinUsers } : {}),
    ...(options.sweepWorkerMinUsers !== undefined ? { sweepWorkerMinUsers: options.sweepWorkerMinUsers } : {}),
    ...(options.projectionPages !== undefined ? { projectionPages: options.projectionPages } : {}),
    ...(options.operatorEntries !== undefined ? { operatorEntries: options.operatorEntries } : {}),
  })
  await engine.open()
  const fixture: Fixture = {
    engine,
    store,
    source,
    changes,
    deadLetters,
    dir,
    catalog,
    async drain() {
      source.end()
      await engine.run({ untilEnd: true })
    },
    async close() {
      await engine.close()
      await store.close()
    },
    async reopen() {
      const records = (source as unknown as { records: Buffer[] }).records
      await fixture.close()
      return createFixture(operators, overrides, { ...options, dir, records })
    },
  }
  return fixture
}
