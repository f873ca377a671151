import { Type, type Static } from '@sinclair/typebox'
import { HttpConfigSchema } from '../http/options.js'
import { LogConfigSchema } from '../log.js'
import { KafkaDeadLetterSinkConfigSchema, KafkaTagChangeSinkConfigSchema } from '../sinks/kafka-options.js'

/**
 * The configuration schema: one place, with defaults beside each key. Validated once at start
 * (and by `tagstream validate-config`), then frozen and passed down.
 */

const FieldNamesSchema = Type.Object(
  {
    eventId: Type.String({ default: 'eventId', minLength: 1 }),
    userId: Type.String({ default: 'userId', minLength: 1 }),
    type: Type.String({ default: 'type', minLength: 1 }),
    ts: Type.String({ default: 'ts', minLength: 1 }),
    properties: Type.String({ default: 'properties', minLength: 1 }),
  },
  { default: {}, additionalProperties: false, description: 'Where each contract field is read from in a record' },
)

const FileSourceSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_.:-]+$' }),
    type: Type.Literal('file'),
    path: Type.String({ minLength: 1, description: 'NDJSON file, one event per line; relative to the working directory' }),
    format: Type.Literal('json', { default: 'json' }),
    follow: Type.Boolean({ default: false, description: 'Keep reading as the file grows (tail -f); replay always stops at the end' }),
    pollIntervalMs: Type.Integer({ minimum: 10, default: 200 }),
    fields: FieldNamesSchema,
    timestampUnit: Type.Union([Type.Literal('ms'), Type.Literal('s')], { default: 'ms' }),
  },
  { additionalProperties: false },
)

const GeneratorSourceSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_.:-]+$' }),
    type: Type.Literal('generator'),
    users: Type.Integer({ minimum: 1, default: 2000, description: 'Size of the simulated customer base' }),
    eventsPerSecond: Type.Number({ exclusiveMinimum: 0, default: 400, description: 'Offered rate, wall clock' }),
    seed: Type.Integer({ default: 42 }),
    limit: Type.Optional(Type.Integer({ minimum: 1, description: 'Stop after this many events' })),
    timeScale: Type.Number({
      exclusiveMinimum: 0,
      default: 1440,
      description: 'Simulated seconds per wall second (1440: a simulated day passes every minute)',
    }),
    invalidRatio: Type.Number({ minimum: 0, maximum: 1, default: 0.002, description: 'Share of malformed records' }),
    startAt: Type.String({ format: 'date-time', default: '2025-01-01T00:00:00Z', description: 'Simulated time of the first event' }),
  },
  { additionalProperties: false },
)

const KafkaTopicSchema = Type.Object(
  {
    topic: Type.String({ minLength: 1, maxLength: 249, pattern: '^[A-Za-z0-9._-]+$' }),
    format: Type.Union([Type.Literal('json'), Type.Literal('msgpack')], { default: 'json', description: 'Payload encoding of the topic' }),
  },
  { additionalProperties: false },
)

const KafkaSourceSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_.:-]+$' }),
    type: Type.Literal('kafka'),
    brokers: Type.String({ minLength: 1, description: 'bootstrap.servers: comma-separated host:port list' }),
    groupId: Type.String({ minLength: 1, description: 'Consumer group; the processes of one deployment share it' }),
    topics: Type.Array(KafkaTopicSchema, {
      minItems: 1,
      description: 'Co-partitioned input topics (same partition count, keyed by user id): partition k of each is engine partition k',
    }),
    clientId: Type.String({ minLength: 1, default: 'tagstream' }),
    sessionTimeoutMs: Type.Integer({ minimum: 1000, default: 10_000, description: 'session.timeout.ms: how long the group waits for a silent member before it rebalances' }),
    heartbeatIntervalMs: Type.Integer({ minimum: 100, default: 1000 }),
    startFrom: Type.Union([Type.Literal('earliest'), Type.Literal('latest')], {
      default: 'earliest',
      description:
        "Where a partition with no offset in the store starts: earliest rebuilds its state from the topic's history, latest starts it empty on purpose. The group's committed offsets are never used to start",
    }),
    allowMissingHistory: Type.Boolean({
      default: false,
      description:
        'Start a partition even when records between its stored offset (or the beginning) and the oldest retained record are gone; false: refuse with TS_ERR_SOURCE_FAILED',
    }),
    connectTimeoutMs: Type.Integer({ minimum: 100, default: 30_000 }),
    fields: FieldNamesSchema,
    timestampUnit: Type.Union([Type.Literal('ms'), Type.Literal('s')], { default: 'ms' }),
    librdkafka: Type.Record(Type.String({ minLength: 1 }), Type.Union([Type.String(), Type.Number(), Type.Boolean()]), {
      default: {},
      description:
        'Extra librdkafka consumer properties (CONFIGURATION.md), applied last: security.protocol, sasl.*, ssl.*, fetch.*, queued.max.messages.kbytes, ... ' +
        'group.id, enable.auto.commit, enable.auto.offset.store and partition.assignment.strategy are fixed by the source',
    }),
  },
  { additionalProperties: false, description: 'A Kafka consumer group: offsets live in the store with the state; group commits are advisory' },
)

export const SourceConfigSchema = Type.Union([FileSourceSchema, GeneratorSourceSchema, KafkaSourceSchema])

const ndjsonFileSinkSchema = (options: { default?: unknown } = {}) =>
  Type.Object(
  {
    type: Type.Literal('ndjson-file'),
    path: Type.Optional(Type.String({ minLength: 1, description: 'Default: tag-changes.ndjson or dead-letters.ndjson in dataDir' })),
    fsync: Type.Boolean({ default: true, description: 'fsync on every commit (durable before the store commit)' }),
  },
  { additionalProperties: false, ...options },
)
const NdjsonFileSinkSchema = ndjsonFileSinkSchema()

const StdoutSinkSchema = Type.Object(
  {
    type: Type.Literal('stdout'),
    mode: Type.Union([Type.Literal('summary'), Type.Literal('changes')], {
      default: 'summary',
      description: 'summary: a live progress line and a sample of changes; changes: every change as NDJSON',
    }),
    intervalMs: Type.Integer({ minimum: 100, default: 1000 }),
  },
  { additionalProperties: false },
)

export const TagChangeSinkSchema = Type.Union([NdjsonFileSinkSchema, StdoutSinkSchema, KafkaTagChangeSinkConfigSchema])
export const DeadLetterSinkSchema = Type.Union([NdjsonFileSinkSchema, KafkaDeadLetterSinkConfigSchema], { default: { type: 'ndjson-file' } })

const OperatorEntrySchema = Type.Object(
  {
    name: Type.String({ minLength: 1, pattern: '^[A-Za-z][A-Za-z0-9_]*$', description: 'Keys the state in profiles' }),
    type: Type.Optional(Type.String({ minLength: 1, description: 'A built-in operator in operators/' })),
    module: Type.Optional(Type.String({ minLength: 1, description: 'Path to a user operator module (default export)' })),
    config: Type.Record(Type.String(), Type.Unknown(), { default: {} }),
  },
  { additionalProperties: false },
)

export const TagStatusSchema = Type.Union([
  Type.Literal('draft'),
  Type.Literal('testing'),
  Type.Literal('online'),
  Type.Literal('offline'),
])

const CatalogConfigSchema = Type.Object(
  {
    file: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Tags file (see config/tags.yaml) loaded at start and merged with the versions stored through the API; relative to the working directory',
      }),
    ),
  },
  { default: {}, additionalProperties: false, description: 'The tag catalog: definitions, versions, publication (issue 4)' },
)

export const ConfigSchema = Type.Object(
  {
    dataDir: Type.String({ minLength: 1, default: './data', description: 'Store and default sink files; relative to the working directory' }),
    timeZone: Type.String({ minLength: 1, default: 'UTC', description: 'IANA zone for day boundaries and daily schedules' }),
    engine: Type.Object(
      {
        partitions: Type.Integer({ minimum: 1, maximum: 1024, default: 4, description: 'Partitions that embedded sources route users to (Kafka brings its own)' }),
        batchSize: Type.Integer({ minimum: 1, default: 4096, description: 'Records read and processed together' }),
        commitIntervalMs: Type.Integer({
          minimum: 1,
          default: 1000,
          description: 'Commit at least this often while records keep coming; an engine that has read everything its sources have commits at once',
        }),
        populationScope: Type.Union([Type.Literal('process'), Type.Literal('partition')], {
          default: 'process',
          description:
            "Which users population-ranked values (RFM quintiles and means) are ranked among. process: every user of the partitions this process holds, exact as a batch analysis of them; but through Kafka, what the other partitions hold at an instant depends on how the consumer interleaves them, so a replay after a crash or a rebalance can re-score differently. partition: the users of the user's own partition, a random sample of the whole by hash; ranks follow from that partition's events alone, so replays, rebalances and added processes give the same tags and tag-change ids",
        }),
        commitEvents: Type.Integer({ minimum: 1, default: 50000, description: 'Commit after this many events even before the interval' }),
        syncWrites: Type.Boolean({ default: true, description: 'fsync the store on every commit' }),
        cacheMaxUsers: Type.Integer({ minimum: 1, default: 200000, description: 'User states kept in memory (dirty ones stay until committed)' }),
        cacheMaxBytes: Type.Integer({
          minimum: 1,
          default: 128 * 1024 * 1024,
          description:
            'Estimated JS heap of the user states kept in memory (dirty ones stay until committed): the mean stored size of recently committed states times 3.7, their measured heap-to-msgpack ratio. The cache holds at most cacheMaxUsers and at most this. The default keeps a million-user engine under 1 GiB RSS (bench scenario 4)',
        }),
        storeMaxOpenFiles: Type.Integer({
          minimum: 20,
          default: 50,
          description:
            'Table files LevelDB keeps open (its own default: 1000). Each open table is memory-mapped, and what reads touch of it counts in the RSS until it is closed: a scan (a rule preview, a sweep) touches all of it, about 2 MB per table. This bounds that part of the RSS, at the cost of reopening tables on reads spread over a store larger than about 100 MB. At 1,000,000 users, 50 rather than 100 took 54 MiB off the peak of a pass followed by a rule preview (965 against 1,012 MiB) and cost about 5% of the pass\'s rate (random reads over 742 tables)',
        }),
        shutdownTimeoutMs: Type.Integer({ minimum: 100, default: 10000 }),
        previewThreads: Type.Integer({
          minimum: 0,
          maximum: 64,
          default: 2,
          description:
            'Worker threads a rule preview (POST /v1/tags/preview) reads the stored projections with, off the thread that ingests, when the store holds at least 50,000 users: started by the first such preview, stopped a minute after the last (0: on the engine thread). More than the machine has cores does not help',
        }),
        sweepThreads: Type.Integer({
          minimum: 0,
          maximum: 64,
          default: 1,
          description:
            'Worker threads a re-scoring sweep decides users from their stored projections in, off the thread that ingests, when the store holds at least 50,000 users: started by a sweep, stopped a minute after it (0: on the engine thread, a chunk between batches). The engine thread re-scores only the users the threads could not clear',
        }),
      },
      { default: {}, additionalProperties: false },
    ),
    time: Type.Object(
      {
        allowedLatenessMs: Type.Integer({ minimum: 0, default: 0, description: 'Watermark = highest event time - this' }),
        lateHorizonMs: Type.Integer({ minimum: 0, default: 30 * 86_400_000, description: 'Events older than watermark - this are dead-lettered as too_late' }),
        idleAdvanceMs: Type.Integer({ minimum: 0, default: 5000, description: 'A live partition idle this long advances its clock with the wall clock (0: never)' }),
        idleAdvanceMaxLagMs: Type.Integer({
          minimum: 0,
          default: 3_600_000,
          description: 'A partition counts as live only if its newest event was at most this far behind the wall clock when it arrived',
        }),
      },
      { default: {}, additionalProperties: false },
    ),
    rescore: Type.Object(
      {
        schedule: Type.Union([Type.Literal('daily'), Type.Literal('off')], {
          default: 'daily',
          description: 'Re-score every stored user once a day, in event time (operators with rescore: true)',
        }),
        at: Type.String({ pattern: '^([01]\\d|2[0-3]):[0-5]\\d$', default: '00:00', description: 'Local time of day (timeZone) of the sweep' }),
        chunkUsers: Type.Integer({ minimum: 1, default: 5000, description: 'Users re-scored between two batches of events' }),
      },
      { default: {}, additionalProperties: false },
    ),
    history: Type.Object(
      {
        perUser: Type.Integer({ minimum: 0, default: 100, description: 'Tag changes kept per user for support and audit (0: none)' }),
      },
      { default: {}, additionalProperties: false },
    ),
    dedup: Type.Object(
      {
        maxIds: Type.Integer({ minimum: 0, default: 64, description: 'Recent event ids remembered per user' }),
        horizonMs: Type.Integer({ minimum: 0, default: 7 * 86_400_000, description: 'How long an event id is remembered, event time' }),
      },
      { default: {}, additionalProperties: false },
    ),
    limits: Type.Object(
      {
        maxRecordBytes: Type.Integer({ minimum: 64, default: 65536 }),
        maxIdLength: Type.Integer({ minimum: 1, default: 256 }),
        maxFutureMs: Type.Integer({ minimum: 0, default: 86_400_000, description: 'How far ahead of the wall clock an event may be' }),
      },
      { default: {}, additionalProperties: false },
    ),
    sources: Type.Array(SourceConfigSchema, { default: [] }),
    sinks: Type.Object(
      {
        tagChanges: Type.Array(TagChangeSinkSchema, { default: [{ type: 'ndjson-file' }] }),
        deadLetter: DeadLetterSinkSchema,
      },
      { default: {}, additionalProperties: false },
    ),
    http: HttpConfigSchema,
    log: LogConfigSchema,
    operators: Type.Array(OperatorEntrySchema, { default: [] }),
    catalog: CatalogConfigSchema,
  },
  { additionalProperties: false },
)

export type Config = Static<typeof ConfigSchema>
export type SourceConfig = Static<typeof SourceConfigSchema>
export type FileSourceConfig = Static<typeof FileSourceSchema>
export type GeneratorSourceConfig = Static<typeof GeneratorSourceSchema>
export type KafkaSourceConfig = Static<typeof KafkaSourceSchema>
export type TagChangeSinkConfig = Static<typeof TagChangeSinkSchema>
export type OperatorEntry = Static<typeof OperatorEntrySchema>
export type TagStatus = Static<typeof TagStatusSchema>
