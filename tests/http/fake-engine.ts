import { Value } from '@sinclair/typebox/value'
import { DEFAULT_FIELD_NAMES, REJECT_REASON_LIST } from '../../src/contracts/input-event.js'
import type { Profile } from '../../src/contracts/profile.js'
import type { TagChange, TagValue } from '../../src/contracts/tag-change.js'
import type { MembersPage } from '../../src/engine/engine.js'
import { createEventDecoder } from '../../src/contracts/validate-event.js'
import { HttpConfigSchema, type HttpConfig, type ServiceEngine } from '../../src/http/server.js'
import type { EngineStatsLike } from '../../src/metrics/metrics.js'
import { HttpIngestSource } from '../../src/sources/http-ingest-source.js'

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/** An engine stand-in: plain counters the test sets, profiles it holds, commits it simulates. */
export class FakeEngine implements ServiceEngine {
  readonly stats: Mutable<EngineStatsLike> & { invalid: Record<string, number>; ruleErrorsByTag: Record<string, number>; reentrySuppressed: Record<string, number> } = {
    recordsIn: 0,
    eventsApplied: 0,
    invalid: Object.fromEntries(REJECT_REASON_LIST.map((r) => [r, 0])),
    duplicates: 0,
    tagChanges: 0,
    testingChanges: 0,
    ruleEvaluations: 0,
    ruleErrorsByTag: {} as Record<string, number>,
    reentrySuppressed: {} as Record<string, number>,
    definitionPassesStarted: 0,
    definitionPassesCompleted: 0,
    usersReevaluated: 0,
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
    lastSweepMs: 0,
  }
  userCount = 0
  cachedUsers = 0
  ready = true
  readonly clocks = new Map<number, number>()
  readonly profiles = new Map<string, Profile>()
  readonly profileCalls: [string, number | undefined][] = []
  private readonly listeners: ((positions: ReadonlyMap<string, number>) => void)[] = []

  watermarks(): Map<number, number> {
    return new Map(this.clocks)
  }

  onCommitted(listener: (positions: ReadonlyMap<string, number>) => void): void {
    this.listeners.push(listener)
  }

  readonly histories = new Map<string, TagChange[]>()
  readonly memberships = new Map<string, { userId: string; value: TagValue }[]>()

  async history(userId: string, limit = 100): Promise<TagChange[]> {
    return (this.histories.get(userId) ?? []).slice(0, limit)
  }

  /** Pages of 'limit' over the memberships the test set; the cursor is the next index. */
  async members(tag: string, options: { value?: TagValue; cursor?: string; limit?: number } = {}): Promise<MembersPage> {
    const all = (this.memberships.get(tag) ?? []).filter((m) => options.value === undefined || m.value === options.value)
    const start = options.cursor === undefined ? 0 : Number(options.cursor)
    if (!Number.isInteger(start)) throw new Error('invalid membership cursor')
    const limit = options.limit ?? 100
    const users = all.slice(start, start + limit)
    return { users, cursor: start + limit < all.length ? String(start + limit) : undefined }
  }

  coverage(tag: string): { value: TagValue; users: number }[] {
    const counts = new Map<TagValue, number>()
    for (const m of this.memberships.get(tag) ?? []) counts.set(m.value, (counts.get(m.value) ?? 0) + 1)
    return [...counts].map(([value, users]) => ({ value, users }))
  }

  async profile(userId: string, asOf?: number): Promise<Profile | undefined> {
    this.profileCalls.push([userId, asOf])
    return this.profiles.get(userId)
  }

  /** What the engine does after its store write: tells listeners the committed positions. */
  commit(positions: Record<string, number>): void {
    this.stats.commits++
    const map = new Map(Object.entries(positions))
    for (const listener of this.listeners) listener(map)
  }

  /** One turn of the engine loop over the ingest source: read what is queued, then commit it. */
  async drainAndCommit(source: HttpIngestSource): Promise<Buffer[]> {
    const records = (await source.poll(100_000, 0)) ?? []
    const last = records[records.length - 1]
    this.stats.recordsIn += records.length
    if (last !== undefined) this.commit({ [source.name]: last.nextOffset })
    return records.map((r) => r.value)
  }
}

export const decode = createEventDecoder({
  fields: DEFAULT_FIELD_NAMES,
  format: 'json',
  maxRecordBytes: 512,
  maxIdLength: 64,
  maxFutureMs: 86_400_000,
  timestampUnit: 'ms',
})

export async function openIngest(capacity = 100, position = 0, name = 'http'): Promise<HttpIngestSource> {
  const source = new HttpIngestSource({ name, decode, capacity })
  await source.open(position)
  return source
}

export function httpConfig(overrides: Partial<HttpConfig> = {}): HttpConfig {
  return Value.Default(HttpConfigSchema, { ...overrides }) as HttpConfig
}

export const INGEST_TOKEN = 'ingest-token-0123456789abcdef'
export const READ_TOKEN = 'read-token-0123456789abcdef'

export const T = Date.UTC(2025, 0, 1)
export const event = (id: string, user = 'alice', extra: Record<string, unknown> = {}) => ({ eventId: id, userId: user, type: 'view', ts: T, ...extra })
