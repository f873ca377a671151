import * as crypto from 'node:crypto'
import type { Config } from '../config/schema.js'
import type { DeadLetter } from '../contracts/dead-letter.js'
import { RejectReasons, type InputEvent, type Rejection } from '../contracts/input-event.js'
import type { Profile, ProfileTag } from '../contracts/profile.js'
import type { TagChange, TagChangeCause, TagChangeOp, TagValue } from '../contracts/tag-change.js'
import type { EngineObserver } from '../metrics/metrics.js'
import type { EngineLifecycle } from './lifecycle.js'
import { ErrorCodes, TagstreamError } from '../errors.js'
import type { DerivedTag, DerivedTags, Operator, OperatorContext, PopulationView } from '../operator-api.js'
import type { DeadLetterSink, TagChangeSink } from '../sinks/sink.js'
import { isPartitioned, type PartitionedSource, type Source, type SourceRecord } from '../sources/source.js'
import { Store, type PartitionClock, type WriteOp } from '../store/store.js'
import {
  clockKey,
  countKey,
  decodeTagValue,
  encodeTagValue,
  globalOffsetKey,
  DEFINITIONS_KEY,
  historyKey,
  historyRange,
  memberKey,
  memberRange,
  parseMemberKey,
  projectionKey,
  partitionOffsetKey,
  timerKey,
  userKey,
  userKeyOfProjection,
  partitionPrefix,
  userRange,
} from '../store/keys.js'
import { calendarFor, DAY_MS, type Calendar } from '../time/calendar.js'
import { isoString } from '../time/iso.js'
import type { PublishMode, ReentryPolicy } from '../tags/catalog-schema.js'
import type { TagCatalog } from '../tags/catalog.js'
import {
  buildRuleSchema,
  compileLaneRule,
  desiredLanes,
  evaluationOrder,
  sameEvaluation,
  type CompiledLaneRule,
  type LaneSpec,
} from '../tags/lanes.js'
import {
  compileRule,
  isRuleErrors,
  ruleViewBuilder,
  ruleViewPlan,
  type RuleViewSource,
  type RuleError,
  type CompiledRule,
  type RuleSchema,
  type RuleValue,
  type RuleView,
  type RuleResult,
} from '../tags/rules.js'
import { partitionFor } from './partitioner.js'
import { type CompactionPolicy, PopulationLog, Populations, ScopedPopulations, type SharedPopulations, type SweepCut } from './population.js'
import { ProjectionLayout, ProjectionReader, projectedViewBuilder, type EncodedProjection } from './projection.js'
import { SweepDecider, type DecisionLane } from './sweep-decider.js'
import type { SweepChunk, SweepJob, SweepScan } from './sweep-scan.js'
import { WorkerPool } from './worker-pool.js'
import { countResult, emptyCounts, evaluateView, mergeCounts, scanPartition, type PartitionScan, type PartitionToScan, type PreviewCounts, type PreviewJob } from './preview.js'
import { buildProjectionPages, clearProjectionPages, compareUtf8 } from './projection-pages.js'
import { TimerHeap, type TimerEntry } from './timer-heap.js'
import { TIMER_KEY_SEP, newUserRecord, timerKeyOf, type StoredTag, type UserRecord } from './user-record.js'

/** Counters the engine keeps on its hot path as plain numbers; metrics read them at scrape time. */
export interface EngineStats {
  recordsIn: number
  eventsApplied: number
  invalid: Record<string, number>
  duplicates: number
  tagChanges: number
  /** Changes of tags in `testing`: evaluated and counted, not emitted. */
  testingChanges: number
  timersFired: number
  operatorErrors: number
  commits: number
  lastCommitMs: number
  cacheHits: number
  cacheMisses: number
  usersCreated: number
  sweepsStarted: number
  sweepsCompleted: number
  usersRescored: number
  /** Of `usersRescored`: users a sweep's projection showed unchanged, whose records it did not read. */
  usersRescoredFromProjections: number
  /** Wall time spent in sweep steps (store reads included, the ingestion between them not), ms. */
  sweepStepMs: number
  /** Partitions rule previews read in worker threads (`engine.previewThreads`). */
  previewScansInThreads: number
  /** Parts of sweep passes decided in worker threads (`engine.sweepThreads`): one per partition, two when a pass wraps around. */
  sweepScansInThreads: number
  /** Sweep worker threads that failed (sweeps then went on on the engine's thread). */
  sweepThreadErrors: number
  /** Partitions' projection pages built (projection-pages.ts), and builds that failed (previews then read `v!` values). */
  projectionPageBuilds: number
  projectionPageBuildErrors: number
  /** Partitions rule previews read from projection pages, and users they read from `v!` values instead, written since the pages were built. */
  previewScansFromPages: number
  previewFreshUsers: number
  /** Wall time of the last completed sweep, ms. */
  lastSweepMs: number
  /** Users of the partitions whose population statistics are restored (restore progress). */
  usersRestored: number
  /** Tag changes by tag and op: each tag's counters object is built once, at start. */
  tagChangesByTag: Record<string, Record<TagChangeOp, number>>
  /** Changes of testing versions by tag and op (evaluated and counted, not emitted). */
  testingChangesByTag: Record<string, Record<TagChangeOp, number>>
  /** Entries (and what followed them) kept quiet by a tag's re-entry policy, by tag. */
  reentrySuppressed: Record<string, number>
  /** Strategy-rule evaluations, and their errors by tag (the user's previous value is kept). */
  ruleEvaluations: number
  ruleErrorsByTag: Record<string, number>
  /** Definition passes (publish, retire, testing) started and completed; users they evaluated. */
  definitionPassesStarted: number
  definitionPassesCompleted: number
  usersReevaluated: number
}

function newStats(): EngineStats {
  return {
    recordsIn: 0,
    eventsApplied: 0,
    invalid: Object.fromEntries(Object.values(RejectReasons).map((r) => [r, 0])),
    duplicates: 0,
    tagChanges: 0,
    testingChanges: 0,
    timersFired: 0,
    operatorErrors: 0,
    commits: 0,
    lastCommitMs: 0,
    cacheHits: 0,
    cacheMisses: 0,
    usersCreated: 0,
    sweepsStarted: 0,
    sweepsCompleted: 0,
    usersRescored: 0,
    usersRescoredFromProjections: 0,
    previewScansInThreads: 0,
    sweepScansInThreads: 0,
    sweepThreadErrors: 0,
    projectionPageBuilds: 0,
    projectionPageBuildErrors: 0,
    previewScansFromPages: 0,
    previewFreshUsers: 0,
    sweepStepMs: 0,
    lastSweepMs: 0,
    usersRestored: 0,
    tagChangesByTag: {},
    testingChangesByTag: {},
    reentrySuppressed: {},
    ruleEvaluations: 0,
    ruleErrorsByTag: {},
    definitionPassesStarted: 0,
    definitionPassesCompleted: 0,
    usersReevaluated: 0,
  }
}

/**
 * One lane of a tag as the engine evaluates it (see src/tags/lanes.ts): its online version (stored,
 * indexed, emitted) or its testing version (evaluated and counted only). Rebuilt when the catalog changes.
 */
interface TagSlot {
  readonly lane: string
  readonly id: string
  readonly version: number
  /** `online`: stored and emitted. `testing`: evaluated and counted only. */
  readonly emit: boolean
  /** This lane's change counters (in `stats.tagChangesByTag` or `stats.testingChangesByTag`). */
  readonly counts: Record<TagChangeOp, number>
  readonly reentry: ReentryPolicy
  readonly spec: LaneSpec
  /** Strategy tags: the compiled rule and what it reads. */
  readonly rule: CompiledLaneRule | undefined
  /** For evaluation order: the tags the rule reads. */
  readonly reads: ReadonlySet<string>
}

interface OperatorSlot {
  readonly op: Operator
  /** The lanes of the tags this operator derives (replaced when the catalog changes). */
  tags: readonly TagSlot[]
}

/**
 * A definition pass: a lane's definition changed (published, retired, put in or out of testing), so
 * every stored user is re-evaluated, a chunk at a time between batches, partition by partition. A user
 * with an event or timer before the pass reaches it is evaluated first, on the spot (`rec.dv`), so
 * each user sees the change exactly once, at the state it had when the change came in.
 */
interface DefinitionPass {
  readonly seq: number
  readonly lane: string
  readonly id: string
  /** The definition installed (undefined: the lane was removed). */
  readonly to: LaneSpec | undefined
  /** The version the lane had before, for the cause of a removal. */
  readonly fromVersion: number | undefined
  readonly mode: PublishMode
  /** Per partition: the last user key done; null when the partition is done. */
  readonly cursors: (string | null | undefined)[]
}

/** `g!defs`: the lanes the stored users were evaluated with, and the passes in progress. */
interface StoredDefinitions {
  seq: number
  applied: Record<string, LaneSpec>
  passes: DefinitionPass[]
}

/** Per-partition clock and timer bookkeeping. */
class PartitionTask {
  readonly partition: number
  /** Highest event time seen. */
  maxTs: number
  /** Highest event time minus lateness; timers due at or before it have fired. */
  watermark: number
  /** Store timer entries with due <= this are in `heap` (or fired). */
  scannedUpTo = -Infinity
  /**
   * No timer in the store is due in (scannedUpTo, storedTimersFrom): the first stored due past the
   * last scan, lowered at every commit by the timers it writes past `scannedUpTo`. A clock that moves
   * less far needs no scan (most moves, in a replay cut at each day's sweep). -Infinity: unknown.
   */
  storedTimersFrom = -Infinity
  /** Timers that are due soon: loaded from the store or registered with due <= scannedUpTo. */
  readonly heap = new TimerHeap()
  /** Timers registered since the last commit with due > scannedUpTo (the store does not have them yet). */
  uncommitted = new TimerHeap()
  /**
   * Timers of the commit being written (see `Engine.startCommit`): not in the store until it lands,
   * so timer scans take them from here. Kept past the landing while a scan that may have missed
   * them is in progress (`timerScans`), then dropped (`landedTimers`).
   */
  landingTimers: TimerHeap | undefined
  landedTimers = false
  timerScans = 0
  /** Users created in this partition, all time. */
  users: number
  dirty = false
  lastEventWallMs = 0
  /** Wall time minus event time of the event that set `maxTs`: how far behind live the partition was. */
  lagAtMax = Infinity
  /** The next re-scoring instant (event time); undefined until the clock first moves, Infinity when off. */
  nextSweepAt: number | undefined
  /** The re-scoring sweep in progress, if any. */
  sweep: Sweep | undefined
  /** Keys of users created since the last landed commit: not in the store yet, so swept when a sweep starts. */
  readonly created = new Set<string>()
  /** Whether every stored user of the partition has a projection in the engine's layout (v! keys). */
  projected = true
  /** The part of the running sweep's pass a worker thread decides (`engine.sweepThreads`). */
  sweepScan: SweepScanInFlight | undefined
  /** The partition's projection pages that previews read, if it has a set (projection-pages.ts). */
  pages: PageSet | undefined
  /** The build of the next page set, while it runs. */
  pagesBuild: PageSet | undefined
  /** A build failed: previews read the partition's `v!` values until the engine restarts. */
  pagesFailed = false
  /** Pages are to be built when the partition has none: set when a preview reads it without. */
  pagesWanted = false

  constructor(partition: number, maxTs: number, lateness: number, users: number) {
    this.partition = partition
    this.maxTs = maxTs
    this.watermark = maxTs - lateness
    this.users = users
  }
}

/**
 * A generation of a partition's projection pages (projection-pages.ts) and the users committed
 * since it was built: their `v!` values are newer than the pages. While the set is being built,
 * `fresh` holds the users of the commit then in flight and of every commit after, so it covers
 * whatever the build's read of the store (later than both) may have missed.
 */
interface PageSet {
  readonly gen: number
  /** Users the pages hold (while building: 0). */
  users: number
  readonly fresh: Set<string>
  /** While building: settles when the build has (a preview waits for it rather than read every `v!` value). */
  built?: Promise<unknown>
}

/**
 * A re-scoring sweep of one partition at instant `at`: every stored user is re-derived at `at`
 * against the population as it stood at `at` (a snapshot). A background pass walks the users in
 * key order a chunk at a time between batches; a user with an event or timer after `at` is swept
 * first, on the spot, so the result for each user does not depend on when the pass reaches it.
 */
interface Sweep {
  readonly at: number
  readonly populations: Populations
  /** Where `populations` was cut from the stored population deltas (see `PopulationLog.cutForSweep`): what a restart resumes the sweep against. */
  readonly populationCut?: SweepCut
  /** The last user key the background pass has done (undefined: not started). */
  cursor: string | undefined
  /** Where the pass started; it wraps around the key space and stops there (a superseded sweep's position). */
  readonly startKey: string | undefined
  wrapped: boolean
  /** The sweep's population in shared memory, for sweep worker threads (built at first use). */
  shared?: SharedPopulations
  /** What the sweep decides from projections, for the plan it was made with (built at first use). */
  decider?: { readonly plan: SweepPlan; readonly decider: SweepDecider }
}

export interface EngineOptions {
  readonly config: Readonly<Config>
  readonly store: Store
  readonly operators: readonly Operator[]
  readonly sources: readonly Source[]
  readonly sinks: readonly TagChangeSink[]
  readonly deadLetters: DeadLetterSink
  /** Wall clock, injectable for tests. */
  readonly now?: () => number
  /** Advance idle partitions with the wall clock (live runs); replays keep pure event time. */
  readonly idleAdvance?: boolean
  /** Timer index entries read per store scan (tests lower it to exercise the chunked path). */
  readonly timerScanLimit?: number
  /** Timing hooks for metrics (commit durations, batch processing, event-to-change latency). */
  readonly observer?: EngineObserver
  /** Sweep start and end, commit failures (logs and progress). */
  readonly lifecycle?: EngineLifecycle
  /**
   * The tag catalog: which versions are online or testing, strategy rules, re-entry policies. The
   * engine follows its changes without restart. Without it every operator tag is online at version 1.
   */
  readonly catalog?: TagCatalog
  /**
   * Whether sweeps and rule previews read users' projections where they suffice (default true).
   * False: always the full records, the reference the projection path is tested against.
   * Projections are written either way.
   */
  readonly readProjections?: boolean
  /** When a partition's population deltas are folded into its snapshot (default: population.ts). */
  readonly populationCompaction?: CompactionPolicy
  /**
   * Stored users from which a preview reads projections in `engine.previewThreads` worker threads
   * (default WORKER_MIN_USERS; tests lower it): below, starting the threads costs more than
   * they save.
   */
  readonly previewWorkerMinUsers?: number
  /** The same for sweeps in `engine.sweepThreads` (default: the same 50,000). */
  readonly sweepWorkerMinUsers?: number
  /**
   * Projection pages (see updatePages; tests lower both): `minUsers`, the stored users of a partition
   * from which previews read it from pages (default WORKER_MIN_USERS; below, reading every `v!`
   * value is fast enough, and builds are not worth their writes); `minFresh`, the users written
   * since a build below which the pages are never stale (default PAGES_MIN_FRESH).
   */
  readonly projectionPages?: { readonly minUsers?: number; readonly minFresh?: number }
  /**
   * The configuration `operators` were created from. Sweep worker threads create the same operators
   * from it: without it, sweeps stay on the engine's thread.
   */
  readonly operatorEntries?: Config['operators']
}

/** What a dry run of a rule over the stored users found (`Engine.preview`). */
export interface RulePreview {
  readonly expression: string
  readonly resultType: string
  /** Users evaluated: every stored user, as of the last commit (newer in-memory state where cached). */
  readonly users: number
  /** Users for whom the rule gives a value (true, for a boolean rule). */
  readonly matched: number
  /** Up to `sample` matching user ids, in key order. */
  readonly sample: readonly string[]
  /** Users per value, most frequent first (at most `maxValues`). */
  readonly values: readonly { readonly value: RuleValue; readonly users: number }[]
  /** Users whose evaluation failed, by error code (an absent field counts as no value, not as an error). */
  readonly errors: Readonly<Record<string, number>>
  readonly elapsedMs: number
}

export class RuleCompileError extends TagstreamError {
  constructor(readonly errors: readonly RuleError[]) {
    super(ErrorCodes.TAG_INVALID, `rule does not compile: ${errors.map((e) => `${e.message} (line ${e.position.line}, column ${e.position.column})`).join('; ')}`, {
      details: { issues: errors.map((e) => ({ key: 'rule', message: e.message, position: e.position, code: e.code })) },
    })
  }
}

/**
 * What a landed commit holds: each embedded source's position, and when the commit wrote partition
 * offsets, every owned partition's next offset by topic (partition -> topic -> offset).
 */
export type CommitListener = (positions: ReadonlyMap<string, number>, partitionOffsets: ReadonlyMap<number, ReadonlyMap<string, number>> | undefined) => void

export interface RunOptions {
  /** Stop when every source has ended (replay), instead of running until `stop()`. */
  readonly untilEnd: boolean
}

/** Max timer index entries read from the store per prefetch round. */
const DEFAULT_TIMER_SCAN_LIMIT = 20_000

/**
 * JS heap of a decoded user record (with its cache key and Map entry) per byte of its msgpack
 * form: 3.58 on the bench's population store, 3.68 on the generator's traffic (measured with
 * bench/bare/record-heap.ts).
 * Records are many small objects and arrays, so the heap is several times the stored bytes.
 */
const HEAP_BYTES_PER_STORED_BYTE = 3.7
/** Mean stored size assumed before the first commit has measured one (a customer with a few purchases). */
const INITIAL_RECORD_BYTES = 1024

/**
 * The engine: reads batches from its sources, applies them to per-user state through the
 * operators, emits tag changes, and commits (sinks flushed, then one atomic store write holding
 * states, timers, clocks and source positions). Per-event work is synchronous; the only awaits are
 * per batch (source poll, store prefetch) and per commit.
 */
export class Engine {
  readonly stats: EngineStats = newStats()
  private readonly config: Readonly<Config>
  private readonly store: Store
  private readonly sources: readonly Source[]
  private readonly sinks: readonly TagChangeSink[]
  private readonly deadLetters: DeadLetterSink
  private readonly wallNow: () => number
  private readonly idleAdvance: boolean
  private readonly lateness: number
  private readonly lateHorizon: number
  private readonly dedupMax: number
  private readonly dedupHorizon: number
  private readonly cacheMax: number
  private readonly cacheMaxBytes: number
  /** Mean msgpack size of the user records of recent commits: the cache's per-record size estimate. */
  private meanRecordBytes = INITIAL_RECORD_BYTES
  private readonly partitions: number
  private readonly timerScanLimit: number
  private readonly observer: EngineObserver | undefined
  private readonly lifecycle: EngineLifecycle | undefined
  /** Wall time at which the current batch started, for end-to-end latency. */
  private batchWallMs = 0

  private readonly slots: readonly OperatorSlot[]
  private readonly slotByName: ReadonlyMap<string, OperatorSlot>
  private readonly catalog: TagCatalog | undefined
  /** Every installed lane by lane key. */
  private lanes = new Map<string, TagSlot>()
  /** Strategy lanes in evaluation order (a rule after the tags it reads). */
  private strategies: readonly TagSlot[] = []
  /** The rule view's schema: operators' typed views and every tag's type. */
  private ruleSchema: RuleSchema = {}
  /** Definitions the stored users reflect, and the passes bringing them there. */
  private definitions: StoredDefinitions = { seq: 0, applied: {}, passes: [] }
  private definitionsDirty = false
  private catalogChanged = false
  /** Online tags that changed for the user being processed: strategy rules reading them re-evaluate. */
  private readonly roundTags = new Set<string>()
  /** Operators' clock-dependent view fields (absent: the operator did not say, so all of them). */
  private readonly clockFieldsOf = new Map<string, ReadonlySet<string>>()
  /** Incremented by every change `setTag` makes (emitted, quiet, silent or testing): callers compare. */
  private tagWrites = 0
  /** Operators whose tags depend on the population or the clock: re-derived by sweeps. */
  private readonly rescoreSlots: readonly OperatorSlot[]
  /** Whether any operator keeps population statistics (else the per-event path skips them). */
  private readonly hasRankedOperators: boolean
  /** The stored population statistics (per partition, a snapshot and per-commit deltas), for a fast restore. */
  private readonly populationLog: PopulationLog
  /** What each user's projection (v! key, written with every user record) holds, for sweeps and previews. */
  private readonly projection: ProjectionLayout
  /** What a sweep can decide from projections, for the strategies installed (undefined: full records only). */
  private sweepPlan: { readonly strategies: readonly TagSlot[]; readonly plan: SweepPlan | undefined } | undefined
  private readonly readProjections: boolean
  private readonly previewThreads: number
  private readonly previewWorkerMinUsers: number
  private previewPool: WorkerPool | undefined
  private sweepPool: WorkerPool | undefined
  private readonly sweepThreads: number
  private readonly sweepWorkerMinUsers: number
  private readonly projectionPagesMinUsers: number
  private readonly projectionPagesMinFresh: number
  /** The last page generation given out: generations only grow (from the wall clock), also across restarts. */
  private pageGen = 0
  /** Page builds and deletions in flight (close waits for those on this thread). */
  private readonly pageWork = new Set<Promise<unknown>>()
  /** Previews and builds reading each page generation (`<partition>:<gen>`). */
  private readonly pagesInUse = new Map<string, number>()
  /** Generations replaced or dropped, deleted once none of those reads them. */
  private readonly retiredPages: { partition: number; gen: number }[] = []
  private closing = false
  /** Wall time of the last rule preview (see updatePages). */
  private lastPreviewAt = -Infinity
  private readonly operatorEntries: Config['operators'] | undefined
  /** A sweep thread failed: sweeps stay on the engine's thread from then on. */
  private sweepThreadsFailed = false
  /**
   * Users a sweep read from the store since the last commit, with their operator states then and
   * their stored projection: when the states are still those (the sweep changed only tags), the
   * commit reuses the projection's views instead of computing them again.
   */
  private readonly sweptViews = new Map<UserRecord, { readonly ops: Readonly<Record<string, unknown>>; readonly projection: EncodedProjection }>()
  /** Rule views built from projections, per compiled rule (see `projectedView`). */
  private readonly projectedViews = new WeakMap<CompiledRule, (r: ProjectionReader) => RuleView | undefined>()
  private sweepMinutes: number | undefined
  private readonly calendar: Calendar
  private sweepStartedWallMs = 0
  private readonly dispatchByType = new Map<string, readonly OperatorSlot[]>()

  private readonly tasks = new Map<number, PartitionTask>()
  /** Population statistics of every operator that ranks users, by partition under `engine.populationScope`. */
  readonly populations: ScopedPopulations
  /** User records by store key; Map order is recency of use (LRU). */
  private readonly cache = new Map<string, UserRecord>()
  private readonly dirtyUsers = new Set<string>()
  /** Timer index writes of the next commit: key -> value (put) or null (delete). */
  private readonly timerWrites = new Map<string, Buffer | null>()
  /** History writes of the next commit: key -> encoded change (put) or null (delete). */
  private readonly historyWrites = new Map<string, Buffer | null>()
  /** Segment membership index writes of the next commit: key -> true (put) or false (delete). */
  private readonly memberWrites = new Map<string, boolean>()
  /** Users per (partition, tag, value), count key -> count: live, and as of the last commit. */
  private readonly memberCounts = new Map<string, number>()
  private readonly committedCounts = new Map<string, number>()
  private readonly dirtyCounts = new Set<string>()
  private readonly positions = new Map<string, number>()
  private readonly dirtyPositions = new Set<string>()
  /** Partitioned sources (Kafka): the engine owns the partitions they assign, and only those. */
  private readonly partitionedSources: readonly PartitionedSource[]
  /** Next offset per owned partition and topic of partitioned sources, stored under the partition. */
  private readonly partitionOffsets = new Map<number, Map<string, number>>()
  private readonly dirtyPartitionOffsets = new Set<number>()
  /** Whether a partitioned source's first assignment has been restored and started. */
  private assigned = false
  private eventsSinceCommit = 0
  private lastCommitAt = 0
  /** The commit being written while the next events are applied (at most one), and its failure. */
  private landing: Promise<void> | undefined
  private landingError: unknown
  /** Users of the commit being written: not dirty any more, but not in the store yet, so not evictable. */
  private landingUsers: ReadonlySet<string> = new Set()
  /** A commit landed since the last eviction: evict between two batches. */
  private evictDue = false
  private emittedAtIso = ''
  private lastIsoMs = NaN
  private lastIso = ''
  private stopping = false
  private running: Promise<void> | undefined
  /**
   * Per operator, the view fields the strategy rules read (undefined: all of them, when a rule uses
   * the operator's variable as a whole): what rule evaluation asks the operator's view for.
   */
  private ruleViewFields = new Map<string, ReadonlySet<string> | undefined>()
  private readonly commitListeners: CommitListener[] = []
  private opened = false

  constructor(options: EngineOptions) {
    const { config } = options
    this.config = config
    this.store = options.store
    this.sources = options.sources
    this.partitionedSources = options.sources.filter(isPartitioned)
    if (this.partitionedSources.length > 0 && options.sources.length > 1) {
      // Users hashed to a partition that another process owns would get two diverging states.
      throw new TagstreamError(ErrorCodes.CONFIG_INVALID, 'a Kafka source cannot be combined with other sources: it decides which partitions this process owns')
    }
    this.sinks = options.sinks
    this.deadLetters = options.deadLetters
    this.wallNow = options.now ?? Date.now
    this.idleAdvance = options.idleAdvance ?? false
    this.lateness = config.time.allowedLatenessMs
    this.lateHorizon = config.time.lateHorizonMs
    this.dedupMax = config.dedup.maxIds
    this.dedupHorizon = config.dedup.horizonMs
    this.cacheMax = config.engine.cacheMaxUsers
    this.cacheMaxBytes = config.engine.cacheMaxBytes
    this.partitions = config.engine.partitions
    this.timerScanLimit = options.timerScanLimit ?? DEFAULT_TIMER_SCAN_LIMIT
    this.observer = options.observer
    this.lifecycle = options.lifecycle

    this.catalog = options.catalog
    this.slots = options.operators.map((op) => ({ op, tags: [] }))
    for (const op of options.operators) if (op.viewClockFields !== undefined) this.clockFieldsOf.set(op.name, new Set(op.viewClockFields))
    this.slotByName = new Map(this.slots.map((s) => [s.op.name, s]))
    this.rescoreSlots = this.slots.filter((s) => s.op.rescore === true)
    this.hasRankedOperators = this.slots.some((s) => s.op.scoredValues !== undefined)
    this.populations = new ScopedPopulations(this.config.engine.populationScope)
    this.populationLog = new PopulationLog(this.store, this.slots.map((s) => s.op), options.populationCompaction)
    this.projection = new ProjectionLayout(this.slots.map((s) => s.op))
    this.readProjections = options.readProjections ?? true
    this.previewThreads = this.config.engine.previewThreads ?? 0
    this.previewWorkerMinUsers = options.previewWorkerMinUsers ?? WORKER_MIN_USERS
    this.sweepThreads = this.config.engine.sweepThreads ?? 0
    this.sweepWorkerMinUsers = options.sweepWorkerMinUsers ?? WORKER_MIN_USERS
    this.projectionPagesMinUsers = options.projectionPages?.minUsers ?? WORKER_MIN_USERS
    this.projectionPagesMinFresh = options.projectionPages?.minFresh ?? PAGES_MIN_FRESH
    this.operatorEntries = options.operatorEntries
    this.calendar = calendarFor(config.timeZone)
    this.installLanes(desiredLanes(this.catalog, options.operators))
    this.catalog?.onChange(() => {
      this.catalogChanged = true
    })
  }

  private countersFor(id: string, status: LaneSpec['status']): Record<TagChangeOp, number> {
    const table = status === 'online' ? this.stats.tagChangesByTag : this.stats.testingChangesByTag
    return (table[id] ??= { entered: 0, left: 0, changed: 0 })
  }

  /** Installs the lanes to evaluate from now on: operator tag lanes and compiled strategy rules. */
  private installLanes(specs: ReadonlyMap<string, LaneSpec>): void {
    this.ruleSchema = buildRuleSchema(this.slots.map((s) => s.op), this.catalog)
    const lanes = new Map<string, TagSlot>()
    const byOperator = new Map<string, TagSlot[]>()
    const strategies: TagSlot[] = []
    for (const spec of specs.values()) {
      let rule: CompiledLaneRule | undefined
      if (spec.rule !== undefined) {
        const compiled = compileLaneRule(spec.rule, this.ruleSchema, (variable) => this.clockFieldsOf.get(variable))
        if (typeof compiled === 'string') {
          // The catalog refuses such rules; one stored before an operator was removed lands here.
          process.emitWarning(`tag "${spec.id}" version ${spec.version} is not evaluated: ${compiled}`)
          continue
        }
        rule = compiled
      }
      const slot: TagSlot = {
        lane: spec.lane,
        id: spec.id,
        version: spec.version,
        emit: spec.status === 'online',
        counts: this.countersFor(spec.id, spec.status),
        reentry: spec.reentry,
        spec,
        rule,
        reads: rule?.tags ?? new Set(),
      }
      lanes.set(spec.lane, slot)
      if (rule !== undefined) strategies.push(slot)
      else if (spec.operator !== undefined) byOperator.set(spec.operator, [...(byOperator.get(spec.operator) ?? []), slot])
    }
    for (const s of this.slots) s.tags = byOperator.get(s.op.name) ?? []
    this.lanes = lanes
    this.strategies = evaluationOrder(strategies)
    this.ruleViewFields = ruleViewFieldsOf(this.strategies.map((slot) => (slot.rule as CompiledLaneRule).rule))
    // Sweeps re-derive what changes without an event: population-ranked and clock-dependent operator
    // tags, and strategy rules (they may read `rfm.recencyDays`). Once on, they stay on.
    if (this.sweepMinutes === undefined && this.config.rescore.schedule !== 'off' && (this.rescoreSlots.length > 0 || this.strategies.length > 0)) {
      const [hh, mm] = this.config.rescore.at.split(':').map(Number) as [number, number]
      this.sweepMinutes = hh * 60 + mm
      for (const task of this.tasks.values()) if (Number.isFinite(task.watermark)) task.nextSweepAt = this.nextSweepAfter(task.watermark)
    }
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Restores partition clocks and source positions from the store and opens the sources. With a
   * partitioned source, partitions are restored as they are assigned instead.
   */
  async open(): Promise<void> {
    await this.store.ensureMeta(this.partitions)
    // Projection pages of an earlier run, of every partition (one revoked then may never come back).
    await clearProjectionPages(this.store.path)
    await this.restorePartitions(this.partitionedSources.length > 0 ? [] : Array.from({ length: this.partitions }, (_, p) => p))
    this.definitions = (await this.store.readValue<StoredDefinitions>(DEFINITIONS_KEY)) ?? { seq: 0, applied: {}, passes: [] }
    for (const pass of this.definitions.passes) {
      // Passes persisted with fewer partitions cannot happen (the store pins the count); be strict anyway.
      while (pass.cursors.length < this.partitions) pass.cursors.push(undefined)
    }
    await this.reconcileDefinitions()
    for (const source of this.sources) {
      if (isPartitioned(source)) {
        await source.open(0)
        continue
      }
      const position = (await this.store.readGlobalOffset(source.name)) ?? 0
      this.positions.set(source.name, position)
      await source.open(position)
    }
    this.lastCommitAt = this.wallNow()
    this.opened = true
  }

  /** Loads the partitions' clocks, counts, interrupted sweeps and population statistics from the store. */
  private async restorePartitions(partitions: readonly number[]): Promise<void> {
    // Interrupted sweeps whose population is stored as of their instant: compactions must not fold it away.
    const sweepPopulations = new Map<number, SweepCut>()
    for (const p of partitions) {
      const clock = await this.store.readClock(p)
      this.tasks.set(p, new PartitionTask(p, clock?.maxTs ?? -Infinity, this.lateness, clock?.users ?? 0))
      if (clock?.sweepAt !== undefined && clock.sweepPopulation !== undefined) sweepPopulations.set(p, clock.sweepPopulation)
    }
    await this.populationLog.restore(partitions, this.populations, this.stats, sweepPopulations)
    for (const p of partitions) await this.ensureProjections(this.task(p))
    // Pages of an earlier run are not trusted (which users were written after them is not known): the next preview has new ones built.
    for (const p of partitions) await clearProjectionPages(this.store.path, p)
    for (const p of partitions) {
      for (const [key, count] of await this.store.readCounts(p)) {
        this.memberCounts.set(key, count)
        this.committedCounts.set(key, count)
      }
    }
    for (const p of partitions) {
      const task = this.task(p)
      const clock = await this.store.readClock(p)
      if (clock?.sweepAt !== undefined && this.sweepMinutes !== undefined) {
        // A sweep interrupted by a stop or a crash resumes where its committed cursor is, against
        // its population as of its instant, from the stored deltas it cut; where the store no
        // longer has them (partitions this process no longer holds, an older store), against the
        // population as restored.
        const cut = sweepPopulations.get(p)
        let populations: Populations | undefined
        if (cut !== undefined) {
          populations = new Populations()
          if (!(await this.populationLog.populationAt(cut, populations))) {
            populations = undefined
            process.emitWarning(`tagstream: the population of partition ${p}'s interrupted sweep cannot be rebuilt (a partition it ranked against is not held here, or its deltas were folded); it resumes against the current one`)
          }
        }
        task.sweep = {
          at: clock.sweepAt,
          populations: populations ?? this.populations.of(task.partition).snapshot(),
          ...(populations === undefined ? {} : { populationCut: cut }),
          cursor: clock.sweepCursor,
          startKey: undefined,
          wrapped: false,
        }
      }
      // A cut that no resumed sweep ranks against holds nothing (a no-op when there is none).
      if (task.sweep?.populationCut === undefined) this.populationLog.release(p)
      if (Number.isFinite(task.watermark)) task.nextSweepAt = this.nextSweepAfter(Math.max(task.watermark, clock?.sweepAt ?? -Infinity))
    }
  }

  /**
   * Acts on a partitioned source's rebalances, between two batches (so the batch in flight is
   * done). Revoked: commit, then forget the partitions' users, timers, counts and statistics, then
   * let the source release them. Assigned: restore the partitions, read their offsets from the
   * store, and start the source there.
   */
  private async handleRebalances(source: PartitionedSource): Promise<void> {
    for (let r = source.takeRebalance(); r !== undefined; r = source.takeRebalance()) {
      if (r.kind === 'revoked') {
        await this.commit()
        await this.dropPartitions(r.partitions)
        r.release()
        continue
      }
      const beyond = r.partitions.filter((p) => p >= this.partitions)
      if (beyond.length > 0) {
        throw new TagstreamError(
          ErrorCodes.CONFIG_INVALID,
          `source ${source.name} assigned partition ${beyond.join(', ')} but engine.partitions is ${this.partitions}: raise engine.partitions to the topics' partition count (for a new store)`,
        )
      }
      await this.restorePartitions(r.partitions.filter((p) => !this.tasks.has(p)))
      const offsets = new Map<number, Map<string, number>>()
      for (const p of r.partitions) {
        const byTopic = new Map<string, number>()
        for (const topic of source.topics) {
          const offset = await this.store.readPartitionOffset(p, topic)
          if (offset !== undefined) byTopic.set(topic, offset)
        }
        offsets.set(p, byTopic)
        this.partitionOffsets.set(p, new Map(byTopic))
      }
      await r.start(offsets)
      this.assigned = true
    }
  }

  /** Forgets committed partitions: what is in memory for them equals the store, which keeps it. */
  private async dropPartitions(partitions: readonly number[]): Promise<void> {
    const dropped = new Set(partitions)
    // Their sweeps, if any, go with them: the deltas they held from compaction may be folded.
    for (const p of partitions) this.populationLog.release(p)
    await this.populationLog.forget(partitions, this.populations)
    const partitionOf = (key: string): number => Number.parseInt(key.slice(1, 5), 16)
    for (const key of this.cache.keys()) if (dropped.has(partitionOf(key))) this.cache.delete(key)
    for (const key of this.memberCounts.keys()) if (dropped.has(partitionOf(key))) this.memberCounts.delete(key)
    for (const key of this.committedCounts.keys()) if (dropped.has(partitionOf(key))) this.committedCounts.delete(key)
    for (const p of partitions) {
      const pages = this.tasks.get(p)?.pages
      if (pages !== undefined) this.retirePages(p, pages.gen)
      this.tasks.delete(p)
      this.partitionOffsets.delete(p)
    }
  }

  /**
   * True once the store is open and partitions, clocks and positions are restored; with a
   * partitioned source, once its first assignment is restored and started.
   */
  get ready(): boolean {
    return this.opened && !this.stopping && (this.partitionedSources.length === 0 || this.assigned)
  }

  /**
   * Calls `listener` after every commit with the committed position of every embedded source
   * (e.g. the HTTP ingest source acknowledges requests once their records are committed), and the
   * partitioned (Kafka) sources' offsets when the commit wrote any. Counters such as
   * `stats.recordsIn` are no such mark: a batch is counted when read, and a commit may land while
   * that batch waits for its users' records.
   */
  onCommitted(listener: CommitListener): void {
    this.commitListeners.push(listener)
  }

  /** Runs until stopped (or, with `untilEnd`, until every source has ended), then commits. */
  run(options: RunOptions): Promise<void> {
    this.running = this.loop(options)
    return this.running
  }

  /** Stops intake; the current batch finishes and is committed. Resolves when the loop has ended. */
  async stop(): Promise<void> {
    this.stopping = true
    await this.running
  }

  async close(): Promise<void> {
    // A commit still being written (the loop ended on an error) lands before the sinks close.
    await this.landed()
    await this.populationLog.idle()
    this.closing = true
    await Promise.all([this.previewPool?.close(), this.sweepPool?.close()])
    // A page build on this thread stops at its next chunk (`closing`), before the store closes.
    await this.pagesSettled()
    for (const source of this.sources) await source.close()
    for (const sink of this.sinks) await sink.close()
    await this.deadLetters.close()
  }

  private async loop(options: RunOptions): Promise<void> {
    const { batchSize, commitIntervalMs, commitEvents } = this.config.engine
    const ended = new Set<Source>()
    const waitMs = this.sources.length > 1 ? 10 : 100
    while (!this.stopping) {
      if (this.landingError !== undefined) throw this.landingError
      // Never during a batch: the batch's users were loaded into the cache before it is applied.
      if (this.evictDue) {
        this.evictDue = false
        this.evict()
      }
      let received = 0
      for (const source of this.sources) {
        // A catalog change takes effect before the next batch: events after it see the new definitions.
        if (this.catalogChanged) {
          this.catalogChanged = false
          await this.reconcileDefinitions()
        }
        if (ended.has(source) || this.stopping) continue
        if (isPartitioned(source)) await this.handleRebalances(source)
        const records = await source.poll(batchSize, waitMs)
        if (records === null) {
          ended.add(source)
          continue
        }
        if (records.length === 0) continue
        received += records.length
        const t0 = performance.now()
        await this.processRecords(source, records)
        this.observer?.batch(performance.now() - t0, records.length)
      }
      // With nothing received, a step may wait for a sweep worker thread: else the loop would spin.
      await this.sweepStep(received === 0)
      await this.definitionStep()
      const now = this.wallNow()
      if (received === 0 && this.idleAdvance) await this.advanceIdlePartitions(now)
      // A sweep's backlog (see commitBacklogFull) only: events are bounded by commitEvents, and
      // waiting for the commit in flight would hold up the events behind it.
      const full = this.eventsSinceCommit >= commitEvents || (this.sweeping && this.commitBacklogFull)
      // Caught up (no source had a record this round) with no background pass running: commit now,
      // not at the interval, so that a quiet stream's last changes reach the sinks (SSE pushed,
      // files fsynced, Kafka acknowledged) and its state is durable one poll after it, not a second.
      const caughtUp = received === 0 && !this.sweeping && this.definitions.passes.length === 0
      if (full || ((caughtUp || now - this.lastCommitAt >= commitIntervalMs) && this.hasUncommitted())) {
        // One commit in flight at a time; with `commitEvents` applied since, or a sweep's backlog of
        // users to commit, wait for it (memory bound).
        if (full) await this.awaitLanding()
        if (this.landing === undefined) this.commitInBackground()
      }
      if (options.untilEnd && ended.size === this.sources.length && !this.sweeping && this.definitions.passes.length === 0) break
      if (ended.size === this.sources.length && received === 0 && !this.sweeping && this.definitions.passes.length === 0) {
        // Every source ended but we run until stopped (e.g. a finite demo): idle politely.
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    await this.commit()
  }

  /** Whether any partition has a sweep in progress (replays finish them before they end). */
  get sweeping(): boolean {
    for (const t of this.tasks.values()) if (t.sweep !== undefined) return true
    return false
  }

  private hasUncommitted(): boolean {
    return this.dirtyUsers.size > 0 || this.dirtyPositions.size > 0 || this.dirtyPartitionOffsets.size > 0 || this.timerWrites.size > 0 || this.memberWrites.size > 0 || this.definitionsDirty
  }

  // ---------------------------------------------------------------- tag definitions (catalog changes)

  /**
   * Brings the installed lanes in line with the catalog, and starts a definition pass for every lane
   * whose evaluation changed (with stored users to re-evaluate). Runs between batches.
   */
  private async reconcileDefinitions(): Promise<void> {
    const desired = desiredLanes(this.catalog, this.slots.map((s) => s.op))
    const applied = this.definitions.applied
    const changed = [...new Set([...Object.keys(applied), ...desired.keys()])].filter((lane) => !sameEvaluation(applied[lane], desired.get(lane))).sort()
    this.installLanes(desired)
    if (changed.length === 0) return
    // A pass walks the stored users: every user must be in the store before it starts.
    if (this.opened && (this.hasUncommitted() || this.landing !== undefined)) await this.commit()
    // With a partitioned source, partitions are restored as they are assigned: look in the store.
    const hasUsers = this.userCount > 0 || (this.partitionedSources.length > 0 && (await this.storeHoldsUsers()))
    for (const lane of changed) {
      const to = desired.get(lane)
      const from = applied[lane]
      if (to === undefined) delete applied[lane]
      else applied[lane] = to
      // A newer change of the lane supersedes a pass still running: users it has not reached get the new one.
      this.definitions.passes = this.definitions.passes.filter((p) => p.lane !== lane)
      if (!hasUsers) continue
      const pass: DefinitionPass = {
        seq: ++this.definitions.seq,
        lane,
        id: (to ?? from)?.id as string,
        to,
        fromVersion: from?.version,
        mode: this.modeOf(to, from),
        cursors: new Array<string | null | undefined>(this.partitions).fill(undefined),
      }
      this.definitions.passes.push(pass)
      this.stats.definitionPassesStarted++
      this.lifecycle?.definitionPassStarted?.({ tag: pass.id, lane, version: to?.version ?? null, mode: pass.mode })
    }
    this.definitionsDirty = true
  }

  private async storeHoldsUsers(): Promise<boolean> {
    for (let p = 0; p < this.partitions; p++) if ((await this.store.keysIn(userRange(p), 1)).length > 0) return true
    return false
  }

  /** Announce or silent, as the publication (or, for a removal, the retirement) was recorded. */
  private modeOf(to: LaneSpec | undefined, from: LaneSpec | undefined): PublishMode {
    if (to !== undefined) return to.status === 'online' ? (to.mode ?? 'silent') : 'silent'
    if (from === undefined || from.status !== 'online' || this.catalog === undefined || !this.catalog.has(from.id)) return 'silent'
    try {
      const retired = this.catalog.get(from.id, from.version)
      const last = retired.transitions[retired.transitions.length - 1]
      return last?.from === 'online' && last.mode !== undefined ? last.mode : 'silent'
    } catch {
      return 'silent'
    }
  }

  /** Whether a definition pass is running (replays finish them before they end). */
  get publishing(): boolean {
    return this.definitions.passes.length > 0
  }

  /** Applies every pending definition pass to one user, oldest first (at most once each). */
  private catchUp(task: PartitionTask, rec: UserRecord, key: string): void {
    for (const pass of this.definitions.passes) {
      const dv = (rec.dv ??= {})
      if ((dv[pass.lane] ?? 0) >= pass.seq) continue
      dv[pass.lane] = pass.seq
      this.dirtyUsers.add(key)
      this.stats.usersReevaluated++
      this.applyPass(task, rec, pass)
    }
  }

  private applyPass(task: PartitionTask, rec: UserRecord, pass: DefinitionPass): void {
    const now = task.watermark
    if (!Number.isFinite(now)) return
    const cause: TagChangeCause = { kind: 'definition', version: pass.to?.version ?? pass.fromVersion ?? 1 }
    const announce = pass.mode === 'announce'
    this.roundTags.clear()
    const slot = this.lanes.get(pass.lane)
    if (pass.to === undefined || slot === undefined) {
      // Removed: the user leaves the tag (online lane) or its testing value is dropped.
      const online = !pass.lane.includes('~')
      const removed: LaneTarget = {
        lane: pass.lane,
        id: pass.id,
        version: pass.fromVersion ?? 1,
        emit: online,
        counts: this.countersFor(pass.id, online ? 'online' : 'testing'),
        reentry: { policy: 'always' },
      }
      this.setTag(rec, removed, undefined, now, cause, announce)
    } else {
      const ctx = new CallContext(rec, now, this.config.timeZone, this.populations.of(rec.p))
      let next: DerivedTag | undefined | typeof KEEP
      if (slot.rule !== undefined) next = this.evaluateRule(slot, rec, ctx, new Map())
      else {
        const opSlot = this.slotByName.get(slot.spec.operator ?? '')
        const state = opSlot === undefined ? undefined : rec.ops[opSlot.op.name]
        if (opSlot === undefined || state === undefined) next = undefined
        else {
          ctx.operator = opSlot.op.name
          try {
            next = opSlot.op.deriveTags(state, ctx)[slot.id]
          } catch {
            this.stats.operatorErrors++
            next = KEEP
          }
        }
      }
      if (next !== KEEP) this.setTag(rec, slot, next, now, cause, announce)
    }
    // Strategy tags reading the changed tag follow it.
    if (this.roundTags.size > 0) this.evaluateStrategies(rec, new CallContext(rec, now, this.config.timeZone, this.populations.of(rec.p)), NO_OPERATORS, false, now, cause)
  }

  /** One chunk of the oldest definition pass, partition by partition. Called between batches. */
  private async definitionStep(): Promise<void> {
    const pass = this.definitions.passes[0]
    if (pass === undefined) return
    // The pass reads users from the store: everything applied before must be there.
    await this.awaitLanding()
    // Only the partitions this engine owns (a partitioned source assigns them); the others are done for it.
    const p = pass.cursors.findIndex((c, i) => c !== null && this.tasks.has(i))
    if (p < 0) {
      this.definitions.passes.shift()
      this.definitionsDirty = true
      this.stats.definitionPassesCompleted++
      if (this.definitions.passes.length === 0) this.lifecycle?.definitionPassesFinished?.()
      return
    }
    const task = this.task(p)
    const chunk = this.config.rescore.chunkUsers
    const keys = await this.store.scanUserKeys(userRange(p), pass.cursors[p] ?? undefined, chunk)
    const missing = keys.filter((k) => !this.cache.has(k))
    const fromStore = await this.store.usersByKey(missing)
    if (this.definitions.passes[0] !== pass) return // superseded while reading
    this.emittedAtIso = new Date(this.wallNow()).toISOString()
    for (const key of keys) {
      let rec = this.cache.get(key)
      if (rec === undefined) {
        rec = fromStore.get(key)
        if (rec === undefined || (rec.dv?.[pass.lane] ?? 0) >= pass.seq) continue
        this.cache.set(key, rec)
      }
      this.catchUp(task, rec, key)
    }
    pass.cursors[p] = keys.length < chunk ? null : (keys[keys.length - 1] as string)
    this.definitionsDirty = true
  }

  // ---------------------------------------------------------------- batch processing

  /** Decodes, validates, prefetches and applies one batch of one source's records. */
  async processRecords(source: Source, records: readonly SourceRecord[]): Promise<void> {
    const wallNow = this.wallNow()
    this.batchWallMs = wallNow
    this.emittedAtIso = new Date(wallNow).toISOString()
    this.stats.recordsIn += records.length
    const events: InputEvent[] = []
    const eventPartitions: number[] = []
    const eventRecords: SourceRecord[] = []
    const eventKeys: string[] = []
    for (const record of records) {
      const result = (record.decode ?? source.decode)(record.value, wallNow)
      if (!result.ok) {
        this.deadLetter(source.name, record, result.rejection, result.eventId, result.userId)
        continue
      }
      const partition = record.partition ?? partitionFor(result.event.userId, this.partitions)
      events.push(result.event)
      eventPartitions.push(partition)
      eventRecords.push(record)
      eventKeys.push(userKey(partition, result.event.userId))
    }
    const yieldsInBatch = !isPartitioned(source)
    let next = 0
    while (next < events.length) {
      const limit = await this.prefetch(events, eventPartitions, eventKeys, next)
      if (limit === next) {
        const task = this.task(eventPartitions[next] as number)
        if (task.sweep !== undefined && (events[next] as InputEvent).ts - this.lateness >= (task.nextSweepAt as number)) {
          // The next sweep instant is due while this one's pass is not done: finish it first, so
          // that every sweep sees every user at its own instant.
          while (task.sweep !== undefined) await this.sweepStepFor(task, true)
          continue
        }
        // More timers are due before this event than one scan reads: fire the loaded ones first.
        this.advanceClock(task, task.scannedUpTo + this.lateness)
        continue
      }
      for (let i = next; i < limit; i++) {
        this.applyEvent(this.task(eventPartitions[i] as number), events[i] as InputEvent, eventKeys[i] as string, source.name, eventRecords[i] as SourceRecord, wallNow)
        // Let HTTP requests in between slices of a large batch: without it their p99 is the time
        // one whole batch takes to apply. One macrotask per slice, never per event. Not with a
        // partitioned (Kafka) source: it was written for rebalance callbacks that arrive between
        // batches, and its HTTP surface serves reads only.
        if (yieldsInBatch && (i - next) % APPLY_SLICE === APPLY_SLICE - 1 && i + 1 < limit) await yieldToEventLoop()
      }
      next = limit
    }
    if (isPartitioned(source)) {
      this.advancePartitionOffsets(records)
    } else {
      const last = records[records.length - 1]
      if (last !== undefined) {
        this.positions.set(source.name, last.nextOffset)
        this.dirtyPositions.add(source.name)
      }
    }
    this.eventsSinceCommit += records.length
    // The batch's loads may have passed the bound: the clean ones go now, not only at the next commit.
    this.evict()
  }

  private advancePartitionOffsets(records: readonly SourceRecord[]): void {
    let partition = -1
    let byTopic: Map<string, number> | undefined
    for (const record of records) {
      const p = record.partition as number
      if (p !== partition) {
        partition = p
        byTopic = this.partitionOffsets.get(p)
        if (byTopic === undefined) this.partitionOffsets.set(p, (byTopic = new Map()))
        this.dirtyPartitionOffsets.add(p)
      }
      ;(byTopic as Map<string, number>).set(record.topic as string, record.nextOffset)
    }
  }

  private task(partition: number): PartitionTask {
    let task = this.tasks.get(partition)
    if (task === undefined) {
      task = new PartitionTask(partition, -Infinity, this.lateness, 0)
      this.tasks.set(partition, task)
    }
    return task
  }

  /**
   * Loads into the cache every user record the events from `from` on will touch, and every timer
   * that will fire on the way. Returns the index up to which events can be applied without
   * touching the store (all of them, unless more timers are due than one scan reads).
   */
  private async prefetch(events: readonly InputEvent[], partitions: readonly number[], keys: readonly string[], from: number): Promise<number> {
    // Only the events before the next sweep cut are prefetched: a replay cut at every day
    // boundary must not walk the rest of the batch again each time.
    let limit = this.sweepLimit(events, partitions, from)
    const wanted = new Set<string>()
    const maxTsByPartition = new Map<number, number>()
    for (let i = from; i < limit; i++) {
      const ev = events[i] as InputEvent
      const p = partitions[i] as number
      const key = keys[i] as string
      if (!this.touch(key)) wanted.add(key)
      const m = maxTsByPartition.get(p)
      if (m === undefined || ev.ts > m) maxTsByPartition.set(p, ev.ts)
    }
    // Timers: every partition whose clock will move reads its index up to the new watermark.
    for (const [p, maxTs] of maxTsByPartition) {
      const task = this.task(p)
      const target = Math.max(task.maxTs, maxTs) - this.lateness
      const horizon = await this.loadTimersUpTo(task, target, wanted)
      if (horizon < target) {
        // Too many timers due at once: stop before the first event that would move this clock
        // past what is loaded; the caller fires what is loaded and prefetches again.
        for (let i = from; i < limit; i++) {
          if (partitions[i] === p && (events[i] as InputEvent).ts - this.lateness > horizon) {
            limit = i
            break
          }
        }
      }
    }
    await this.loadUsers(wanted)
    return limit
  }

  /**
   * The first event (from `from` on) that would start a partition's next sweep while one is still
   * running (started before or earlier in the batch); events.length when there is none.
   */
  private sweepLimit(events: readonly InputEvent[], partitions: readonly number[], from: number): number {
    if (this.sweepMinutes === undefined) return events.length
    const state = new Map<number, { active: boolean; next: number; watermark: number }>()
    for (let i = from; i < events.length; i++) {
      const p = partitions[i] as number
      const w = (events[i] as InputEvent).ts - this.lateness
      let s = state.get(p)
      if (s === undefined) {
        const task = this.task(p)
        // Scheduled from the first clock, as advanceClock would: decided here so both agree.
        task.nextSweepAt ??= this.nextSweepAfter(Math.max(task.watermark, w))
        s = { active: task.sweep !== undefined, next: task.nextSweepAt, watermark: task.watermark }
        state.set(p, s)
      }
      if (w <= s.watermark) continue
      s.watermark = w
      if (w < s.next) continue
      if (s.active) return i
      let at = s.next
      for (let n = this.nextSweepAfter(at); n <= w; n = this.nextSweepAfter(at)) at = n
      s.next = this.nextSweepAfter(at)
      s.active = true
    }
    return events.length
  }

  /** Moves timers due at or before `target` into the partition's heap; returns the clock they cover. */
  private async loadTimersUpTo(task: PartitionTask, target: number, wanted: Set<string>): Promise<number> {
    if (target > task.scannedUpTo && target < task.storedTimersFrom) {
      // The store has nothing due up to the target: only timers not written yet can be.
      task.scannedUpTo = target
      this.takePendingTimers(task)
    } else if (target > task.scannedUpTo) {
      // A commit may land while the store is read: its timers are then taken from `landingTimers`,
      // which stays until this scan is done (a timer found both ways fires once: the second entry
      // is stale when it comes, see fireTimer).
      task.timerScans++
      let entries: TimerEntry[]
      let covered = target
      let storedFrom = -Infinity
      try {
        const [found, nextDue] = await Promise.all([
          this.store.scanTimers(task.partition, task.scannedUpTo, target, this.timerScanLimit),
          this.store.nextTimerDue(task.partition, target),
        ])
        entries = found
        storedFrom = nextDue
        if (entries.length === this.timerScanLimit) {
          // The scan stopped early: what follows what it covers is not known.
          storedFrom = -Infinity
          // A full scan may have stopped inside one due instant: cover only the instants before the
          // last one, unless that would cover nothing, then read that one instant whole.
          const lastDue = (entries[entries.length - 1] as TimerEntry).due
          if (lastDue - 1 > task.scannedUpTo) {
            covered = lastDue - 1
            entries = entries.filter((e) => e.due <= covered)
          } else {
            covered = lastDue
            entries = await this.store.scanTimers(task.partition, task.scannedUpTo, covered, Number.MAX_SAFE_INTEGER)
          }
        }
      } finally {
        task.timerScans--
      }
      for (const e of entries) task.heap.push(e)
      task.scannedUpTo = covered
      this.takePendingTimers(task)
      // The scan may have read the store before a commit in flight landed: its timers past the
      // scan are still in `landingTimers` (kept while a scan runs), and count as stored.
      task.storedTimersFrom = Math.min(storedFrom, task.landingTimers?.peek()?.due ?? Infinity)
      if (task.landedTimers && task.timerScans === 0) {
        task.landingTimers = undefined
        task.landedTimers = false
      }
    }
    // Every timer in the heap that will fire needs its user loaded.
    task.heap.forEachDue(Math.min(target, task.scannedUpTo), (e) => {
      const key = userKey(task.partition, e.userId)
      if (!this.cache.has(key)) wanted.add(key)
    })
    return task.scannedUpTo
  }

  /** Moves the timers not in the store yet (uncommitted, or in the commit in flight) due by `scannedUpTo` into the heap. */
  private takePendingTimers(task: PartitionTask): void {
    const covered = task.scannedUpTo
    for (const pending of [task.uncommitted, task.landingTimers]) {
      while (pending !== undefined && pending.size > 0 && (pending.peek() as TimerEntry).due <= covered) {
        task.heap.push(pending.pop() as TimerEntry)
      }
    }
  }

  /** Cache lookup that refreshes recency; true on a hit. */
  private touch(key: string): boolean {
    const rec = this.cache.get(key)
    if (rec === undefined) return false
    this.cache.delete(key)
    this.cache.set(key, rec)
    this.stats.cacheHits++
    return true
  }

  private async loadUsers(wanted: Set<string>): Promise<void> {
    if (wanted.size === 0) return
    const keys = [...wanted]
    const records = await this.store.getUsers(keys)
    this.stats.cacheMisses += keys.length
    for (let i = 0; i < keys.length; i++) {
      const rec = records[i]
      if (rec !== undefined) this.cache.set(keys[i] as string, rec)
    }
  }

  private userRecord(task: PartitionTask, userId: string, key: string): UserRecord {
    let rec = this.cache.get(key)
    if (rec === undefined) {
      rec = newUserRecord(userId, task.partition)
      // Created after the sweep's instant: nothing of it existed to re-score.
      if (task.sweep !== undefined) rec.rs = task.sweep.at
      this.cache.set(key, rec)
      this.stats.usersCreated++
      task.users++
      if (this.sweepMinutes !== undefined) task.created.add(key)
      // Nothing of it existed when a running definition pass started: it is current with every pass.
      if (this.definitions.passes.length > 0) rec.dv = Object.fromEntries(this.definitions.passes.map((p) => [p.lane, p.seq]))
      task.dirty = true
    }
    return rec
  }

  // ---------------------------------------------------------------- the per-event path (synchronous)

  private applyEvent(task: PartitionTask, ev: InputEvent, key: string, sourceName: string, record: SourceRecord, wallNow: number): void {
    task.lastEventWallMs = wallNow
    if (ev.ts > task.maxTs) task.lagAtMax = wallNow - ev.ts
    if (ev.ts - this.lateness > task.watermark) this.advanceClock(task, ev.ts)
    if (ev.ts < task.watermark - this.lateHorizon) {
      this.deadLetter(sourceName, record, {
        code: RejectReasons.TOO_LATE,
        message: `event time ${new Date(ev.ts).toISOString()} is older than the watermark ${new Date(task.watermark).toISOString()} minus the late horizon`,
        field: 'ts',
      }, ev.eventId, ev.userId)
      return
    }
    const rec = this.userRecord(task, ev.userId, key)
    // Definition changes first: everything evaluated after a publication uses the new definition.
    if (this.definitions.passes.length > 0) this.catchUp(task, rec, key)
    if (task.sweep !== undefined && (rec.rs ?? -Infinity) < task.sweep.at) this.rescoreUser(task, rec, key)
    if (this.isDuplicate(rec, ev)) {
      this.stats.duplicates++
      return
    }
    const slots = this.dispatch(ev.type)
    if (slots.length === 0) {
      this.dirtyUsers.add(key)
      this.stats.eventsApplied++
      return
    }
    // Apply every operator first; commit their states and timers only if none throws, so a
    // failing operator leaves the user exactly as before the event.
    const now = task.watermark
    const ctx = new CallContext(rec, now, this.config.timeZone, this.populations.of(rec.p))
    const changed: Change[] = []
    try {
      for (const slot of slots) {
        const name = slot.op.name
        const stored = rec.ops[name]
        const before = stored ?? slot.op.initialState()
        ctx.operator = name
        const after = slot.op.onEvent(before, ev, ctx)
        if (after !== before || stored === undefined) changed.push({ slot, before: stored, state: after, tags: NO_TAGS })
      }
      // The user's new values join the population before its tags are derived from it.
      this.movePopulations(changed, false, task.partition)
      try {
        for (const c of changed) {
          ctx.operator = c.slot.op.name
          c.tags = c.slot.op.deriveTags(c.state, ctx)
        }
      } catch (err) {
        this.movePopulations(changed, true, task.partition)
        throw err
      }
    } catch (err) {
      this.stats.operatorErrors++
      this.deadLetter(sourceName, record, {
        code: RejectReasons.OPERATOR_ERROR,
        message: `operator "${ctx.operator}" failed: ${(err as Error).message}`,
      }, ev.eventId, ev.userId)
      return
    }
    this.rememberId(rec, ev)
    for (const c of changed) rec.ops[c.slot.op.name] = c.state
    this.applyTimerOps(task, rec, ctx.timerOps, -Infinity)
    const cause: TagChangeCause = { kind: 'event', eventId: ev.eventId }
    this.roundTags.clear()
    for (const c of changed) this.diffTags(rec, c.slot, c.tags, ev.ts, cause)
    if (this.strategies.length > 0) this.evaluateStrategies(rec, ctx, new Set(changed.map((c) => c.slot.op.name)), false, ev.ts, cause)
    this.dirtyUsers.add(key)
    this.stats.eventsApplied++
  }

  /**
   * Moves the users' contributions to population statistics from `before` to `state` (or back).
   * All or nothing: every operator's values are computed first, and a move that throws is undone.
   * Every move, undos included, is journaled for the partition's next population delta.
   */
  private movePopulations(changed: readonly Change[], undo: boolean, partition: number): void {
    if (!this.hasRankedOperators) return
    const journal = this.populationLog.journal(partition)
    const populations = this.populations.of(partition)
    const moves: { op: string; from: Readonly<Record<string, number>> | undefined; to: Readonly<Record<string, number>> | undefined }[] = []
    for (const c of changed) {
      const scored = c.slot.op.scoredValues
      if (scored === undefined) continue
      const from = c.before === undefined ? undefined : scored.call(c.slot.op, c.before)
      const to = scored.call(c.slot.op, c.state)
      moves.push(undo ? { op: c.slot.op.name, from: to, to: from } : { op: c.slot.op.name, from, to })
    }
    for (let i = 0; i < moves.length; i++) {
      const m = moves[i] as (typeof moves)[number]
      try {
        populations.update(m.op, m.from, m.to, journal)
      } catch (err) {
        for (let j = i - 1; j >= 0; j--) {
          const done = moves[j] as (typeof moves)[number]
          populations.update(done.op, done.to, done.from, journal)
        }
        throw err
      }
    }
  }

  private dispatch(type: string): readonly OperatorSlot[] {
    let slots = this.dispatchByType.get(type)
    if (slots === undefined) {
      slots = this.slots.filter((s) => s.op.eventTypes === undefined || s.op.eventTypes.includes(type))
      this.dispatchByType.set(type, slots)
    }
    return slots
  }

  private isDuplicate(rec: UserRecord, ev: InputEvent): boolean {
    return this.dedupMax > 0 && rec.ids.includes(ev.eventId)
  }

  private rememberId(rec: UserRecord, ev: InputEvent): void {
    if (this.dedupMax === 0) return
    rec.ids.push(ev.eventId)
    rec.idTs.push(ev.ts)
    // Forget ids beyond the count bound, and ids older than the horizon behind the newest.
    const newest = Math.max(ev.ts, rec.idTs[rec.idTs.length - 2] ?? ev.ts)
    let drop = Math.max(0, rec.ids.length - this.dedupMax)
    while (drop < rec.ids.length - 1 && (rec.idTs[drop] as number) < newest - this.dedupHorizon) drop++
    if (drop > 0) {
      rec.ids.splice(0, drop)
      rec.idTs.splice(0, drop)
    }
  }

  /** Advances a partition's clock to `ts` (minus lateness), firing every timer due on the way, in order. */
  private advanceClock(task: PartitionTask, ts: number): void {
    if (ts > task.maxTs) task.maxTs = ts
    const watermark = task.maxTs - this.lateness
    if (watermark <= task.watermark) return
    task.dirty = true
    if (task.nextSweepAt === undefined) task.nextSweepAt = this.nextSweepAfter(watermark)
    const heap = task.heap
    for (;;) {
      const next = heap.peek()
      if (next === undefined || next.due > watermark) break
      if (task.nextSweepAt <= next.due) {
        // A sweep instant comes before this timer: it starts first, in event-time order.
        this.startSweep(task, task.nextSweepAt, watermark)
        continue
      }
      heap.pop()
      // Fire in due order; the clock an operator sees is the timer's own due time.
      task.watermark = Math.max(task.watermark, next.due)
      this.fireTimer(task, next)
    }
    if (task.nextSweepAt <= watermark) this.startSweep(task, task.nextSweepAt, watermark)
    task.watermark = watermark
  }

  // ---------------------------------------------------------------- re-scoring sweeps

  /** The first scheduled sweep instant strictly after `ts` (Infinity when sweeps are off). */
  private nextSweepAfter(ts: number): number {
    const minutes = this.sweepMinutes
    if (minutes === undefined || !Number.isFinite(ts)) return Infinity
    let day = this.calendar.dayIndex(ts)
    let at = this.calendar.instantOf(day, minutes)
    while (at <= ts) at = this.calendar.instantOf(++day, minutes)
    return at
  }

  /**
   * Starts the sweep of the latest scheduled instant at or before `upTo` (a clock that jumps over
   * several days sweeps once, at the last). A sweep still running is superseded: its pass goes on
   * from where it is, wrapping around, so that every user is reached.
   */
  private startSweep(task: PartitionTask, from: number, upTo: number): void {
    let at = from
    for (let next = this.nextSweepAfter(at); next <= upTo; next = this.nextSweepAfter(at)) at = next
    const previous = task.sweep
    // The population at the instant is also kept in the store (the deltas up to here of every
    // partition it spans), so that a crash before the pass ends resumes it against the same one.
    const populationCut = this.hasRankedOperators
      ? this.populationLog.cutForSweep(task.partition, this.populations.shared === undefined ? [task.partition] : this.tasks.keys())
      : undefined
    task.sweep = {
      at,
      populations: this.populations.of(task.partition).snapshot(),
      ...(populationCut === undefined ? {} : { populationCut }),
      cursor: previous?.cursor,
      startKey: previous?.cursor,
      wrapped: false,
    }
    task.nextSweepAt = this.nextSweepAfter(at)
    task.dirty = true
    this.stats.sweepsStarted++
    if (previous === undefined) this.sweepStartedWallMs = this.wallNow()
    // Users created before the instant but not in the store yet: the pass, which reads the store,
    // may go by their keys before their commit lands, so they are swept now, at the instant. (Their
    // records are dirty or landing, so cached.) Users created from here on start swept (`rs`).
    for (const key of task.created) {
      const rec = this.cache.get(key)
      if (rec !== undefined && (rec.rs ?? -Infinity) < at) this.rescoreUser(task, rec, key)
    }
    this.lifecycle?.sweepStarted?.(task.partition, at)
  }

  /** Re-derives a user's rescore tags at the sweep's instant, against the sweep's population. */
  private rescoreUser(task: PartitionTask, rec: UserRecord, key: string): void {
    const sweep = task.sweep as Sweep
    if (this.definitions.passes.length > 0) this.catchUp(task, rec, key)
    // `rs` is written only with a change: re-scoring a user whose stored `rs` is older again (after
    // an eviction or a restart) gives the same result, so most users cost no write at all.
    rec.rs = sweep.at
    const writesBefore = this.tagWrites
    this.stats.usersRescored++
    const ctx = new CallContext(rec, sweep.at, this.config.timeZone, sweep.populations)
    this.roundTags.clear()
    for (const slot of this.rescoreSlots) {
      const state = rec.ops[slot.op.name]
      if (state === undefined) continue
      ctx.operator = slot.op.name
      let tags: DerivedTags
      try {
        tags = slot.op.deriveTags(state, ctx)
      } catch {
        this.stats.operatorErrors++
        continue
      }
      this.diffTags(rec, slot, tags, sweep.at, RESCORE_CAUSE)
    }
    // Rules may read clock-dependent fields: every strategy tag is re-evaluated at the sweep's instant.
    if (this.strategies.length > 0) this.evaluateStrategies(rec, ctx, NO_OPERATORS, true, sweep.at, RESCORE_CAUSE)
    if (this.tagWrites !== writesBefore) this.dirtyUsers.add(key)
  }

  /** One chunk of every running sweep's background pass. Called between batches. */
  private async sweepStep(mayWait = true): Promise<void> {
    for (const task of this.tasks.values()) {
      // Background work waits while the users it dirtied wait for a commit (the loop commits now).
      if (this.commitBacklogFull) return
      await this.sweepStepFor(task, mayWait)
    }
  }

  /**
   * Whether the users waiting for a commit (dirty, or in the commit in flight) are a quarter of the
   * cache bound: during a sweep, the loop then commits at once, and sweep steps wait for it. They
   * stay cached until they land, and a sweep re-scoring from records dirties users far faster than
   * commits every `commitIntervalMs` write them: a catch-up sweep over 100,000 users decided in a
   * worker thread held 35,000 dirty users, twice the cache bound in the cache, and peaked at
   * 1,299 MiB RSS; with this bound at 928 MiB (a half: 1,139), against 845 MiB for the same sweep on
   * the engine thread.
   */
  private get commitBacklogFull(): boolean {
    return this.dirtyUsers.size + this.landingUsers.size >= Math.max(this.config.rescore.chunkUsers, this.cacheBoundUsers >> 2)
  }

  private async sweepStepFor(task: PartitionTask, mayWait: boolean): Promise<void> {
    if (task.sweep === undefined) return
    // The pass reads the store and checks the cache: no commit lands while a step runs, so the
    // two are one view of every user.
    await this.awaitLanding()
    const started = performance.now()
    try {
      const sweep = task.sweep
      if (sweep === undefined) return
      if (this.readProjections && task.projected && this.definitions.passes.length === 0) {
        const plan = this.currentSweepPlan()
        if (plan !== undefined) {
          if (this.sweepsInThreads()) await this.sweepStepInThread(task, sweep, plan, mayWait)
          else {
            task.sweepScan = undefined
            await this.sweepStepFromProjections(task, sweep, plan)
          }
          return
        }
      }
      // Another path from here: a thread's part of the pass no longer follows the cursor.
      task.sweepScan = undefined
      const range = userRange(task.partition)
      const chunk = this.config.rescore.chunkUsers
      // Keys first: users in the cache (most, in a busy engine) are not read or decoded again.
      const keys = await this.store.scanUserKeys(range, sweep.cursor, chunk)
      const missing = keys.filter((k) => !this.cache.has(k))
      const fromStore = await this.store.usersByKey(missing)
      // The task's sweep may have been superseded while the store was read: leave it to the next step.
      if (task.sweep !== sweep) return
      this.emittedAtIso = new Date(this.wallNow()).toISOString()
      for (const key of keys) {
        if (passBackAtStart(sweep, key)) {
          this.finishSweep(task)
          break
        }
        sweep.cursor = key
        this.rescoreFromRecord(task, sweep, key, fromStore)
      }
      this.endSweepChunk(task, sweep, keys.length < chunk)
    } finally {
      this.stats.sweepStepMs += performance.now() - started
    }
  }

  /**
   * One chunk of a sweep's pass read from the users' projections: a user whose projection shows
   * that the sweep changes nothing is done without reading its record; the others are re-scored
   * from their full records, in key order, as `rescoreUser` always does. A cached user is decided
   * from its projection too when it is clean (no change since its last commit landed, so the
   * stored projection is its record's); a dirty or landing one is re-scored from its record.
   */
  private async sweepStepFromProjections(task: PartitionTask, sweep: Sweep, plan: SweepPlan): Promise<void> {
    const chunk = this.config.rescore.chunkUsers
    const entries = await this.store.projectionsAfter(task.partition, sweep.cursor, chunk)
    const keys: string[] = new Array(entries.length)
    // Per entry: rule evaluations of a user the sweep leaves as it is; -1: re-score the record; -2: already swept.
    const outcome = new Int32Array(entries.length)
    const full: string[] = []
    const projections = new Map<string, EncodedProjection>()
    const reader = new ProjectionReader(this.projection)
    const decider = this.sweepDecider(sweep, plan)
    for (let i = 0; i < entries.length; i++) {
      const [pkey, value] = entries[i] as [string, Buffer]
      const key = userKeyOfProjection(pkey)
      keys[i] = key
      const cached = this.cache.get(key)
      if (cached !== undefined && !this.isClean(key)) {
        outcome[i] = -1
        continue
      }
      reader.load(value)
      // A cached user's `rs` may be newer than its stored one (a sweep that changed nothing).
      if (((cached === undefined ? reader.rs : cached.rs) ?? -Infinity) >= sweep.at) {
        outcome[i] = -2
        continue
      }
      const evaluations = decider.decide(reader, key.slice(USER_ID_OFFSET))
      outcome[i] = evaluations
      if (evaluations < 0 && cached === undefined) {
        full.push(key)
        projections.set(key, value)
      }
    }
    const fromStore = await this.store.usersByKey(full)
    // The task's sweep may have been superseded while the store was read: leave it to the next step.
    if (task.sweep !== sweep) return
    this.emittedAtIso = new Date(this.wallNow()).toISOString()
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      if (passBackAtStart(sweep, key)) {
        this.finishSweep(task)
        break
      }
      sweep.cursor = key
      let rec = this.cache.get(key)
      const evaluations = outcome[i] as number
      if (evaluations >= 0 && (rec === undefined || this.isClean(key))) {
        // Exactly what rescoreUser would have counted, and nothing it would have written.
        this.stats.usersRescored++
        this.stats.usersRescoredFromProjections++
        this.stats.ruleEvaluations += evaluations
        // As rescoreUser leaves a user it does not change: swept, in memory only.
        if (rec !== undefined) rec.rs = sweep.at
        continue
      }
      if (rec === undefined) {
        rec = fromStore.get(key)
        if (rec === undefined || (rec.rs ?? -Infinity) >= sweep.at) continue
        this.cache.set(key, rec)
        // Re-scoring changes tags, not operator states: its commit can reuse the projected views.
        this.sweptViews.set(rec, { ops: { ...rec.ops }, projection: projections.get(key) as EncodedProjection })
      } else if ((rec.rs ?? -Infinity) >= sweep.at) continue
      this.rescoreUser(task, rec, key)
    }
    this.endSweepChunk(task, sweep, entries.length < chunk)
  }

  /** Re-scores a user from its record (cached, else as just read), unless the sweep has done it already. */
  private rescoreFromRecord(task: PartitionTask, sweep: Sweep, key: string, fromStore: ReadonlyMap<string, UserRecord>): void {
    let rec = this.cache.get(key)
    if (rec === undefined) {
      rec = fromStore.get(key)
      if (rec === undefined || (rec.rs ?? -Infinity) >= sweep.at) return
      this.cache.set(key, rec)
    } else if ((rec.rs ?? -Infinity) >= sweep.at) return
    this.rescoreUser(task, rec, key)
  }

  /** Whether a user's stored record (and projection) is its current state: no change since its last commit landed. */
  private isClean(key: string): boolean {
    return !this.dirtyUsers.has(key) && !this.landingUsers.has(key)
  }

  /** Whether sweeps decide users in worker threads: configured, operators known to the threads, a store worth it. */
  private sweepsInThreads(): boolean {
    return this.sweepThreads > 0 && this.operatorEntries !== undefined && !this.sweepThreadsFailed && this.userCount >= this.sweepWorkerMinUsers
  }

  /**
   * One step of a sweep's pass decided in a worker thread (see sweep-scan.ts): starts the thread's
   * part of the pass (from the cursor to the end, or, wrapped around, to where the pass started),
   * and once it is back, takes chunks of it: counts the users it cleared and re-scores the others
   * from their records, in key order. Waits for the thread only with `mayWait`.
   */
  private async sweepStepInThread(task: PartitionTask, sweep: Sweep, plan: SweepPlan, mayWait: boolean): Promise<void> {
    let scan = task.sweepScan
    // A superseded sweep's, or another plan's (the catalog changed): its decisions no longer hold.
    if (scan !== undefined && (scan.sweep !== sweep || scan.plan !== plan)) scan = undefined
    scan ??= task.sweepScan = this.startSweepScan(task, sweep, plan)
    if (scan.result === undefined && scan.error === undefined) {
      if (!mayWait) return
      await scan.done
      if (task.sweep !== sweep || task.sweepScan !== scan) return
    }
    if (scan.result === undefined) {
      // The thread failed (logged through the lifecycle, counted): this and later sweeps stay on the engine's thread.
      this.sweepThreadsFailed = true
      this.stats.sweepThreadErrors++
      task.sweepScan = undefined
      await this.sweepStepFromProjections(task, sweep, plan)
      return
    }
    // Chunks the thread cleared cost only a count: a step takes chunks until it has as many users to
    // re-score from records as a step on the engine's thread reads, or the thread's part is done.
    const chunks = scan.result.chunks
    const budget = this.config.rescore.chunkUsers
    const from = scan.next
    let undecided = 0
    while (scan.next < chunks.length && (scan.next === from || undecided < budget)) undecided += (chunks[scan.next++] as SweepChunk).undecided.length
    const taken = chunks.slice(from, scan.next)
    const keys = taken.flatMap((c) => c.undecided)
    const fromStore = keys.length === 0 ? new Map<string, UserRecord>() : await this.store.usersByKey(keys.filter((key) => !this.cache.has(key)))
    if (task.sweep !== sweep) return
    this.emittedAtIso = new Date(this.wallNow()).toISOString()
    for (const chunk of taken) {
      // Exactly what rescoreUser would have counted for the users the thread cleared, and nothing written.
      this.stats.usersRescored += chunk.unchanged
      this.stats.usersRescoredFromProjections += chunk.unchanged
      this.stats.ruleEvaluations += chunk.evaluations
      for (const key of chunk.undecided) this.rescoreFromRecord(task, sweep, key, fromStore)
      sweep.cursor = chunk.lastKey
    }
    const done = scan.next >= chunks.length
    if (done) task.sweepScan = undefined
    this.endSweepChunk(task, sweep, done)
  }

  /** Hands the rest of a partition's pass to a sweep worker thread. */
  private startSweepScan(task: PartitionTask, sweep: Sweep, plan: SweepPlan): SweepScanInFlight {
    const prefix = partitionPrefix(task.partition)
    const skip: string[] = []
    // Users whose state is newer than the store: the thread must not decide them from their projections.
    for (const users of [this.dirtyUsers, this.landingUsers]) for (const key of users) if (key.startsWith(prefix)) skip.push(key.slice(USER_ID_OFFSET))
    const job: SweepJob = {
      kind: 'sweep',
      location: this.store.path,
      layoutId: this.projection.id,
      schema: this.ruleSchema,
      operators: this.operatorEntries as Config['operators'],
      timeZone: this.config.timeZone,
      at: sweep.at,
      populations: (sweep.shared ??= sweep.populations.toShared()),
      rescored: this.rescoreSlots.map((slot, i) => ({ op: slot.op.name, scoredIndex: plan.rescored[i] as number, lanes: slot.tags.map(decisionLane) })),
      rules: plan.rules.map((slot) => ({ lane: decisionLane(slot), valueType: slot.spec.valueType, expression: (slot.rule as CompiledLaneRule).rule.expression })),
      partition: task.partition,
      after: sweep.wrapped ? undefined : sweep.cursor,
      through: sweep.wrapped ? sweep.startKey : undefined,
      skip,
      chunk: this.config.rescore.chunkUsers,
    }
    const pool = (this.sweepPool ??= new WorkerPool(this.sweepThreads))
    this.stats.sweepScansInThreads++
    const scan: SweepScanInFlight = { sweep, plan, next: 0, result: undefined, error: undefined, done: Promise.resolve() }
    scan.done = pool.submit(job).then(
      (result) => {
        scan.result = result
      },
      (err: unknown) => {
        scan.error = err
        this.lifecycle?.sweepThreadFailed?.(err)
      },
    )
    return scan
  }

  /** After a chunk of a sweep's pass: at the end of the key space, wrap around once, then finish. */
  private endSweepChunk(task: PartitionTask, sweep: Sweep, atEnd: boolean): void {
    if (task.sweep !== sweep) return
    task.dirty = true
    if (!atEnd) return
    if (sweep.startKey !== undefined && !sweep.wrapped) {
      sweep.wrapped = true
      sweep.cursor = undefined
    } else {
      this.finishSweep(task)
    }
  }

  private finishSweep(task: PartitionTask): void {
    const sweep = task.sweep as Sweep
    task.sweep = undefined
    task.dirty = true
    this.populationLog.release(task.partition)
    this.stats.sweepsCompleted++
    if (![...this.tasks.values()].some((t) => t.sweep !== undefined)) this.stats.lastSweepMs = this.wallNow() - this.sweepStartedWallMs
    this.lifecycle?.sweepFinished?.(task.partition, sweep.at)
  }

  /**
   * Gives every stored user of a partition a projection in this engine's layout, when the store
   * was written without them (an older version) or with another layout (operators changed): one
   * pass over the partition's records at open, then the partition clock records the layout.
   */
  private async ensureProjections(task: PartitionTask): Promise<void> {
    const clock = await this.store.readClock(task.partition)
    if (clock === undefined || clock.proj === this.projection.id) return
    task.projected = false
    let ops: WriteOp[] = []
    for await (const rec of this.store.iterateUsers(task.partition)) {
      ops.push(this.projectionWrite(rec, task.watermark))
      if (ops.length >= PROJECTION_BATCH) {
        await this.store.commit(ops, false)
        ops = []
      }
    }
    ops.push({ type: 'put', key: clockKey(task.partition), value: this.store.encode({ ...clock, proj: this.projection.id }) })
    await this.store.commit(ops, true)
    task.projected = true
  }

  /** The put of a user's projection at the partition clock `clock` (written with the user record). */
  private projectionWrite(rec: UserRecord, clock: number): WriteOp {
    let projection: EncodedProjection
    const swept = this.sweptViews.get(rec)
    if (swept !== undefined && this.projection.sameViews(rec, swept.ops, swept.projection)) {
      return { type: 'put', key: projectionKey(rec.p, rec.u), value: this.projection.withTags(rec, swept.projection) }
    }
    try {
      const timeZone = this.config.timeZone
      projection = this.projection.project(rec, clock, (op, state, fields) => {
        // Projected fields never depend on the population (see ProjectionLayout): an empty one
        // spares the views' rank queries.
        const ctx = new CallContext(rec, clock, timeZone, NO_POPULATIONS)
        ctx.operator = op.name
        return (op.view as NonNullable<Operator['view']>)(state, ctx, fields)
      })
    } catch {
      // An operator's view failed: a projection that never holds sends sweeps and previews to the record.
      projection = this.projection.unheld(rec)
    }
    return { type: 'put', key: projectionKey(rec.p, rec.u), value: projection }
  }

  /**
   * What sweeps decide from projections for the installed strategies: the re-scoring operators'
   * tags from their population values, and the rules a sweep re-evaluates (clock-dependent ones)
   * from projected view fields. Undefined when one of them needs the full record.
   */
  private currentSweepPlan(): SweepPlan | undefined {
    if (this.sweepPlan?.strategies === this.strategies) return this.sweepPlan.plan
    let plan: SweepPlan | undefined
    const rescored = this.rescoreSlots.map((slot) => this.projection.rescored.findIndex((r) => r.op === slot.op))
    const rules = this.strategies.filter((slot) => (slot.rule as CompiledLaneRule).clockDependent)
    if (!rescored.includes(-1) && rules.every((slot) => this.projects((slot.rule as CompiledLaneRule).rule))) plan = { rescored, rules }
    this.sweepPlan = { strategies: this.strategies, plan }
    return plan
  }

  /** The sweep's decisions from projections under `plan` (one decider per sweep and plan). */
  private sweepDecider(sweep: Sweep, plan: SweepPlan): SweepDecider {
    if (sweep.decider?.plan === plan) return sweep.decider.decider
    const decider = new SweepDecider(
      sweep.at,
      this.config.timeZone,
      (op, dim) => sweep.populations.get(op, dim),
      this.rescoreSlots.map((slot, i) => ({ op: slot.op, scoredIndex: plan.rescored[i] as number, lanes: slot.tags })),
      plan.rules.map((slot) => {
        const rule = (slot.rule as CompiledLaneRule).rule
        return { lane: slot, valueType: slot.spec.valueType, rule, view: this.projectedView(rule) }
      }),
    )
    sweep.decider = { plan, decider }
    return decider
  }

  /** Whether a rule reads only what projections hold (tags, and projected view fields). */
  private projects(rule: CompiledRule): boolean {
    return rule.wholeVariables.every((v) => v === 'tags') && rule.fields.every(([variable, field]) => variable === 'tags' || this.projection.has(variable, field))
  }

  /** The builder of a rule's view from projections (only for rules `projects` accepts), one per compiled rule. */
  private projectedView(rule: CompiledRule): (r: ProjectionReader) => RuleView | undefined {
    let build = this.projectedViews.get(rule)
    if (build === undefined) {
      build = projectedViewBuilder(ruleViewPlan(rule, this.ruleSchema), this.projection)
      this.projectedViews.set(rule, build)
    }
    return build
  }

  private fireTimer(task: PartitionTask, entry: TimerEntry): void {
    const key = userKey(task.partition, entry.userId)
    const rec = this.cache.get(key)
    if (rec === undefined) {
      throw new TagstreamError(ErrorCodes.ENGINE_STATE, `timer of user ${entry.userId} fired without its state loaded`)
    }
    // The user's record is the truth; index entries of moved or cancelled timers are stale.
    if (rec.timers[entry.timer] !== entry.due) return
    // Definition changes first: everything evaluated after a publication uses the new definition.
    if (this.definitions.passes.length > 0) this.catchUp(task, rec, key)
    if (task.sweep !== undefined && (rec.rs ?? -Infinity) < task.sweep.at) this.rescoreUser(task, rec, key)
    delete rec.timers[entry.timer]
    this.timerWrites.set(timerKey(task.partition, entry.due, entry.userId, entry.timer), null)
    this.dirtyUsers.add(key)
    const sep = entry.timer.indexOf(TIMER_KEY_SEP)
    const opName = entry.timer.slice(0, sep)
    const name = entry.timer.slice(sep + 1)
    const slot = this.slotByName.get(opName)
    if (slot === undefined || slot.op.onTimer === undefined) return // operator removed from config since
    this.stats.timersFired++
    const ctx = new CallContext(rec, entry.due, this.config.timeZone, this.populations.of(rec.p))
    ctx.operator = opName
    const stored = rec.ops[opName]
    const before = stored ?? slot.op.initialState()
    const change: Change = { slot, before: stored, state: before, tags: NO_TAGS }
    try {
      change.state = slot.op.onTimer(before, { name, dueMs: entry.due }, ctx)
      if (change.state === before) return
      this.movePopulations([change], false, task.partition)
      try {
        change.tags = slot.op.deriveTags(change.state, ctx)
      } catch (err) {
        this.movePopulations([change], true, task.partition)
        throw err
      }
    } catch {
      this.stats.operatorErrors++
      return
    }
    const after = change.state
    const tags = change.tags
    rec.ops[opName] = after
    // A timer set from a timer can not be due before it: that would fire in a loop at one instant.
    this.applyTimerOps(task, rec, ctx.timerOps, entry.due + 1)
    const cause: TagChangeCause = { kind: 'timer', name: `${opName}.${name}` }
    this.roundTags.clear()
    this.diffTags(rec, slot, tags, entry.due, cause)
    if (this.strategies.length > 0) this.evaluateStrategies(rec, ctx, new Set([opName]), false, entry.due, cause)
  }

  private applyTimerOps(task: PartitionTask, rec: UserRecord, ops: TimerOp[] | undefined, minDue: number): void {
    if (ops === undefined) return
    for (const op of ops) {
      const key = timerKeyOf(op.operator, op.name)
      const old = rec.timers[key]
      if (op.due === undefined) {
        if (old === undefined) continue
        delete rec.timers[key]
        this.timerWrites.set(timerKey(task.partition, old, rec.u, key), null)
        continue
      }
      const due = Math.max(op.due, minDue)
      if (old === due) continue
      if (old !== undefined) this.timerWrites.set(timerKey(task.partition, old, rec.u, key), null)
      rec.timers[key] = due
      this.timerWrites.set(timerKey(task.partition, due, rec.u, key), this.store.encode([rec.u, key]))
      const entry: TimerEntry = { due, userId: rec.u, timer: key }
      if (due <= task.scannedUpTo) task.heap.push(entry)
      else task.uncommitted.push(entry)
    }
  }

  private diffTags(rec: UserRecord, slot: OperatorSlot, derived: DerivedTags, atMs: number, cause: TagChangeCause): void {
    for (const tag of slot.tags) this.setTag(rec, tag, derived[tag.id], atMs, cause, true)
  }

  /**
   * Re-evaluates the strategy tags whose inputs changed for this user (an operator state they read, or
   * a tag they read that changed in this round), or all of them (`force`, in sweeps). Returns whether
   * `tagWrites` counts what changed.
   */
  private evaluateStrategies(rec: UserRecord, ctx: CallContext, changedOps: ReadonlySet<string>, force: boolean, atMs: number, cause: TagChangeCause): void {
    // Operator views are computed once per user round, and only if some rule needs evaluating.
    let views: Map<string, ViewPair> | undefined
    for (const slot of this.strategies) {
      const rule = slot.rule as CompiledLaneRule
      // Sweeps (`force`) re-evaluate only rules that read the clock or the population; others follow
      // their inputs, tags changed by the sweep included.
      if (!(force && rule.clockDependent) && !intersects(rule.operators, changedOps) && !intersects(rule.tags, this.roundTags)) continue
      const next = this.evaluateRule(slot, rec, ctx, (views ??= new Map()))
      if (next === KEEP) continue
      this.setTag(rec, slot, next, atMs, cause, true)
    }
  }

  /** A strategy tag's value for a user: undefined when the user does not have it, KEEP on an evaluation error. */
  private evaluateRule(slot: TagSlot, rec: UserRecord, ctx: CallContext, views: Map<string, ViewPair>): DerivedTag | undefined | typeof KEEP {
    const compiled = slot.rule as CompiledLaneRule
    const rule = compiled.rule
    this.stats.ruleEvaluations++
    const view = compiled.view(this.viewSource(rec, ctx, views, this.ruleViewFields))
    // A field the rule reads is missing and nothing in the rule could make up for it: no value.
    if (view === undefined) return undefined
    const result = rule.evaluate(view)
    if (!result.ok) {
      // An input the user does not have (no purchase yet, no such tag): the rule gives no value.
      if (result.code === 'no_such_field') return undefined
      this.stats.ruleErrorsByTag[slot.id] = (this.stats.ruleErrorsByTag[slot.id] ?? 0) + 1
      return KEEP
    }
    if (result.value === false) return undefined
    if (typeof result.value !== JS_TYPES[slot.spec.valueType]) {
      this.stats.ruleErrorsByTag[slot.id] = (this.stats.ruleErrorsByTag[slot.id] ?? 0) + 1
      return KEEP
    }
    const evidence: Record<string, unknown> = {}
    for (const [variable, field] of rule.fields) {
      const v = variable === 'tags' ? rec.tags[field]?.[0] : views.get(variable)?.[field]
      evidence[`${variable}.${field}`] = v === undefined ? null : v
    }
    return { value: result.value, evidence }
  }

  /** Where rule views of one user come from: operator views computed once per round (memoized in `views`). */
  private viewSource(rec: UserRecord, ctx: CallContext, views: Map<string, ViewPair>, fields: ReadonlyMap<string, ReadonlySet<string> | undefined>): RuleViewSource {
    return {
      operatorView: (variable) => {
        let plain = views.get(variable)
        if (plain === undefined) {
          const opSlot = this.slotByName.get(variable)
          const state = rec.ops[variable]
          plain = {}
          if (opSlot !== undefined && state !== undefined) {
            ctx.operator = variable
            plain = opSlot.op.view === undefined ? (state as Record<string, unknown>) : opSlot.op.view(state, ctx, fields.get(variable))
          }
          views.set(variable, plain)
        }
        return plain
      },
      tagValue: (id) => rec.tags[id]?.[0],
      allTags: () => tagValuesOf(rec),
    }
  }

  /** Whether a user may enter a tag with an announced `entered` now, under the tag's re-entry policy. */
  private mayEnter(rec: UserRecord, slot: LaneTarget, atMs: number): boolean {
    const policy = slot.reentry
    if (policy.policy === 'always') return true
    const lastLeft = rec.re?.[slot.id]
    if (lastLeft === undefined) return true
    if (policy.policy === 'once') return false
    return lastLeft === -1 || atMs - lastLeft >= policy.days * DAY_MS
  }

  /**
   * Sets one lane's value for a user and emits the change. Testing lanes only count. Online lanes
   * keep the membership index, the re-entry bookkeeping and the history; `announce` false (a silent
   * publication or retirement) changes the state without emitting. Returns whether anything changed.
   */
  private setTag(rec: UserRecord, slot: LaneTarget, next: DerivedTag | undefined, atMs: number, cause: TagChangeCause, announce: boolean): boolean {
    const to: TagValue | null = next === undefined ? null : next.value
    if (!slot.emit) {
      const from = rec.tt?.[slot.id] ?? null
      if (from === to) return false
      if (to !== null) (rec.tt ??= {})[slot.id] = to
      else if (rec.tt !== undefined) {
        delete rec.tt[slot.id]
        if (Object.keys(rec.tt).length === 0) delete rec.tt
      }
      if (from !== null) this.addCount(countKey(rec.p, slot.lane, encodeTagValue(from)), -1)
      if (to !== null) this.addCount(countKey(rec.p, slot.lane, encodeTagValue(to)), 1)
      this.tagWrites++
      this.stats.testingChanges++
      slot.counts[from === null ? 'entered' : to === null ? 'left' : 'changed']++
      return true
    }
    const current = rec.tags[slot.id]
    const from: TagValue | null = current === undefined ? null : current[0]
    if (from === to) {
      // A new version that gives the same value: no change to announce, but the profile shows the version.
      if (current !== undefined && current[2] !== slot.version) {
        current[2] = slot.version
        this.tagWrites++
      }
      return false
    }
    this.tagWrites++
    this.roundTags.add(slot.id)
    let quiet = current?.[3] === 1
    if (slot.reentry.policy !== 'always') {
      if (from === null) {
        quiet = !this.mayEnter(rec, slot, atMs)
        if (rec.re?.[slot.id] === undefined) (rec.re ??= {})[slot.id] = -1
      } else if (to === null) (rec.re ??= {})[slot.id] = atMs
    } else if (from === null) quiet = false
    if (to === null) delete rec.tags[slot.id]
    else rec.tags[slot.id] = quiet ? [to, atMs, slot.version, 1] : [to, atMs, slot.version]
    this.moveMembership(rec, slot.id, from, to)
    if (quiet) {
      if (from === null) this.stats.reentrySuppressed[slot.id] = (this.stats.reentrySuppressed[slot.id] ?? 0) + 1
      return true
    }
    if (!announce) return true
    const seq = ++rec.seq
    const change: TagChange = {
      id: changeId(rec.u, slot.id, seq),
      userId: rec.u,
      tag: slot.id,
      op: from === null ? 'entered' : to === null ? 'left' : 'changed',
      from,
      to,
      tagVersion: slot.version,
      at: this.isoOf(atMs),
      emittedAt: this.emittedAtIso,
      cause,
      evidence: next?.evidence ?? {},
      seq,
    }
    this.stats.tagChanges++
    slot.counts[change.op]++
    this.recordHistory(rec, change, atMs)
    if (cause.kind === 'event') this.observer?.endToEnd(this.batchWallMs - atMs)
    for (const sink of this.sinks) sink.write(change)
    return true
  }

  /** ISO-8601 of an event time: a user's changes, and a sweep's, mostly share one instant. */
  private isoOf(ms: number): string {
    if (ms !== this.lastIsoMs) {
      this.lastIsoMs = ms
      this.lastIso = isoString(ms)
    }
    return this.lastIso
  }

  /** Keeps the user's last `history.perUser` changes, compactly, written with the commit. */
  private recordHistory(rec: UserRecord, change: TagChange, atMs: number): void {
    const keep = this.config.history.perUser
    if (keep === 0) return
    const stored: StoredChange = [change.tag, change.op, change.from, change.to, change.tagVersion, atMs, this.batchWallMs, change.cause, change.evidence]
    this.historyWrites.set(historyKey(rec.p, rec.u, change.seq), this.store.encode(stored))
    if (change.seq > keep) this.historyWrites.set(historyKey(rec.p, rec.u, change.seq - keep), null)
  }

  /** The user's last tag changes, newest first, as of the last commit. */
  async history(userId: string, limit = this.config.history.perUser): Promise<TagChange[]> {
    const rec = await this.findRecord(userId)
    if (rec === undefined) return []
    const entries = await this.store.entriesIn(historyRange(rec.p, userId), Math.max(0, limit), true)
    return entries.map(([key, value]) => {
      const seq = Number.parseInt(key.slice(key.length - 12), 16)
      const [tag, op, from, to, tagVersion, atMs, emittedMs, cause, evidence] = this.store.decode<StoredChange>(value)
      return {
        id: changeId(userId, tag, seq),
        userId,
        tag,
        op,
        from,
        to,
        tagVersion,
        at: new Date(atMs).toISOString(),
        emittedAt: new Date(emittedMs).toISOString(),
        cause,
        evidence,
        seq,
      }
    })
  }

  private async findRecord(userId: string): Promise<UserRecord | undefined> {
    for (const p of this.tasks.keys()) {
      const rec = this.cache.get(userKey(p, userId))
      if (rec !== undefined) return rec
    }
    return this.store.findUser(userId, this.tasks.keys())
  }

  /** Keeps the segment membership index and the per-value counts in step with a tag change. */
  private moveMembership(rec: UserRecord, tag: string, from: TagValue | null, to: TagValue | null): void {
    if (from !== null) {
      const v = encodeTagValue(from)
      this.memberWrites.set(memberKey(rec.p, tag, v, rec.u), false)
      this.addCount(countKey(rec.p, tag, v), -1)
    }
    if (to !== null) {
      const v = encodeTagValue(to)
      this.memberWrites.set(memberKey(rec.p, tag, v, rec.u), true)
      this.addCount(countKey(rec.p, tag, v), 1)
    }
  }

  private addCount(key: string, delta: number): void {
    this.memberCounts.set(key, (this.memberCounts.get(key) ?? 0) + delta)
    this.dirtyCounts.add(key)
  }

  private deadLetter(source: string, record: SourceRecord, reason: Rejection, eventId?: string, userId?: string): void {
    this.stats.invalid[reason.code] = (this.stats.invalid[reason.code] ?? 0) + 1
    const dl: DeadLetter = {
      reason,
      // A Kafka record is found again by its topic, partition and offset.
      coordinates: { source: record.topic ?? source, partition: record.partition ?? 0, offset: record.offset },
      raw: record.value.toString('base64'),
      truncated: record.truncatedFrom !== undefined,
      rejectedAt: this.emittedAtIso,
      ...(eventId !== undefined ? { eventId } : {}),
      ...(userId !== undefined ? { userId } : {}),
    }
    this.deadLetters.write(dl)
  }

  // ---------------------------------------------------------------- clocks without events

  /** Live runs: a partition with no events for `idleAdvanceMs` follows the wall clock. */
  async advanceIdlePartitions(wallNow: number): Promise<void> {
    const idleMs = this.config.time.idleAdvanceMs
    if (idleMs === 0) return
    for (const task of this.tasks.values()) {
      if (task.maxTs === -Infinity) continue
      if (wallNow - task.lastEventWallMs < idleMs) continue
      // Only a stream that was live when it went quiet follows the wall clock: a replayed history,
      // or a demo's simulated time, must not have its clock jump to today.
      if (task.lagAtMax > this.config.time.idleAdvanceMaxLagMs) continue
      const target = wallNow - idleMs
      if (target - this.lateness <= task.watermark) continue
      await this.advanceTo(task, target)
    }
  }

  /** Advances one partition's clock to `ts` (as an event of that time would), firing due timers. */
  async advanceTo(task: PartitionTask | number, ts: number): Promise<void> {
    const t = typeof task === 'number' ? this.task(task) : task
    this.emittedAtIso = new Date(this.wallNow()).toISOString()
    for (;;) {
      const wanted = new Set<string>()
      const covered = await this.loadTimersUpTo(t, ts - this.lateness, wanted)
      await this.loadUsers(wanted)
      const step = Math.min(ts, covered + this.lateness)
      this.advanceClock(t, step)
      if (step >= ts) break
    }
  }

  // ---------------------------------------------------------------- commit

  /**
   * The commit protocol: 1. sinks flush (durable or acknowledged), 2. one atomic store batch with
   * dirty users, timer index changes, partition clocks and source positions. A crash before 2
   * replays from the previous positions and regenerates the same changes with the same ids.
   *
   * `commit()` resolves when everything applied so far is in the store. The run loop instead
   * commits in the background (`commitInBackground`): the batch is taken at once and written while
   * the next events are applied, so a commit's flush and fsync (tens of ms) do not hold up the
   * events behind it. What stays correct while a commit is in flight: its users stay cached until
   * it lands (`landingUsers`, eviction only between batches), its timers are found in
   * `landingTimers`, users it created stay in `task.created`, and sweeps and definition passes,
   * which read users from the store, wait for it to land first.
   */
  async commit(): Promise<void> {
    // A background commit that failed was reported when it failed: its error is rethrown, not reported again.
    await this.awaitLanding()
    try {
      await this.startCommit()
    } catch (err) {
      this.lifecycle?.commitFailed?.(err)
      throw err
    }
    this.evictDue = false
    this.evict()
  }

  /** Starts a commit of everything applied so far; the run loop goes on while it is written. */
  private commitInBackground(): void {
    const landing = this.startCommit()
    this.landing = landing
    landing.then(
      () => {
        if (this.landing === landing) this.landing = undefined
      },
      (err: unknown) => {
        if (this.landing === landing) this.landing = undefined
        this.landingError ??= err
        this.lifecycle?.commitFailed?.(err)
      },
    )
  }

  /** Waits for the commit in flight, if any; rethrows a background commit's failure. */
  private async awaitLanding(): Promise<void> {
    await this.landed()
    if (this.landingError !== undefined) throw this.landingError
  }

  /** Resolves once no commit is in flight, whatever became of it. */
  private async landed(): Promise<void> {
    while (this.landing !== undefined) await this.landing.catch(() => undefined)
  }

  /**
   * Takes everything dirty into one commit, synchronously (the sinks' flushes start here too, so
   * they cover exactly the changes applied so far), and returns the promise of it landing.
   */
  private startCommit(): Promise<void> {
    const started = this.wallNow()
    const t0 = performance.now()
    const flushes = [...this.sinks.map((s) => s.flush()), this.deadLetters.flush()]
    const ops: WriteOp[] = []
    let recordBytes = 0
    for (const key of this.dirtyUsers) {
      const rec = this.cache.get(key)
      if (rec === undefined) continue
      const value = this.store.encode(rec)
      recordBytes += value.length
      ops.push({ type: 'put', key, value })
    }
    // Half of the estimate follows each commit: it tracks a workload whose states grow, smoothly.
    if (ops.length > 0) this.meanRecordBytes = (this.meanRecordBytes + recordBytes / ops.length) / 2
    for (const key of this.dirtyUsers) {
      const rec = this.cache.get(key)
      if (rec === undefined) continue
      const task = this.task(rec.p)
      ops.push(this.projectionWrite(rec, task.watermark))
      // The pages (and the pages being built) no longer hold this user's projection.
      task.pages?.fresh.add(rec.u)
      task.pagesBuild?.fresh.add(rec.u)
    }
    // The population moves of the same events: snapshot + deltas stay equal to the records.
    const populationDeltas = this.populationLog.take()
    for (const op of populationDeltas.ops) ops.push(op)
    for (const [key, value] of this.timerWrites) {
      ops.push(value === null ? { type: 'del', key } : { type: 'put', key, value })
    }
    for (const task of this.tasks.values()) {
      if (!task.dirty) continue
      const clock: PartitionClock = { maxTs: task.maxTs, users: task.users, proj: this.projection.id }
      if (task.sweep !== undefined) {
        clock.sweepAt = task.sweep.at
        if (task.sweep.populationCut !== undefined) clock.sweepPopulation = task.sweep.populationCut
        // A pass that has wrapped restarts from the beginning after a restart (harmless: done users are skipped).
        if (!task.sweep.wrapped && task.sweep.cursor !== undefined) clock.sweepCursor = task.sweep.cursor
      }
      ops.push({ type: 'put', key: clockKey(task.partition), value: this.store.encode(clock) })
    }
    for (const name of this.dirtyPositions) {
      ops.push({ type: 'put', key: globalOffsetKey(name), value: this.store.encode(this.positions.get(name)) })
    }
    if (this.definitionsDirty) ops.push({ type: 'put', key: DEFINITIONS_KEY, value: this.store.encode(this.definitions) })
    const offsetsCommitted = this.dirtyPartitionOffsets.size > 0
    for (const p of this.dirtyPartitionOffsets) {
      for (const [topic, offset] of this.partitionOffsets.get(p) ?? []) {
        ops.push({ type: 'put', key: partitionOffsetKey(p, topic), value: this.store.encode(offset) })
      }
    }
    for (const [key, put] of this.memberWrites) ops.push(put ? { type: 'put', key, value: EMPTY } : { type: 'del', key })
    for (const [key, value] of this.historyWrites) ops.push(value === null ? { type: 'del', key } : { type: 'put', key, value })
    const counts: [key: string, count: number][] = []
    for (const key of this.dirtyCounts) {
      const n = this.memberCounts.get(key) ?? 0
      counts.push([key, n])
      ops.push(n === 0 ? { type: 'del', key } : { type: 'put', key, value: this.store.encode(n) })
    }
    // What the commit holds, as of now: the run loop may change all of it while it is written.
    const positions = new Map(this.positions)
    const partitionOffsets = offsetsCommitted ? new Map([...this.partitionOffsets].map(([p, byTopic]) => [p, new Map(byTopic)])) : undefined
    const landingUsers = new Set(this.dirtyUsers)
    const created = [...this.tasks.values()].map((task) => ({ task, keys: [...task.created] }))
    for (const task of this.tasks.values()) {
      task.dirty = false
      if (task.landedTimers && task.timerScans === 0) {
        task.landingTimers = undefined
        task.landedTimers = false
      }
      if (task.uncommitted.size > 0) {
        // These go to the store now: a scan can no longer skip their dues.
        const first = (task.uncommitted.peek() as TimerEntry).due
        if (first < task.storedTimersFrom) task.storedTimersFrom = first
        if (task.landingTimers === undefined) task.landingTimers = task.uncommitted
        else for (let e = task.uncommitted.pop(); e !== undefined; e = task.uncommitted.pop()) task.landingTimers.push(e)
        task.uncommitted = new TimerHeap()
      }
    }
    this.landingUsers = landingUsers
    // The sweep's stored views were used by the projections above.
    this.sweptViews.clear()
    this.dirtyUsers.clear()
    this.definitionsDirty = false
    this.timerWrites.clear()
    this.dirtyPositions.clear()
    this.dirtyPartitionOffsets.clear()
    this.memberWrites.clear()
    this.historyWrites.clear()
    this.dirtyCounts.clear()
    this.eventsSinceCommit = 0
    this.lastCommitAt = this.wallNow()

    const land = async (): Promise<void> => {
      await Promise.all(flushes)
      await this.store.commit(ops, this.config.engine.syncWrites)
      this.populationLog.landed(populationDeltas)
      // In the store now: scans find these users and timers, and counts read from there agree.
      for (const [key, n] of counts) {
        if (n === 0) this.committedCounts.delete(key)
        else this.committedCounts.set(key, n)
        if ((this.memberCounts.get(key) ?? 0) === 0 && !this.dirtyCounts.has(key)) this.memberCounts.delete(key)
      }
      for (const { task, keys } of created) for (const key of keys) task.created.delete(key)
      for (const task of this.tasks.values()) {
        if (task.landingTimers === undefined) continue
        if (task.timerScans === 0) task.landingTimers = undefined
        else task.landedTimers = true
      }
      if (this.landingUsers === landingUsers) this.landingUsers = new Set()
      // Landed: a page build started now reads this commit's users from the store.
      for (const task of this.tasks.values()) this.updatePages(task)
      this.evictDue = true
      this.stats.commits++
      this.stats.lastCommitMs = this.wallNow() - started
      this.observer?.commit(performance.now() - t0)
      for (const listener of this.commitListeners) listener(positions, partitionOffsets)
      if (partitionOffsets !== undefined) for (const source of this.partitionedSources) source.committed(partitionOffsets)
    }
    return land()
  }

  /**
   * Builds, rebuilds or drops a partition's projection pages. A partition large enough gets pages
   * when a preview reads it without any: previews come in bursts (an operator editing a rule), and
   * pages built at every start would cost a pass over the store, and more memory while a catch-up
   * runs, for previews that may not come. Once a tenth of the users they hold were written since (a
   * preview reads those from their `v!` values, a LevelDB read each), they are rebuilt if a preview
   * read them in the last PAGES_KEEP_MS, else dropped, with the set of fresh users, until the next
   * preview: a rebuild reads and writes the whole partition (some 0.7 s of a thread per 250,000
   * users here), which a busy stream would otherwise pay every tenth of its users whether anyone
   * previews or not.
   */
  private updatePages(task: PartitionTask): void {
    if (task.pagesBuild !== undefined || task.pagesFailed || !this.readProjections || !task.projected) return
    const pages = task.pages
    if (pages === undefined) {
      if (task.pagesWanted && task.users >= this.projectionPagesMinUsers) this.buildPages(task)
      return
    }
    if (pages.fresh.size < Math.max(this.projectionPagesMinFresh, pages.users * PAGES_STALE_FRACTION)) return
    if (this.wallNow() - this.lastPreviewAt <= PAGES_KEEP_MS) {
      this.buildPages(task)
      return
    }
    task.pages = undefined
    task.pagesWanted = false
    this.retirePages(task.partition, pages.gen)
  }

  /**
   * Builds a new generation of a partition's projection pages, in a preview thread when there are
   * some, else here between batches; previews read it once it is complete. The users of the commit
   * in flight and of every later one are fresh: the build reads the store after this, so it may
   * have their projections or not.
   */
  private buildPages(task: PartitionTask): void {
    if (this.closing) return
    const p = task.partition
    const gen = (this.pageGen = Math.max(this.pageGen + 1, Date.now()))
    const prefix = partitionPrefix(p)
    const build: PageSet = { gen, users: 0, fresh: new Set() }
    for (const key of this.landingUsers) if (key.startsWith(prefix)) build.fresh.add(key.slice(USER_ID_OFFSET))
    task.pagesBuild = build
    // From the current pages when there are some: they stay until the build has read them.
    const current = task.pages
    const from = current === undefined ? undefined : { gen: current.gen, fresh: [...current.fresh] }
    if (from !== undefined) this.pinPages(p, from.gen)
    const built =
      this.previewThreads > 0
        ? (this.previewPool ??= new WorkerPool(this.previewThreads)).submit({ kind: 'pages', location: this.store.path, partition: p, gen, ...(from === undefined ? {} : { from }) })
        : buildProjectionPages(this.store, p, gen, { stopped: () => this.closing, ...(from === undefined ? {} : { from }) })
    const settled = built.finally(() => {
      if (from !== undefined) this.unpinPages(p, from.gen)
    })
    build.built = this.trackPageWork(
      settled.then(
        ({ users }) => {
          if (this.tasks.get(p) !== task || task.pagesBuild !== build) return this.retirePages(p, gen)
          task.pagesBuild = undefined
          build.users = users
          const replaced = task.pages
          task.pages = build
          this.stats.projectionPageBuilds++
          if (replaced !== undefined) this.retirePages(p, replaced.gen)
        },
        (err: unknown) => {
          if (task.pagesBuild === build) task.pagesBuild = undefined
          if (this.closing) return
          // Not retried: what failed (the disk, most likely) would fail again, at the same cost.
          task.pagesFailed = true
          this.stats.projectionPageBuildErrors++
          this.lifecycle?.projectionPagesFailed?.(p, err)
          this.retirePages(p, gen)
        },
      ),
    )
  }

  /** Settles once no projection page build or deletion is running (tests, benchmarks). */
  async pagesSettled(): Promise<void> {
    while (this.pageWork.size > 0) await Promise.allSettled([...this.pageWork])
  }

  private trackPageWork(work: Promise<unknown>): Promise<unknown> {
    this.pageWork.add(work)
    void work.finally(() => this.pageWork.delete(work))
    return work
  }

  /** Keeps a page generation from being deleted while it is read (a preview, a build from it). */
  private pinPages(partition: number, gen: number): void {
    const key = `${partition}:${gen}`
    this.pagesInUse.set(key, (this.pagesInUse.get(key) ?? 0) + 1)
  }

  private unpinPages(partition: number, gen: number): void {
    const key = `${partition}:${gen}`
    const n = (this.pagesInUse.get(key) ?? 1) - 1
    if (n === 0) this.pagesInUse.delete(key)
    else this.pagesInUse.set(key, n)
    this.dropRetiredPages()
  }

  /** Deletes a page generation no longer used, once no preview reads it. */
  private retirePages(partition: number, gen: number): void {
    if (this.closing) return // the next start clears them
    this.retiredPages.push({ partition, gen })
    this.dropRetiredPages()
  }

  private dropRetiredPages(): void {
    for (let i = this.retiredPages.length - 1; i >= 0; i--) {
      const { partition, gen } = this.retiredPages[i] as { partition: number; gen: number }
      if ((this.pagesInUse.get(`${partition}:${gen}`) ?? 0) > 0) continue
      this.retiredPages.splice(i, 1)
      if (!this.closing) this.trackPageWork(clearProjectionPages(this.store.path, partition, gen).catch(() => undefined))
    }
  }

  /** Users the cache holds at most: cacheMaxUsers, or fewer when their estimated heap would pass cacheMaxBytes. */
  get cacheBoundUsers(): number {
    return Math.max(1, Math.min(this.cacheMax, Math.floor(this.cacheMaxBytes / (HEAP_BYTES_PER_STORED_BYTE * this.meanRecordBytes))))
  }

  /** Drops the least recently used clean records beyond the cache bound. */
  private evict(): void {
    let excess = this.cache.size - this.cacheBoundUsers
    if (excess <= 0) return
    for (const key of this.cache.keys()) {
      if (excess <= 0) break
      if (!this.isClean(key)) continue
      this.cache.delete(key)
      excess--
    }
  }

  // ---------------------------------------------------------------- reads

  get cachedUsers(): number {
    return this.cache.size
  }

  get userCount(): number {
    let n = 0
    for (const t of this.tasks.values()) n += t.users
    return n
  }

  watermarks(): Map<number, number> {
    return new Map([...this.tasks.values()].map((t) => [t.partition, t.watermark]))
  }

  /**
   * Segment membership ("users with tag T", "users with T = v"), as of the last commit, in pages:
   * pass the returned cursor back for the next page (undefined when there is none).
   */
  async members(tag: string, options: { value?: TagValue; cursor?: string; limit?: number } = {}): Promise<MembersPage> {
    const limit = options.limit ?? 100
    const encoded = options.value === undefined ? undefined : encodeTagValue(options.value)
    const [startPartition, afterKey] = decodeCursor(options.cursor)
    const users: { userId: string; value: TagValue }[] = []
    for (let p = startPartition; p < this.partitions; p++) {
      // The store still holds partitions handed to another process, as of the hand-over: not ours to answer for.
      if (this.partitionedSources.length > 0 && !this.tasks.has(p)) continue
      const range = memberRange(p, tag, encoded)
      const bounds = p === startPartition && afterKey !== undefined ? { gt: afterKey, lt: range.lt } : range
      const keys = await this.store.keysIn(bounds, limit - users.length)
      for (const key of keys) {
        const [value, userId] = parseMemberKey(key, tag)
        users.push({ userId, value: decodeTagValue(value) })
      }
      if (users.length >= limit) {
        const last = keys[keys.length - 1] as string
        return { users, cursor: encodeCursor(p, last) }
      }
    }
    return { users, cursor: undefined }
  }

  /** Users per value of a tag (its coverage), as of the last commit. */
  coverage(tag: string): { value: TagValue; users: number }[] {
    const byValue = new Map<string, number>()
    for (const [key, n] of this.committedCounts) {
      // p0000!k!<tag>!<value>
      const rest = key.slice('p0000!k!'.length)
      if (!rest.startsWith(`${tag}!`)) continue
      const v = rest.slice(tag.length + 1)
      byValue.set(v, (byValue.get(v) ?? 0) + n)
    }
    return [...byValue]
      .map(([v, users]) => ({ value: decodeTagValue(v), users }))
      .sort((a, b) => b.users - a.users || String(a.value).localeCompare(String(b.value)))
  }

  /**
   * Dry run of a candidate rule over every stored user (newer in-memory state where cached), at each
   * partition's clock. Changes nothing. Throws RuleCompileError when the rule does not compile.
   */
  async preview(expression: string, options: { sample?: number; maxValues?: number } = {}): Promise<RulePreview> {
    const started = performance.now()
    const rule = compileRule(expression, this.ruleSchema)
    if (isRuleErrors(rule)) throw new RuleCompileError(rule)
    const buildView = ruleViewBuilder(rule, this.ruleSchema)
    const viewFields = ruleViewFieldsOf([rule])
    const sampleSize = options.sample ?? 20
    const maxValues = options.maxValues ?? 20
    const counts = emptyCounts()
    const partitions = [...this.tasks.keys()].sort((a, b) => a - b)
    const fromRecord = (rec: UserRecord): RuleResult | undefined => {
      const ctx = new CallContext(rec, this.task(rec.p).watermark, this.config.timeZone, this.populations.of(rec.p))
      return evaluateView(rule, buildView(this.viewSource(rec, ctx, new Map(), viewFields)))
    }
    // The rule reads only what projections hold: partitions whose projections are written are read
    // from them, the others (and every partition, for other rules) from the records.
    const projected = this.readProjections && this.projects(rule) ? partitions.filter((p) => this.task(p).projected) : []
    const bySample = new Map<number, string[]>()
    const fromRecords = partitions
      .filter((p) => !projected.includes(p))
      .map(async (p) => {
        const sample: string[] = []
        bySample.set(p, sample)
        for await (const chunk of this.store.userValues(p)) {
          for (const [key, buf] of chunk) {
            const rec = this.cache.get(key) ?? this.store.decode<UserRecord>(buf)
            if (countResult(counts, fromRecord(rec)) && sample.length < sampleSize) sample.push(rec.u)
          }
        }
      })
    await Promise.all([...fromRecords, this.previewFromProjections(projected, rule, fromRecord, sampleSize, counts, bySample)])
    const sample = partitions.flatMap((p) => bySample.get(p) ?? []).slice(0, sampleSize)
    return {
      expression,
      resultType: rule.resultType,
      users: counts.users,
      matched: counts.matched,
      sample,
      values: [...counts.values]
        .map(([value, n]) => ({ value, users: n }))
        .sort((a, b) => b.users - a.users || String(a.value).localeCompare(String(b.value)))
        .slice(0, maxValues),
      errors: counts.errors,
      elapsedMs: Math.round(performance.now() - started),
    }
  }

  /**
   * The projection part of a preview (see preview.ts): every partition's projections are scanned,
   * in worker threads when configured and the store is large enough, else here (partitions read
   * concurrently: LevelDB reads one while this thread evaluates another), except for users with
   * uncommitted or landing state; those, and users whose projection does not hold at the clock, are
   * evaluated from their records (newest state in memory, else the store).
   */
  private async previewFromProjections(
    partitions: readonly number[],
    rule: CompiledRule,
    fromRecord: (rec: UserRecord) => RuleResult | undefined,
    sampleSize: number,
    counts: PreviewCounts,
    bySample: Map<number, string[]>,
  ): Promise<void> {
    if (partitions.length === 0) return
    // A build in flight (started by the last preview, or of stale pages) takes about as long as
    // reading the partition's `v!` values: the preview waits for it and reads the new pages.
    await Promise.all(partitions.map((p) => this.task(p).pagesBuild?.built))
    this.lastPreviewAt = this.wallNow()
    const skip = new Map<number, Set<string>>(partitions.map((p) => [p, new Set<string>()]))
    for (const users of [this.dirtyUsers, this.landingUsers]) {
      for (const key of users) {
        const rec = this.cache.get(key)
        if (rec !== undefined) skip.get(rec.p)?.add(rec.u)
      }
    }
    const toScan = partitions.map((p): PartitionToScan => {
      const task = this.task(p)
      const pages = task.pages === undefined ? undefined : { gen: task.pages.gen, fresh: [...task.pages.fresh] }
      return { partition: p, at: task.watermark, skip: [...(skip.get(p) as Set<string>)], ...(pages === undefined ? {} : { pages }) }
    })
    // The generations read stay until the scans are done (a build may replace them meanwhile).
    const inUse = toScan.flatMap((s) => (s.pages === undefined ? [] : [[s.partition, s.pages.gen] as const]))
    for (const [p, gen] of inUse) this.pinPages(p, gen)
    this.stats.previewScansFromPages += inUse.length
    for (const s of toScan) this.stats.previewFreshUsers += s.pages?.fresh.length ?? 0
    const stored = partitions.reduce((n, p) => n + this.task(p).users, 0)
    const threads = Math.min(this.previewThreads, partitions.length)
    let scans: PartitionScan[]
    try {
      if (threads > 0 && stored >= this.previewWorkerMinUsers) {
        const jobs: PreviewJob[] = Array.from({ length: threads }, (_, t) => ({
          kind: 'preview',
          location: this.store.path,
          layoutId: this.projection.id,
          schema: this.ruleSchema,
          expression: rule.expression,
          sampleSize,
          partitions: toScan.filter((_, i) => i % threads === t),
        }))
        const pool = (this.previewPool ??= new WorkerPool(this.previewThreads))
        scans = (await Promise.all(jobs.map((job) => pool.submit(job)))).flat()
        this.stats.previewScansInThreads += scans.length
      } else {
        const view = this.projectedView(rule)
        scans = await Promise.all(toScan.map((scan) => scanPartition(this.store, scan, new ProjectionReader(this.projection), rule, view, sampleSize)))
      }
    } finally {
      for (const [p, gen] of inUse) this.unpinPages(p, gen)
      // Partitions read without pages get them now, for the next preview.
      for (const p of partitions) {
        const task = this.task(p)
        task.pagesWanted = true
        this.updatePages(task)
      }
    }
    for (const scan of scans) {
      const p = scan.partition
      mergeCounts(counts, scan)
      const keys = scan.fromRecords.map((id) => userKey(p, id))
      const cached = keys.map((key) => this.cache.get(key))
      const missing = keys.filter((_, i) => cached[i] === undefined)
      const loaded = missing.length === 0 ? [] : await this.store.getUsers(missing)
      const matched = [...scan.sample]
      let next = 0
      for (let i = 0; i < keys.length; i++) {
        // Absent from both: deleted since the scan read it.
        const rec = cached[i] ?? loaded[next++]
        if (rec !== undefined && countResult(counts, fromRecord(rec))) matched.push(rec.u)
      }
      bySample.set(p, matched.length === scan.sample.length ? matched : inKeyOrder(matched).slice(0, sampleSize))
    }
  }

  /** Users per value of a tag's testing version (what it would give if published), as of the last commit. */
  testingCoverage(tag: string): { value: TagValue; users: number }[] {
    return this.coverage(`${tag}~testing`)
  }

  /** Definition passes in progress: which lane, how far (partitions done of all). */
  definitionPasses(): { tag: string; lane: string; version: number | null; mode: PublishMode; partitionsDone: number; partitions: number }[] {
    return this.definitions.passes.map((p) => ({
      tag: p.id,
      lane: p.lane,
      version: p.to?.version ?? null,
      mode: p.mode,
      partitionsDone: p.cursors.filter((c) => c === null).length,
      partitions: p.cursors.length,
    }))
  }

  /** The schema rules are checked against (for the catalog's definition-time validation). */
  get rules(): RuleSchema {
    return this.ruleSchema
  }

  /** A user's profile from committed or in-memory state; state views evaluated at `asOf` or the partition's clock. */
  async profile(userId: string, asOf?: number): Promise<Profile | undefined> {
    const rec = await this.findRecord(userId)
    if (rec === undefined) return undefined
    return buildProfile(rec, this.slots, asOf ?? this.task(rec.p).watermark, this.config.timeZone, this.populations.of(rec.p))
  }
}

/** One operator's new state for a user, before it is committed to the record. */
interface Change {
  readonly slot: OperatorSlot
  /** The stored state (undefined: the operator had none for this user yet). */
  readonly before: unknown
  state: unknown
  tags: DerivedTags
}

const NO_TAGS: DerivedTags = Object.freeze({})
/** Events applied between two turns of the event loop within a batch. */
const APPLY_SLICE = 1024
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
const NO_OPERATORS: ReadonlySet<string> = new Set()
/** An evaluation failed: the user keeps the value it had. */
const KEEP = Symbol('keep')
const JS_TYPES = { string: 'string', number: 'number', boolean: 'boolean' } as const

/** An operator's view as shown (memoized per user round; rules convert what they read). */
type ViewPair = Readonly<Record<string, unknown>>

/** What setting a lane's value needs to know about it (a removed lane has no TagSlot any more). */
type LaneTarget = Pick<TagSlot, 'lane' | 'id' | 'version' | 'emit' | 'counts' | 'reentry'>

/** The view fields each operator's view is asked for when `rules` are evaluated (undefined: all). */
function ruleViewFieldsOf(rules: readonly CompiledRule[]): Map<string, ReadonlySet<string> | undefined> {
  const fields = new Map<string, Set<string> | undefined>()
  const whole = new Set<string>()
  for (const rule of rules) {
    for (const v of rule.wholeVariables) whole.add(v)
    for (const [variable, field] of rule.fields) {
      let set = fields.get(variable)
      if (set === undefined) fields.set(variable, (set = new Set()))
      set.add(field)
    }
  }
  for (const v of whole) fields.set(v, undefined)
  return fields
}

function intersects(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size === 0 || b.size === 0) return false
  for (const x of a) if (b.has(x)) return true
  return false
}

function tagValuesOf(rec: UserRecord): Record<string, TagValue> {
  const out: Record<string, TagValue> = {}
  for (const id in rec.tags) out[id] = (rec.tags[id] as StoredTag)[0]
  return out
}
const EMPTY = Buffer.alloc(0)

/** A tag change in the history range: [tag, op, from, to, tagVersion, atMs, emittedMs, cause, evidence]. */
type StoredChange = [string, TagChangeOp, TagValue | null, TagValue | null, number, number, number, TagChangeCause, Readonly<Record<string, unknown>>]

export interface MembersPage {
  readonly users: readonly { readonly userId: string; readonly value: TagValue }[]
  /** Opaque; pass it back for the next page. Undefined on the last page. */
  readonly cursor: string | undefined
}

function encodeCursor(partition: number, key: string): string {
  return Buffer.from(`${partition}\u0000${key}`).toString('base64url')
}

function decodeCursor(cursor: string | undefined): [number, string | undefined] {
  if (cursor === undefined) return [0, undefined]
  const text = Buffer.from(cursor, 'base64url').toString()
  const sep = text.indexOf('\u0000')
  const partition = Number(text.slice(0, sep))
  if (sep < 0 || !Number.isInteger(partition) || partition < 0) throw new TagstreamError(ErrorCodes.USAGE, 'invalid membership cursor')
  return [partition, text.slice(sep + 1)]
}
const RESCORE_CAUSE: TagChangeCause = Object.freeze({ kind: 'rescore' })

/**
 * Stored users from which previews and sweeps use worker threads: a preview over fewer takes well under a
 * second on the engine's thread, and starting a thread (loading the rule library) about 100 ms.
 */
const WORKER_MIN_USERS = 50_000
/** A partition's pages are stale once this share of the users they hold were written since, and at least PAGES_MIN_FRESH users. */
const PAGES_STALE_FRACTION = 0.1
const PAGES_MIN_FRESH = 1024
/** How long after a preview a partition's stale pages are rebuilt rather than dropped (operators preview in bursts, editing a rule). */
const PAGES_KEEP_MS = 10 * 60_000

/** User ids in the order of their keys in the store (LevelDB compares bytes, UTF-8). */
function inKeyOrder(ids: readonly string[]): string[] {
  return [...ids].sort(compareUtf8)
}

/** What projected views see of the population: nothing (their fields do not depend on it). */
const NO_POPULATIONS = new Populations()


/** Projections written per batch while a store without them is converted at open. */
const PROJECTION_BATCH = 10_000
/** Where the user id starts in a `p0000!u!<id>` or `p0000!v!<id>` key. */
const USER_ID_OFFSET = 'p0000!u!'.length

/** What sweeps decide from projections (see `Engine.currentSweepPlan`). */
interface SweepPlan {
  /** Per re-scoring operator slot, its index in the projection layout's `rescored`. */
  readonly rescored: readonly number[]
  /** The rules a sweep re-evaluates (clock-dependent), in evaluation order. */
  readonly rules: readonly TagSlot[]
}

/** Whether a pass that wrapped around the key space is back where it started (a superseded sweep's position). */
function passBackAtStart(sweep: Sweep, key: string): boolean {
  // The start key itself is the superseded sweep's last user: this sweep has yet to do it.
  return sweep.wrapped && sweep.startKey !== undefined && key > sweep.startKey
}

/** A lane as a sweep thread compares with it (plain data). */
function decisionLane(slot: TagSlot): DecisionLane {
  return { id: slot.id, version: slot.version, emit: slot.emit }
}

/** A partition's part of a sweep's pass that a worker thread decides (`Engine.sweepStepInThread`). */
interface SweepScanInFlight {
  readonly sweep: Sweep
  readonly plan: SweepPlan
  /** Resolves once the thread has answered (result or error); never rejects. */
  done: Promise<void>
  result: SweepScan | undefined
  error: unknown
  /** The next chunk of the result to take. */
  next: number
}

/** Timer operations an operator asked for during one call; applied only if the call succeeds. */
interface TimerOp {
  readonly operator: string
  readonly name: string
  /** undefined: delete */
  readonly due: number | undefined
}

/** The context handed to operators: valid only during the call. */
class CallContext implements OperatorContext {
  readonly now: number
  readonly timeZone: string
  readonly userId: string
  operator = ''
  timerOps: TimerOp[] | undefined
  private readonly rec: UserRecord
  private readonly populations: Populations

  constructor(rec: UserRecord, now: number, timeZone: string, populations: Populations) {
    this.rec = rec
    this.now = now
    this.timeZone = timeZone
    this.userId = rec.u
    this.populations = populations
  }

  population(dimension: string): PopulationView {
    return this.populations.get(this.operator, dimension)
  }

  setTimer(name: string, dueMs: number): void {
    if (!Number.isFinite(dueMs)) throw new Error(`timer "${name}" due time must be finite, got ${dueMs}`)
    ;(this.timerOps ??= []).push({ operator: this.operator, name, due: Math.floor(dueMs) })
  }

  deleteTimer(name: string): void {
    ;(this.timerOps ??= []).push({ operator: this.operator, name, due: undefined })
  }

  timer(name: string): number | undefined {
    const ops = this.timerOps
    if (ops !== undefined) {
      for (let i = ops.length - 1; i >= 0; i--) {
        const op = ops[i] as TimerOp
        if (op.operator === this.operator && op.name === name) return op.due
      }
    }
    return this.rec.timers[timerKeyOf(this.operator, name)]
  }
}

/** One-shot SHA-256 (Node >= 20.12): half the cost of a Hash object per tag change. */
const sha256Base64url: (text: string) => string =
  typeof crypto.hash === 'function'
    ? (text) => crypto.hash('sha256', text, 'base64url')
    : (text) => crypto.createHash('sha256').update(text).digest('base64url')

/** Stable tag-change id: the same user, tag and change sequence number always give the same id. */
export function changeId(userId: string, tag: string, seq: number): string {
  return sha256Base64url(`${userId}\u0000${tag}\u0000${seq}`).slice(0, 22)
}

export function buildProfile(
  rec: UserRecord,
  slots: readonly { op: Operator }[],
  now: number,
  timeZone: string,
  populations: Populations,
): Profile {
  const tags: Record<string, ProfileTag> = {}
  for (const id of Object.keys(rec.tags).sort()) {
    const [value, since, version] = rec.tags[id] as [TagValue, number, number]
    tags[id] = { value, since: new Date(since).toISOString(), version }
  }
  const state: Record<string, Record<string, unknown>> = {}
  for (const { op } of slots) {
    const s = rec.ops[op.name]
    if (s === undefined) continue
    if (op.view === undefined) {
      state[op.name] = s as Record<string, unknown>
      continue
    }
    const ctx = new CallContext(rec, now, timeZone, populations)
    ctx.operator = op.name
    state[op.name] = { ...op.view(s, ctx) }
  }
  return { userId: rec.u, tags, state }
}
