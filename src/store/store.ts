import { resolve } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { Packr } from 'msgpackr'
import { ErrorCodes, TagstreamError } from '../errors.js'
import type { UserRecord } from '../engine/user-record.js'
import {
  META_KEY,
  SCORED_LAYOUT_KEY,
  clockKey,
  countRange,
  dueOfTimerKey,
  globalOffsetKey,
  partitionOffsetKey,
  populationRange,
  projectionKey,
  projectionKeyOfUser,
  projectionRange,
  scoredRange,
  timerKey,
  timerRange,
  timersAfter,
  userKey,
  userRange,
} from './keys.js'

/** LevelDB's own default. */
export const DEFAULT_MAX_OPEN_FILES = 1000

/** Bumped when the key layout or record shape changes incompatibly. */
export const STORE_FORMAT_VERSION = 1

export interface StoreMeta {
  formatVersion: number
  /** Partitions embedded sources route to; fixed for the life of a store. */
  partitions: number
}

export interface PartitionClock {
  /** Highest event time seen in the partition (its watermark is this minus the allowed lateness). */
  maxTs: number
  /** Users in the partition. */
  users: number
  /** The instant of the re-scoring sweep in progress, if any. */
  sweepAt?: number
  /** The last user key that sweep's pass has done. */
  sweepCursor?: string
  /** Where the sweep's population was cut from the stored deltas: [partition, delta number] pairs (`PopulationLog.cutForSweep`). */
  sweepPopulation?: readonly (readonly [partition: number, seq: number])[]
  /** The projection layout the partition's v! values were written with (absent: none kept, rebuilt at open). */
  proj?: string
}

export interface TimerIndexEntry {
  readonly due: number
  readonly userId: string
  readonly timer: string
}

export type WriteOp = { type: 'put'; key: string; value: Buffer } | { type: 'del'; key: string }

/**
 * The engine's state store over classic-level. Values are msgpack. Reads that the per-event path
 * needs are batched (`getUsers` is one `getMany`); writes go through `commit`, one atomic batch.
 */
export class Store {
  readonly path: string
  private readonly db: ClassicLevel<string, Buffer>
  private readonly packr = new Packr({ useRecords: false, mapsAsObjects: true })

  /** `path` resolved, for a store this process opened (not attached to). */
  private readonly location: string | undefined

  private constructor(path: string, db: ClassicLevel<string, Buffer>, location: string | undefined) {
    this.path = path
    this.db = db
    this.location = location
  }

  static async open(path: string, options: { readOnly?: boolean; maxOpenFiles?: number } = {}): Promise<Store> {
    // Opened for worker threads too (`attach`), so LevelDB's lock no longer refuses a second open in
    // this process: refuse it here, as it refuses one from another process.
    const location = resolve(path)
    if (OPEN_IN_THIS_PROCESS.has(location)) {
      throw new TagstreamError(ErrorCodes.STORE_UNAVAILABLE, `store ${path} is locked: it is already open in this process`, {
        retriable: true,
        details: { path, reason: 'locked' },
      })
    }
    const db = new ClassicLevel<string, Buffer>(path, {
      keyEncoding: 'utf8',
      valueEncoding: 'buffer',
      createIfMissing: options.readOnly !== true,
      // Larger write buffer and block cache: commits are big batches, reads are getMany bursts.
      writeBufferSize: 16 * 1024 * 1024,
      cacheSize: 32 * 1024 * 1024,
      // LevelDB memory-maps every table file it keeps open (up to 1000 on 64 bits): the pages a
      // read touches stay in the process's RSS until the table is closed. The open-table bound is
      // what bounds them (about 2 MB per table).
      maxOpenFiles: options.maxOpenFiles ?? DEFAULT_MAX_OPEN_FILES,
      multithreading: true,
    })
    try {
      await db.open()
    } catch (err) {
      const cause = (err as { cause?: Error }).cause ?? err
      const text = String((cause as Error).message)
      // LevelDB names its LOCK file in both messages: tell "no store yet" from "in use" first.
      const missing = /does not exist/i.test(text)
      const locked = !missing && /lock/i.test(text)
      throw new TagstreamError(
        ErrorCodes.STORE_UNAVAILABLE,
        missing
          ? `no store at ${path} (nothing has been processed with this dataDir yet)`
          : locked
            ? `store ${path} is locked by another process (is the engine running? read profiles over its HTTP API)`
            : `cannot open store ${path}: ${text}`,
        { cause: err, retriable: locked, details: { path, reason: missing ? 'missing' : locked ? 'locked' : 'error' } },
      )
    }
    OPEN_IN_THIS_PROCESS.add(location)
    return new Store(path, db, location)
  }

  /**
   * The store a thread of this process has open, from a worker thread (preview workers): LevelDB's
   * handle is shared, so this reads what the engine commits. Only for reads; close it when done.
   */
  static async attach(path: string): Promise<Store> {
    const db = new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false, multithreading: true })
    await db.open()
    return new Store(path, db, undefined)
  }

  encode(value: unknown): Buffer {
    return this.packr.pack(value)
  }

  decode<T>(buf: Buffer): T {
    return this.packr.unpack(buf) as T
  }

  async close(): Promise<void> {
    await this.db.close()
    if (this.location !== undefined) OPEN_IN_THIS_PROCESS.delete(this.location)
  }

  async readMeta(): Promise<StoreMeta | undefined> {
    const buf = await this.db.get(META_KEY)
    return buf === undefined ? undefined : this.decode<StoreMeta>(buf)
  }

  /** Records the routing of a new store, or checks that an existing store was made with the same. */
  async ensureMeta(partitions: number): Promise<StoreMeta> {
    const meta = await this.readMeta()
    if (meta === undefined) {
      const created: StoreMeta = { formatVersion: STORE_FORMAT_VERSION, partitions }
      await this.db.put(META_KEY, this.encode(created), { sync: true })
      return created
    }
    if (meta.formatVersion !== STORE_FORMAT_VERSION) {
      throw new TagstreamError(ErrorCodes.STORE_UNAVAILABLE, `store ${this.path} has format ${meta.formatVersion}, this engine reads ${STORE_FORMAT_VERSION}`)
    }
    if (meta.partitions !== partitions) {
      throw new TagstreamError(
        ErrorCodes.CONFIG_INVALID,
        `engine.partitions is ${partitions} but the store at ${this.path} was created with ${meta.partitions}: users would be routed to the wrong state`,
        { details: { issues: [{ key: 'engine.partitions', message: `must stay ${meta.partitions} for this store` }] } },
      )
    }
    return meta
  }

  /** One `getMany` for a batch of keys; undefined where a user has no record yet. */
  async getUsers(keys: string[]): Promise<(UserRecord | undefined)[]> {
    if (keys.length === 0) return []
    const values = await this.db.getMany(keys)
    return values.map((buf) => (buf === undefined ? undefined : this.decode<UserRecord>(buf)))
  }

  /** The records of `keys` that exist, by key (one getMany). */
  async usersByKey(keys: readonly string[]): Promise<Map<string, UserRecord>> {
    const out = new Map<string, UserRecord>()
    if (keys.length === 0) return out
    const values = await this.db.getMany([...keys])
    values.forEach((buf, i) => {
      if (buf !== undefined) out.set(keys[i] as string, this.decode<UserRecord>(buf))
    })
    return out
  }

  /** Looks a user up in every partition (profile reads do not know the routing of every source). */
  async findUser(userId: string, partitions: Iterable<number>): Promise<UserRecord | undefined> {
    const keys = [...partitions].map((p) => userKey(p, userId))
    const found = await this.getUsers(keys)
    return found.find((r) => r !== undefined)
  }

  async *iterateUsers(partition: number): AsyncGenerator<UserRecord> {
    for await (const buf of this.db.values({ ...userRange(partition) })) {
      yield this.decode<UserRecord>(buf)
    }
  }

  /** Legacy: the raw s! values of a partition (population values per user), in key order, in chunks. */
  async *iterateScored(partition: number): AsyncGenerator<Buffer[]> {
    // nextv: one native call per chunk, not one per entry (a million small values).
    yield* chunks(this.db.values({ ...scoredRange(partition) }), 4096)
  }

  /** Legacy: the layout of the s! values, present while they are current. */
  async readScoredLayout(): Promise<string | undefined> {
    const buf = await this.db.get(SCORED_LAYOUT_KEY)
    return buf === undefined ? undefined : buf.toString('utf8')
  }

  /** Legacy: marks the s! values as no longer current (before any commit leaves them behind). */
  async dropScoredLayout(): Promise<void> {
    await this.db.del(SCORED_LAYOUT_KEY, { sync: true })
  }

  /** Legacy: deletes a partition's s! values, if it has any (one seek when it has none). */
  async clearScored(partition: number): Promise<void> {
    const range = scoredRange(partition)
    if ((await this.db.keys({ ...range, limit: 1 }).all()).length === 0) return
    await this.db.clear({ ...range })
  }

  /**
   * A partition's population snapshot and deltas (`P!` keys), in key order, read through one
   * iterator: a consistent view even while commits and compactions write.
   */
  async *populationEntries(partition: number): AsyncGenerator<[string, Buffer][]> {
    yield* chunks(this.db.iterator({ ...populationRange(partition) }), 64)
  }

  /** Up to `limit` user keys of a key range after `afterKey`, in key order (values are not read). */
  async scanUserKeys(range: { gte: string; lt: string }, afterKey: string | undefined, limit: number): Promise<string[]> {
    const bounds = afterKey === undefined ? range : { gt: afterKey, lt: range.lt }
    return this.db.keys({ ...bounds, limit }).all()
  }

  /** Keys in a range, at most `limit`. */
  async keysIn(range: { gt?: string; gte?: string; lt: string }, limit: number): Promise<string[]> {
    if (limit <= 0) return []
    return this.db.keys({ ...range, limit }).all()
  }

  /** Entries in a range, at most `limit`, optionally newest (highest key) first. */
  async entriesIn(range: { gte: string; lt: string }, limit: number, reverse = false): Promise<[string, Buffer][]> {
    if (limit <= 0) return []
    return this.db.iterator({ ...range, limit, reverse }).all()
  }

  /** The segment membership counts of a partition: count key -> users. */
  async readCounts(partition: number): Promise<[string, number][]> {
    const entries = await this.db.iterator({ ...countRange(partition) }).all()
    return entries.map(([k, v]) => [k, this.decode<number>(v)])
  }

  /** Partitions that hold any user, from the key space. */
  async partitionsInStore(): Promise<number[]> {
    const found: number[] = []
    let next = 'p'
    for (;;) {
      const keys = await this.db.keys({ gte: next, lt: 'q', limit: 1 }).all()
      const key = keys[0]
      if (key === undefined) return found
      const p = Number.parseInt(key.slice(1, 5), 16)
      found.push(p)
      next = `p${(p + 1).toString(16).padStart(4, '0')}`
    }
  }

  /** Timer index entries of a partition due in (afterMs, uptoMs], oldest first, at most `limit`. */
  async scanTimers(partition: number, afterMs: number, uptoMs: number, limit: number): Promise<TimerIndexEntry[]> {
    // One native read for the range, not a promise per timer (`for await` would be).
    const rows = (await this.db.iterator({ ...timerRange(partition, afterMs, uptoMs), limit, highWaterMarkBytes: SCAN_CHUNK_BYTES }).all()) as [string, Buffer][]
    const entries: TimerIndexEntry[] = new Array(rows.length)
    for (let i = 0; i < rows.length; i++) {
      const [key, value] = rows[i] as [string, Buffer]
      const [userId, timer] = this.decode<[string, string]>(value)
      entries[i] = { due: dueOfTimerKey(key), userId, timer }
    }
    return entries
  }

  /** The due time of the partition's first stored timer due after `afterMs` (Infinity: none). */
  async nextTimerDue(partition: number, afterMs: number): Promise<number> {
    const keys = await this.db.keys({ ...timersAfter(partition, afterMs), limit: 1 }).all()
    const first = keys[0]
    return first === undefined ? Infinity : dueOfTimerKey(first)
  }

  /** One msgpack value by key (undefined when absent). */
  async readValue<T>(key: string): Promise<T | undefined> {
    const buf = await this.db.get(key)
    return buf === undefined ? undefined : this.decode<T>(buf)
  }

  /** The underlying LevelDB, for the tag catalog's own `g!cat!` range (see tags/catalog.ts). */
  get level(): ClassicLevel<string, Buffer> {
    return this.db
  }

  /** Every user record of a partition in key order, in chunks of raw values (decoded by the caller). */
  async *userValues(partition: number, chunk = 1024): AsyncGenerator<[string, Buffer][]> {
    yield* chunks(this.db.iterator({ ...userRange(partition) }), chunk)
  }

  /** Up to `limit` projections of a partition after the user key `afterUserKey`, in key order: [projection key, value]. */
  async projectionsAfter(partition: number, afterUserKey: string | undefined, limit: number): Promise<[string, Buffer][]> {
    const range = projectionRange(partition)
    const bounds = afterUserKey === undefined ? range : { gt: projectionKeyOfUser(afterUserKey), lt: range.lt }
    return this.db.iterator({ ...bounds, limit, highWaterMarkBytes: SCAN_CHUNK_BYTES }).all() as Promise<[string, Buffer][]>
  }

  /**
   * Every projection of a partition in key order, in chunks of raw values (decoded by the caller);
   * or those of the users after `afterUserKey` and up to `throughUserKey` (user keys, bounds of a sweep's pass).
   */
  async *projectionValues(partition: number, chunk = 4096, afterUserKey?: string, throughUserKey?: string): AsyncGenerator<[string, Buffer][]> {
    const range = projectionRange(partition)
    const bounds = {
      ...(afterUserKey === undefined ? { gte: range.gte } : { gt: projectionKeyOfUser(afterUserKey) }),
      ...(throughUserKey === undefined ? { lt: range.lt } : { lte: projectionKeyOfUser(throughUserKey) }),
    }
    // classic-level ends a native read at 16 KiB by default: some 30 projections per round trip.
    yield* chunks(this.db.iterator({ ...bounds, highWaterMarkBytes: SCAN_CHUNK_BYTES }), chunk)
  }

  /** The projections of users `ids` of a partition (one getMany): undefined where a user has none. */
  async projectionsOf(partition: number, ids: readonly string[]): Promise<(Buffer | undefined)[]> {
    if (ids.length === 0) return []
    return this.db.getMany(ids.map((id) => projectionKey(partition, id)))
  }

  async readClock(partition: number): Promise<PartitionClock | undefined> {
    const buf = await this.db.get(clockKey(partition))
    return buf === undefined ? undefined : this.decode<PartitionClock>(buf)
  }

  async readGlobalOffset(source: string): Promise<number | undefined> {
    const buf = await this.db.get(globalOffsetKey(source))
    return buf === undefined ? undefined : this.decode<number>(buf)
  }

  async readPartitionOffset(partition: number, source: string): Promise<number | undefined> {
    const buf = await this.db.get(partitionOffsetKey(partition, source))
    return buf === undefined ? undefined : this.decode<number>(buf)
  }

  /** The one atomic write of a commit. `sync` makes it durable (fsync of LevelDB's log) before it resolves. */
  async commit(ops: WriteOp[], sync: boolean): Promise<void> {
    if (ops.length === 0) return
    // A chained batch: about 5x faster here than the array form, whose per-operation option
    // merging dominates at commit sizes of tens of thousands (measured in bench/).
    const batch = this.db.batch()
    for (const op of ops) {
      if (op.type === 'put') batch.put(op.key, op.value)
      else batch.del(op.key)
    }
    await batch.write({ sync })
  }

  // Key helpers re-exported for the engine, so it has one import for the store.
  static readonly keys = { userKey, timerKey, clockKey, globalOffsetKey, partitionOffsetKey }

  /** Approximate bytes on disk of a key range (LevelDB's own estimate). */
  async approximateSize(gte: string, lt: string): Promise<number> {
    return (this.db as unknown as { approximateSize(a: string, b: string): Promise<number> }).approximateSize(gte, lt)
  }
}

/** Bytes one native iterator read may return (the default, 16 KiB, makes a round trip per ~30 small values). */
const SCAN_CHUNK_BYTES = 4 << 20
/** Stores opened (not attached to) in this process, by resolved path. */
const OPEN_IN_THIS_PROCESS = new Set<string>()

/** An iterator's entries in chunks of `size` (one native `nextv` call each), closed at the end or on an early exit. */
async function* chunks<T>(it: { nextv(size: number): Promise<T[]>; close(): Promise<void> }, size: number): AsyncGenerator<T[]> {
  try {
    for (;;) {
      const chunk = await it.nextv(size)
      if (chunk.length === 0) return
      yield chunk
    }
  } finally {
    await it.close()
  }
}
