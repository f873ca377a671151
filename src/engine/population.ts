import { endianness } from 'node:os'
import { ErrorCodes, TagstreamError } from '../errors.js'
import type { Operator, PopulationView } from '../operator-api.js'
import { populationChunkKey, populationDeltaKey, populationHeadKey, populationKeyKind, seqOfPopulationDelta } from '../store/keys.js'
import type { Store, WriteOp } from '../store/store.js'

const BUCKET = 512

/** Populations in one shared array of sorted values (`Populations.toShared`), for worker threads. */
export interface SharedPopulations {
  readonly sets: readonly { readonly operator: string; readonly dimension: string; readonly start: number; readonly size: number; readonly sumState: readonly [number, number] }[]
  readonly values: Float64Array
}

/**
 * A multiset of numbers with rank queries, for population statistics: insert, remove and "how
 * many values are smaller than x" in O(sqrt n) (sorted buckets of at most 2 * BUCKET values), so
 * that a user's new value re-ranks in microseconds among a million, exactly, with no rescan.
 */
export class RankedMultiset implements PopulationView {
  private buckets: number[][] = []
  private size = 0
  // Neumaier-compensated running sum: adds and removes of a million floats keep the mean exact
  // to the last few bits.
  private sum = 0
  private compensation = 0
  /**
   * Values before each bucket, and the max rank: derived, rebuilt on the first query after a
   * change. A sweep's snapshot never changes, so its queries are binary searches.
   */
  private prefix: Int32Array | undefined
  private cachedMaxRank = -1

  get count(): number {
    return this.size
  }

  add(value: number): void {
    if (!Number.isFinite(value)) throw new RangeError(`population values must be finite, got ${value}`)
    this.addToSum(value)
    this.size++
    this.invalidate()
    const buckets = this.buckets
    if (buckets.length === 0) {
      buckets.push([value])
      return
    }
    const bi = this.bucketFor(value)
    const bucket = buckets[bi] as number[]
    bucket.splice(upperBound(bucket, value), 0, value)
    if (bucket.length > 2 * BUCKET) buckets.splice(bi, 1, bucket.slice(0, BUCKET), bucket.slice(BUCKET))
  }

  /** Removes one occurrence; false when the value is not there. */
  remove(value: number): boolean {
    const buckets = this.buckets
    if (buckets.length === 0) return false
    const bi = this.bucketFor(value)
    const bucket = buckets[bi] as number[]
    const i = lowerBound(bucket, value)
    if (bucket[i] !== value) return false
    bucket.splice(i, 1)
    if (bucket.length === 0) buckets.splice(bi, 1)
    this.size--
    this.invalidate()
    this.addToSum(-value)
    if (this.size === 0) {
      this.sum = 0
      this.compensation = 0
    }
    return true
  }

  private invalidate(): void {
    this.prefix = undefined
    this.cachedMaxRank = -1
  }

  /** Number of values strictly smaller than `value`. */
  countLess(value: number): number {
    const buckets = this.buckets
    if (buckets.length === 0) return 0
    let prefix = this.prefix
    if (prefix === undefined) {
      prefix = new Int32Array(buckets.length)
      let n = 0
      for (let i = 0; i < buckets.length; i++) {
        prefix[i] = n
        n += (buckets[i] as number[]).length
      }
      this.prefix = prefix
    }
    // The first bucket whose last value is >= value holds the boundary.
    let lo = 0
    let hi = buckets.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      const b = buckets[mid] as number[]
      if ((b[b.length - 1] as number) < value) lo = mid + 1
      else hi = mid
    }
    if (lo === buckets.length) return this.size
    return (prefix[lo] as number) + lowerBound(buckets[lo] as number[], value)
  }

  rank(value: number): number {
    return 1 + this.countLess(value)
  }

  maxRank(): number {
    if (this.cachedMaxRank >= 0) return this.cachedMaxRank
    const last = this.buckets[this.buckets.length - 1]
    this.cachedMaxRank = last === undefined ? 0 : this.rank(last[last.length - 1] as number)
    return this.cachedMaxRank
  }

  mean(): number {
    return this.size === 0 ? NaN : (this.sum + this.compensation) / this.size
  }

  /** A frozen copy (for a sweep that must see the population as it was at its clock). */
  snapshot(): RankedMultiset {
    const copy = new RankedMultiset()
    copy.buckets = this.buckets.map((b) => b.slice())
    copy.size = this.size
    copy.sum = this.sum
    copy.compensation = this.compensation
    return copy
  }

  /** Writes the values, in order, at `into[at...]`; returns the count written. */
  writeSorted(into: Float64Array, at: number): number {
    let i = at
    for (const b of this.buckets) for (const v of b) into[i++] = v
    return i - at
  }

  /** The exact running sum (and its compensation): a set rebuilt elsewhere gives the same mean. */
  get sumState(): readonly [sum: number, compensation: number] {
    return [this.sum, this.compensation]
  }

  /**
   * Fills an empty set with `values` at once (sorted here, in place, unless they already are): a
   * million values in one sort instead of a million inserts. The sum is accumulated in sorted order.
   */
  load(values: Float64Array): void {
    if (this.size !== 0) throw new Error('load needs an empty set')
    // Stored snapshots come sorted: a linear check instead of a sort (~150 ms per million here).
    if (!isSorted(values)) values.sort()
    const buckets: number[][] = []
    for (let i = 0; i < values.length; i += BUCKET) {
      const bucket: number[] = []
      const end = Math.min(values.length, i + BUCKET)
      for (let j = i; j < end; j++) {
        const v = values[j] as number
        if (!Number.isFinite(v)) throw new RangeError(`population values must be finite, got ${v}`)
        bucket.push(v)
        this.addToSum(v)
      }
      buckets.push(bucket)
    }
    this.buckets = buckets
    this.size = values.length
    this.invalidate()
  }

  /** Every value, sorted. */
  values(): Float64Array {
    const out = new Float64Array(this.size)
    let n = 0
    for (const bucket of this.buckets) for (const v of bucket) out[n++] = v
    return out
  }

  /** Adds many values at once (a partition's population joining), merged with the values held. */
  addAll(values: Float64Array): void {
    if (values.length === 0) return
    if (this.size === 0) return this.load(values)
    const all = mergeSorted(this.values(), isSorted(values) ? values : values.slice().sort())
    this.reset()
    this.load(all)
  }

  /**
   * Removes one occurrence of each of `sorted` (ascending) at once (a partition's population
   * leaving), in one pass; values not there are skipped, as `remove` would.
   */
  removeAll(sorted: Float64Array): void {
    if (sorted.length === 0 || this.size === 0) return
    const kept = subtractSorted(this.values(), sorted, false) as Float64Array
    this.reset()
    this.load(kept)
  }

  private reset(): void {
    this.buckets = []
    this.size = 0
    this.sum = 0
    this.compensation = 0
    this.invalidate()
  }

  /** The bucket a value belongs in: the first whose last value is >= it, else the last. */
  private bucketFor(value: number): number {
    const buckets = this.buckets
    let lo = 0
    let hi = buckets.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      const b = buckets[mid] as number[]
      if ((b[b.length - 1] as number) < value) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  private addToSum(value: number): void {
    const t = this.sum + value
    if (Math.abs(this.sum) >= Math.abs(value)) this.compensation += this.sum - t + value
    else this.compensation += value - t + this.sum
    this.sum = t
  }
}

function isSorted(values: Float64Array): boolean {
  for (let i = 1; i < values.length; i++) if ((values[i - 1] as number) > (values[i] as number)) return false
  return true
}

/**
 * A population dimension over its sorted values in shared memory (`Populations.toShared`): the
 * queries of a RankedMultiset of the same values, by binary search, with nothing copied.
 */
class SortedValuesView implements PopulationView {
  private readonly meanValue: number

  constructor(
    private readonly values: Float64Array,
    sumState: readonly [sum: number, compensation: number],
  ) {
    this.meanValue = values.length === 0 ? NaN : (sumState[0] + sumState[1]) / values.length
  }

  get count(): number {
    return this.values.length
  }

  rank(value: number): number {
    return 1 + lowerBound(this.values, value)
  }

  maxRank(): number {
    const n = this.values.length
    return n === 0 ? 0 : this.rank(this.values[n - 1] as number)
  }

  mean(): number {
    return this.meanValue
  }
}

/** The population views of shared populations, by operator and dimension (an absent one is empty). */
export function sharedPopulationViews(shared: SharedPopulations): (operator: string, dimension: string) => PopulationView {
  const views = new Map<string, Map<string, PopulationView>>()
  for (const { operator, dimension, start, size, sumState } of shared.sets) {
    let byDimension = views.get(operator)
    if (byDimension === undefined) views.set(operator, (byDimension = new Map()))
    byDimension.set(dimension, new SortedValuesView(shared.values.subarray(start, start + size), sumState))
  }
  const empty = new SortedValuesView(new Float64Array(0), [0, 0])
  return (operator, dimension) => views.get(operator)?.get(dimension) ?? empty
}

function lowerBound(a: ArrayLike<number>, v: number): number {
  let lo = 0
  let hi = a.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if ((a[mid] as number) < v) lo = mid + 1
    else hi = mid
  }
  return lo
}

function upperBound(a: number[], v: number): number {
  let lo = 0
  let hi = a.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if ((a[mid] as number) <= v) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * Where `Populations.update` reports every value it moves, so that what moved in memory is also
 * written to the store (a partition's pending population delta).
 */
export interface PopulationJournal {
  moved(operator: string, dimension: string, value: number, count: 1 | -1): void
}

/** The population statistics of every operator dimension. */
export class Populations {
  // Nested maps: `get` runs for every ranked tag derivation, and builds no key string.
  private readonly sets = new Map<string, Map<string, RankedMultiset>>()

  get(operator: string, dimension: string): RankedMultiset {
    let byDimension = this.sets.get(operator)
    if (byDimension === undefined) {
      byDimension = new Map()
      this.sets.set(operator, byDimension)
    }
    let set = byDimension.get(dimension)
    if (set === undefined) {
      set = new RankedMultiset()
      byDimension.set(dimension, set)
    }
    return set
  }

  /**
   * Moves one user's contribution from `before` to `after` (either may be undefined), and reports
   * each value moved to `journal`. All or nothing: a non-finite new value throws before anything
   * is moved.
   */
  update(
    operator: string,
    before: Readonly<Record<string, number>> | undefined,
    after: Readonly<Record<string, number>> | undefined,
    journal?: PopulationJournal,
  ): void {
    if (before === after) return
    if (after !== undefined) {
      for (const dim in after) {
        const v = after[dim] as number
        if (!Number.isFinite(v)) throw new RangeError(`population value ${operator}.${dim} must be finite, got ${v}`)
      }
    }
    if (before !== undefined) {
      for (const dim in before) {
        const v = before[dim] as number
        if (after !== undefined && after[dim] === v) continue
        this.get(operator, dim).remove(v)
        journal?.moved(operator, dim, v, -1)
      }
    }
    if (after !== undefined) {
      for (const dim in after) {
        const v = after[dim] as number
        if (before !== undefined && before[dim] === v) continue
        this.get(operator, dim).add(v)
        journal?.moved(operator, dim, v, 1)
      }
    }
  }

  /**
   * Every set's values in one shared array, for worker threads: a message carries the shared
   * memory, not a copy, and a thread reads the sets there (`sharedPopulationViews`).
   */
  toShared(): SharedPopulations {
    let total = 0
    for (const dims of this.sets.values()) for (const set of dims.values()) total += set.count
    const values = new Float64Array(new SharedArrayBuffer(total * Float64Array.BYTES_PER_ELEMENT))
    const sets: SharedPopulations['sets'][number][] = []
    let at = 0
    for (const [operator, dims] of this.sets) {
      for (const [dimension, set] of dims) {
        const size = set.writeSorted(values, at)
        sets.push({ operator, dimension, start: at, size, sumState: set.sumState })
        at += size
      }
    }
    return { sets, values }
  }


  snapshot(): Populations {
    const copy = new Populations()
    for (const [op, dims] of this.sets) copy.sets.set(op, new Map([...dims].map(([d, set]) => [d, set.snapshot()])))
    return copy
  }
}

/**
 * Which users a ranked value is ranked among (`engine.populationScope`).
 * - `process`: every user of every partition this process holds. Exact among them, as a batch
 *   analysis over the same users; but at any instant the other partitions hold what has been
 *   consumed of them so far, which through Kafka depends on how the consumer interleaves them.
 * - `partition`: the users of the user's own partition. Ranks then follow from that partition's
 *   events alone, so a replay after a crash, a rebalance or a second process gives the same
 *   population-ranked tags (and tag-change ids) as the first run. With users spread over the
 *   partitions by hash, each partition is a random sample of the whole.
 */
export type PopulationScope = 'process' | 'partition'

/** The engine's population statistics, by partition, under a `PopulationScope`. */
export class ScopedPopulations {
  /** `process` scope: the one population every partition shares. */
  private readonly whole: Populations | undefined
  private readonly byPartition = new Map<number, Populations>()

  constructor(readonly scope: PopulationScope) {
    this.whole = scope === 'process' ? new Populations() : undefined
  }

  /** The population a user of `partition` is ranked among (created empty on first use). */
  of(partition: number): Populations {
    if (this.whole !== undefined) return this.whole
    let own = this.byPartition.get(partition)
    if (own === undefined) {
      own = new Populations()
      this.byPartition.set(partition, own)
    }
    return own
  }

  /** The population the partitions share, if they share one: what leaving partitions are taken out of. */
  get shared(): Populations | undefined {
    return this.whole
  }

  /** Drops partitions' own populations (`partition` scope; a shared one is left to `PopulationLog.forget`). */
  drop(partitions: Iterable<number>): void {
    for (const p of partitions) this.byPartition.delete(p)
  }
}

/**
 * The columns of the stored population values: one per (operator, dimension) of every ranked
 * operator, in declaration order. `id` is stored with the values; values written with another
 * layout (operators or dimensions changed) are rebuilt from the user records.
 */
export class ScoredLayout {
  readonly operators: readonly Operator[]
  readonly columns: readonly { readonly operator: string; readonly dimension: string }[]
  readonly id: string
  /** Column index by operator and dimension. */
  readonly columnOf: ReadonlyMap<string, ReadonlyMap<string, number>>
  /** Index of each ranked operator's first column. */
  private readonly firstColumn: readonly number[]

  constructor(operators: readonly Operator[]) {
    this.operators = operators.filter((op) => op.scoredValues !== undefined)
    this.columns = this.operators.flatMap((op) => (op.population ?? []).map((dimension) => ({ operator: op.name, dimension })))
    this.id = JSON.stringify({ v: 1, columns: this.columns.map((c) => [c.operator, c.dimension]) })
    const columnOf = new Map<string, Map<string, number>>()
    this.columns.forEach((c, i) => {
      let byDimension = columnOf.get(c.operator)
      if (byDimension === undefined) columnOf.set(c.operator, (byDimension = new Map()))
      if (!byDimension.has(c.dimension)) byDimension.set(c.dimension, i)
    })
    this.columnOf = columnOf
    let first = 0
    this.firstColumn = this.operators.map((op) => {
      const at = first
      first += (op.population ?? []).length
      return at
    })
  }

  get width(): number {
    return this.columns.length
  }

  firstColumnOf(operatorIndex: number): number {
    return this.firstColumn[operatorIndex] as number
  }
}

/** Values per column, grown as they are read; `finish` sorts them. */
class ColumnBuilder {
  private readonly values: Float64Array[]
  private readonly counts: number[]

  constructor(private readonly layout: ScoredLayout) {
    this.values = layout.columns.map(() => new Float64Array(1024))
    this.counts = layout.columns.map(() => 0)
  }

  add(column: number, value: number): void {
    let arr = this.values[column] as Float64Array
    const n = this.counts[column] as number
    if (n === arr.length) {
      const grown = new Float64Array(arr.length * 2)
      grown.set(arr)
      this.values[column] = grown
      arr = grown
    }
    // -0 as 0: the journal's net counts (Map keys) do the same, so every path stores the same bits.
    arr[n] = value === 0 ? 0 : value
    this.counts[column] = n + 1
  }

  /** A legacy s! value: one Float64 LE per column, NaN where the user is not scored. */
  addEncoded(buf: Buffer): void {
    const width = Math.min(this.layout.width, buf.length >> 3)
    for (let c = 0; c < width; c++) {
      const v = buf.readDoubleLE(c * 8)
      if (!Number.isNaN(v)) this.add(c, v)
    }
  }

  addScored(operatorIndex: number, values: Readonly<Record<string, number>>): void {
    let col = this.layout.firstColumnOf(operatorIndex)
    for (const dim of this.layout.operators[operatorIndex]?.population ?? []) {
      const v = values[dim]
      if (v !== undefined) this.add(col, v)
      col++
    }
  }

  finish(): Float64Array[] {
    return this.values.map((arr, i) => {
      const column = arr.slice(0, this.counts[i])
      for (const v of column) if (!Number.isFinite(v)) throw new RangeError(`population values must be finite, got ${v}`)
      return column.sort()
    })
  }
}

// ---------------------------------------------------------------- stored snapshot and deltas

/** Values per snapshot chunk (512 KiB): a million values in a few reads, each far below LevelDB's write buffer. */
const CHUNK_VALUES = 65_536

/** When a partition's deltas are folded into its snapshot. */
export interface CompactionPolicy {
  /** Fold once the landed deltas hold more values than this share of the snapshot's... */
  readonly share: number
  /** ...and more than this many values (added and removed). */
  readonly minValues: number
}

export const DEFAULT_COMPACTION: CompactionPolicy = { share: 0.25, minValues: 16_384 }

interface SnapshotHead {
  readonly layout: string
  /** The highest delta sequence number folded in. */
  readonly seq: number
  /** Values per column. */
  readonly columns: readonly number[]
  readonly chunks: number
}

/** A partition's population as stored: snapshot plus deltas, per column, sorted. */
interface StoredPopulation {
  readonly columns: Float64Array[]
  /** The highest sequence number in the store (head or delta). */
  readonly seq: number
  /** Every `P!` key read. */
  readonly keys: readonly string[]
  /** The head's sequence number, values in the snapshot, values in the deltas (added and removed). */
  readonly headSeq: number
  readonly snapshotValues: number
  readonly deltaValues: number
}

/** Why a partition's stored population cannot be used, and what is there (to replace it). */
interface UnusablePopulation {
  readonly reason: string
  readonly seq: number
  readonly keys: readonly string[]
}

const LITTLE_ENDIAN = endianness() === 'LE'

/** A Float64Array's bytes, little-endian (a view of it on the usual little-endian hosts). */
function float64Bytes(values: Float64Array): Buffer {
  if (LITTLE_ENDIAN) return Buffer.from(values.buffer, values.byteOffset, values.byteLength)
  const out = Buffer.allocUnsafe(values.length * 8)
  for (let i = 0; i < values.length; i++) out.writeDoubleLE(values[i] as number, i * 8)
  return out
}

/** Copies little-endian Float64 bytes into `into` at `at`. */
function readFloat64s(bytes: Buffer, into: Float64Array, at: number): void {
  if (LITTLE_ENDIAN) {
    new Uint8Array(into.buffer, into.byteOffset + at * 8, bytes.length).set(bytes)
    return
  }
  for (let i = 0; i < bytes.length >> 3; i++) into[at + i] = bytes.readDoubleLE(i * 8)
}

/**
 * A delta value: u32 width, u32 0, then per column u32 added and u32 removed counts, then per
 * column its added values and its removed values (Float64), all little-endian.
 */
function encodeDelta(added: readonly number[][], removed: readonly number[][]): Buffer {
  const width = added.length
  let values = 0
  for (let c = 0; c < width; c++) values += (added[c] as number[]).length + (removed[c] as number[]).length
  const header = 8 + width * 8
  const buf = Buffer.allocUnsafe(header + values * 8)
  buf.writeUInt32LE(width, 0)
  buf.writeUInt32LE(0, 4)
  let at = header
  for (let c = 0; c < width; c++) {
    const a = added[c] as number[]
    const r = removed[c] as number[]
    buf.writeUInt32LE(a.length, 8 + c * 8)
    buf.writeUInt32LE(r.length, 12 + c * 8)
    for (const v of a) at = buf.writeDoubleLE(v, at)
    for (const v of r) at = buf.writeDoubleLE(v, at)
  }
  return buf
}

function decodeDelta(buf: Buffer, width: number): { added: Float64Array[]; removed: Float64Array[] } | undefined {
  if (buf.length < 8 || buf.readUInt32LE(0) !== width) return undefined
  const header = 8 + width * 8
  const added: Float64Array[] = []
  const removed: Float64Array[] = []
  let at = header
  for (let c = 0; c < width; c++) {
    const a = new Float64Array(buf.readUInt32LE(8 + c * 8))
    const r = new Float64Array(buf.readUInt32LE(12 + c * 8))
    if (at + (a.length + r.length) * 8 > buf.length) return undefined
    readFloat64s(buf.subarray(at, at + a.length * 8), a, 0)
    at += a.length * 8
    readFloat64s(buf.subarray(at, at + r.length * 8), r, 0)
    at += r.length * 8
    added.push(a)
    removed.push(r)
  }
  return at === buf.length ? { added, removed } : undefined
}

/** Two ascending arrays merged into one. */
function mergeSorted(a: Float64Array, b: Float64Array): Float64Array {
  if (b.length === 0) return a
  const out = new Float64Array(a.length + b.length)
  let i = 0
  let j = 0
  let k = 0
  while (i < a.length && j < b.length) out[k++] = (a[i] as number) <= (b[j] as number) ? (a[i++] as number) : (b[j++] as number)
  while (i < a.length) out[k++] = a[i++] as number
  while (j < b.length) out[k++] = b[j++] as number
  return out
}

/**
 * `from` without one occurrence of each value of `removed` (both ascending). With `strict`, a value
 * of `removed` that `from` lacks makes the result undefined; otherwise it is skipped.
 */
function subtractSorted(from: Float64Array, removed: Float64Array, strict: boolean): Float64Array | undefined {
  if (removed.length === 0) return from
  const out = new Float64Array(from.length)
  let i = 0
  let k = 0
  for (let j = 0; j < removed.length; j++) {
    const r = removed[j] as number
    while (i < from.length && (from[i] as number) < r) out[k++] = from[i++] as number
    if (i < from.length && from[i] === r) i++
    else if (strict) return undefined
  }
  while (i < from.length) out[k++] = from[i++] as number
  return out.subarray(0, k)
}

/**
 * Reads a partition's snapshot and deltas (one consistent iterator) and applies the deltas: all of
 * them, or those up to `upToSeq` (the population as it was when that delta was cut; unusable when
 * a compaction has folded later ones into the snapshot).
 */
async function readStored(store: Store, layout: ScoredLayout, partition: number, upToSeq = Infinity): Promise<StoredPopulation | UnusablePopulation> {
  const keys: string[] = []
  const chunks: Buffer[] = []
  const deltas: [seq: number, value: Buffer][] = []
  let head: SnapshotHead | undefined
  let chunksInOrder = true
  for await (const entries of store.populationEntries(partition)) {
    for (const [key, value] of entries) {
      keys.push(key)
      const kind = populationKeyKind(key)
      if (kind === 'c') {
        chunksInOrder &&= key === populationChunkKey(partition, chunks.length)
        chunks.push(value)
      } else if (kind === 'd') deltas.push([seqOfPopulationDelta(key), value])
      else if (kind === 'h') head = store.decode<SnapshotHead>(value)
    }
  }
  let seq = head?.seq ?? 0
  for (const [s] of deltas) seq = Math.max(seq, s)
  const unusable = (reason: string): UnusablePopulation => ({ reason, seq, keys })
  if (head === undefined) return unusable('no snapshot')
  if (head.layout !== layout.id) return unusable('the ranked operators changed')
  if (head.seq > upToSeq) return unusable(`the snapshot holds deltas after ${upToSeq}`)
  let total = 0
  for (const n of head.columns) total += n
  let bytes = 0
  for (const c of chunks) bytes += c.length
  if (!chunksInOrder || chunks.length !== head.chunks || bytes !== total * 8 || head.columns.length !== layout.width) return unusable('snapshot incomplete')
  const all = new Float64Array(total)
  let at = 0
  for (const c of chunks) {
    readFloat64s(c, all, at)
    at += c.length >> 3
  }
  const added: Float64Array[][] = layout.columns.map(() => [])
  const removed: Float64Array[][] = layout.columns.map(() => [])
  let deltaValues = 0
  for (const [s, value] of deltas) {
    // A compaction deletes what it folds in the batch that writes the head.
    if (s <= head.seq) return unusable(`delta ${s} is already in the snapshot`)
    if (s > upToSeq) continue
    const delta = decodeDelta(value, layout.width)
    if (delta === undefined) return unusable(`delta ${s} unreadable`)
    for (let c = 0; c < layout.width; c++) {
      ;(added[c] as Float64Array[]).push(delta.added[c] as Float64Array)
      ;(removed[c] as Float64Array[]).push(delta.removed[c] as Float64Array)
      deltaValues += (delta.added[c] as Float64Array).length + (delta.removed[c] as Float64Array).length
    }
  }
  const columns: Float64Array[] = []
  let start = 0
  for (let c = 0; c < layout.width; c++) {
    const n = head.columns[c] as number
    const column = subtractSorted(mergeSorted(all.subarray(start, start + n), concat(added[c] as Float64Array[]).sort()), concat(removed[c] as Float64Array[]).sort(), true)
    if (column === undefined) return unusable('the deltas remove values the snapshot does not hold')
    columns.push(column)
    start += n
  }
  return { columns, seq, keys, headSeq: head.seq, snapshotValues: total, deltaValues }
}

/** Ascending arrays merged into one, pairwise. */
function mergeAll(arrays: readonly Float64Array[]): Float64Array {
  let runs = [...arrays]
  if (runs.length === 0) return new Float64Array(0)
  while (runs.length > 1) {
    const next: Float64Array[] = []
    for (let i = 0; i < runs.length; i += 2) next.push(i + 1 < runs.length ? mergeSorted(runs[i] as Float64Array, runs[i + 1] as Float64Array) : (runs[i] as Float64Array))
    runs = next
  }
  return runs[0] as Float64Array
}

function concat(arrays: readonly Float64Array[]): Float64Array {
  if (arrays.length === 1) return arrays[0] as Float64Array
  let n = 0
  for (const a of arrays) n += a.length
  const out = new Float64Array(n)
  n = 0
  for (const a of arrays) {
    out.set(a, n)
    n += a.length
  }
  return out
}

/**
 * A partition's stored population (snapshot plus deltas) per layout column, sorted; or why there
 * is none to use. For inspection: `rebuildPopulations` falls back to the user records instead.
 */
export async function readStoredPopulation(store: Store, layout: ScoredLayout, partition: number): Promise<{ columns: Float64Array[] } | { reason: string }> {
  const stored = await readStored(store, layout, partition)
  return 'columns' in stored ? { columns: stored.columns } : { reason: stored.reason }
}

/**
 * The batch that replaces a partition's stored population with `columns` (sorted) as its snapshot,
 * folding every delta up to `seq`: the head, the chunks, and deletes of the other `keys` read.
 */
function snapshotOps(store: Store, layout: ScoredLayout, partition: number, columns: readonly Float64Array[], seq: number, keys: readonly string[]): WriteOp[] {
  const all = concat(columns)
  const ops: WriteOp[] = []
  const written = new Set<string>()
  const chunks = Math.ceil(all.length / CHUNK_VALUES)
  for (let i = 0; i < chunks; i++) {
    const key = populationChunkKey(partition, i)
    ops.push({ type: 'put', key, value: float64Bytes(all.subarray(i * CHUNK_VALUES, (i + 1) * CHUNK_VALUES)) })
    written.add(key)
  }
  const head: SnapshotHead = { layout: layout.id, seq, columns: columns.map((c) => c.length), chunks }
  const headKey = populationHeadKey(partition)
  ops.push({ type: 'put', key: headKey, value: store.encode(head) })
  written.add(headKey)
  for (const key of keys) if (!written.has(key)) ops.push({ type: 'del', key })
  return ops
}

/** A partition's population values from its user records. */
async function columnsFromRecords(store: Store, layout: ScoredLayout, partition: number, progress: { usersRestored: number } | undefined): Promise<Float64Array[]> {
  const columns = new ColumnBuilder(layout)
  for await (const rec of store.iterateUsers(partition)) {
    if (progress !== undefined) progress.usersRestored++
    layout.operators.forEach((op, i) => {
      const state = rec.ops[op.name]
      if (state !== undefined) columns.addScored(i, op.scoredValues!(state))
    })
  }
  return columns.finish()
}

/** A partition's population values from the s! values of a store written before snapshots. */
async function columnsFromLegacy(store: Store, layout: ScoredLayout, partition: number, progress: { usersRestored: number } | undefined): Promise<Float64Array[]> {
  const columns = new ColumnBuilder(layout)
  for await (const chunk of store.iterateScored(partition)) {
    for (const buf of chunk) columns.addEncoded(buf)
    if (progress !== undefined) progress.usersRestored += chunk.length
  }
  return columns.finish()
}

function warnUnusable(partition: number, unusable: UnusablePopulation): void {
  if (unusable.reason === 'no snapshot') return
  process.emitWarning(`population snapshot of partition ${partition} not used (${unusable.reason}): rebuilt from the user records`)
}

/** What a restore found of a partition's stored population. */
interface RestoredPartition {
  readonly seq: number
  /** The snapshot head's sequence number. */
  readonly foldedSeq: number
  readonly snapshotValues: number
  readonly deltaValues: number
}

/**
 * Population statistics are derived data, rebuilt from the committed state. The fast way reads
 * each partition's snapshot and deltas (a few large values); a partition without a usable one
 * (a new or older store, other ranked operators, an inconsistency) is rebuilt from its user
 * records, or from a legacy store's s! values, and, with `persist`, given its snapshot.
 */
export async function rebuildPopulations(
  store: Store,
  operators: readonly Operator[] | ScoredLayout,
  partitionsIn: Iterable<number>,
  into: Populations | ScopedPopulations,
  options: { persist: boolean; progress?: { usersRestored: number } } = { persist: false },
): Promise<Map<number, RestoredPartition>> {
  const layout = operators instanceof ScoredLayout ? operators : new ScoredLayout(operators)
  const partitions = [...partitionsIn]
  const restored = new Map<number, RestoredPartition>()
  if (layout.width === 0) {
    for (const p of partitions) restored.set(p, { seq: 0, foldedSeq: 0, snapshotValues: 0, deltaValues: 0 })
    return restored
  }
  const { persist, progress } = options
  const legacyLayout = await store.readScoredLayout()
  const perPartition = await Promise.all(
    // Partitions read concurrently: LevelDB's reads of one overlap with the decoding of another.
    partitions.map(async (p) => {
      const stored = await readStored(store, layout, p)
      if ('columns' in stored) {
        if (progress !== undefined) {
          // Read first: `+= await` would add to the count as it was before the await.
          const users = (await store.readClock(p))?.users ?? 0
          progress.usersRestored += users
        }
        restored.set(p, { seq: stored.seq, foldedSeq: stored.headSeq, snapshotValues: stored.snapshotValues, deltaValues: stored.deltaValues })
        return stored.columns
      }
      warnUnusable(p, stored)
      // The s! values are current while their layout key is there (a store written before snapshots).
      const columns = stored.keys.length === 0 && legacyLayout === layout.id ? await columnsFromLegacy(store, layout, p, progress) : await columnsFromRecords(store, layout, p, progress)
      if (persist) await store.commit(snapshotOps(store, layout, p, columns, stored.seq, stored.keys), false)
      restored.set(p, { seq: stored.seq, foldedSeq: stored.seq, snapshotValues: countValues(columns), deltaValues: 0 })
      return columns
    }),
  )
  if (persist && partitions.length > 0) {
    // Commits no longer write s! values: once a partition is restored they are stale, for good
    // (partitions restored later, e.g. assigned by Kafka, are rebuilt from their records).
    if (legacyLayout !== undefined) await store.dropScoredLayout()
    for (const p of partitions) await store.clearScored(p)
  }
  const shared = into instanceof ScopedPopulations ? into.shared : into
  if (shared !== undefined) {
    // Each partition's column is sorted: merged, not sorted again.
    layout.columns.forEach((c, i) => shared.get(c.operator, c.dimension).addAll(mergeAll(perPartition.map((columns) => columns[i] as Float64Array))))
  } else {
    const scoped = into as ScopedPopulations
    partitions.forEach((p, k) => {
      const own = scoped.of(p)
      layout.columns.forEach((c, i) => own.get(c.operator, c.dimension).addAll((perPartition[k] as Float64Array[])[i] as Float64Array))
    })
  }
  return restored
}

function countValues(columns: readonly Float64Array[]): number {
  let n = 0
  for (const c of columns) n += c.length
  return n
}

/** A partition's population moves since the last commit: net counts per column and value. */
class PartitionLog implements PopulationJournal {
  /** The last delta sequence number taken into a commit (or found in the store). */
  seq: number
  snapshotValues: number
  /**
   * Values in each landed delta not folded into the snapshot yet, by sequence number. A
   * compaction may read a delta before its commit's `landed` runs: deltas up to `foldedSeq` are
   * not counted again.
   */
  private readonly landedDeltas = new Map<number, number>()
  private foldedSeq: number
  private pending: Map<number, number>[]
  private dirty = false
  /** Moves cut off from the later ones at a sweep's instant (`cut`), oldest first: each becomes a delta of its own. */
  private cuts: Map<number, number>[][] = []
  /** The partitions whose unfinished sweep ranks against a population cut from this one's deltas: compactions wait. */
  readonly heldBy = new Set<number>()

  constructor(
    private readonly layout: ScoredLayout,
    restored: RestoredPartition,
  ) {
    this.seq = restored.seq
    this.snapshotValues = restored.snapshotValues
    this.foldedSeq = restored.foldedSeq
    if (restored.deltaValues > 0) this.landedDeltas.set(restored.seq, restored.deltaValues)
    this.pending = this.emptyColumns()
  }

  private emptyColumns(): Map<number, number>[] {
    return this.layout.columns.map(() => new Map())
  }

  /**
   * The number of the delta up to which the stored deltas give the population as it is now: the
   * moves so far are cut off into a delta of their own (written by the next commit, before the
   * moves that follow).
   */
  cut(): number {
    if (this.dirty) {
      this.cuts.push(this.pending)
      this.pending = this.emptyColumns()
      this.dirty = false
    }
    return this.seq + this.cuts.length
  }

  moved(operator: string, dimension: string, value: number, count: 1 | -1): void {
    const column = this.layout.columnOf.get(operator)?.get(dimension)
    // Dimensions an operator scores but does not declare are not kept (a rebuild ignores them too).
    if (column === undefined) return
    const counts = this.pending[column] as Map<number, number>
    // A Map key folds -0 into 0; a value moved and moved back within one commit cancels out.
    const n = (counts.get(value) ?? 0) + count
    if (n === 0) counts.delete(value)
    else counts.set(value, n)
    this.dirty = true
  }

  get deltaValues(): number {
    let n = 0
    for (const values of this.landedDeltas.values()) n += values
    return n
  }

  landed(seq: number, values: number): void {
    if (seq > this.foldedSeq) this.landedDeltas.set(seq, values)
  }

  /** A compaction folded every delta up to `seq` into a snapshot of `snapshotValues` values. */
  folded(seq: number, snapshotValues: number): void {
    this.foldedSeq = Math.max(this.foldedSeq, seq)
    for (const s of this.landedDeltas.keys()) if (s <= seq) this.landedDeltas.delete(s)
    this.snapshotValues = snapshotValues
  }

  get hasPending(): boolean {
    return this.dirty || this.cuts.length > 0
  }

  /**
   * The pending moves as delta values, and clears them: one per cut, in order (numbered as `cut`
   * said, so written even when empty), then the moves since, unless they cancelled out.
   */
  drain(): { value: Buffer; values: number }[] {
    const deltas = this.cuts.map((columns) => encodeMoves(columns))
    this.cuts = []
    if (this.dirty) {
      this.dirty = false
      const rest = encodeMoves(this.pending)
      if (rest.values > 0) deltas.push(rest)
    }
    return deltas
  }
}

/** Net moves per column as one delta value (and clears them). */
function encodeMoves(columns: readonly Map<number, number>[]): { value: Buffer; values: number } {
  const added: number[][] = []
  const removed: number[][] = []
  let values = 0
  for (const counts of columns) {
    const a: number[] = []
    const r: number[] = []
    for (const [v, n] of counts) {
      if (n > 0) for (let i = 0; i < n; i++) a.push(v)
      else for (let i = 0; i < -n; i++) r.push(v)
    }
    counts.clear()
    added.push(a)
    removed.push(r)
    values += a.length + r.length
  }
  return { value: encodeDelta(added, removed), values }
}

/** Where a sweep's population was cut: for each partition it ranks against, the delta its population is as of. */
export type SweepCut = readonly (readonly [partition: number, seq: number])[]

/** The population deltas of one commit, taken synchronously at its start. */
export interface TakenPopulationDeltas {
  readonly ops: readonly WriteOp[]
  readonly logs: readonly (readonly [log: PartitionLog, seq: number, values: number])[]
}

/**
 * Keeps the stored population statistics in step with the in-memory ones: restores partitions
 * from their snapshots, journals every value `Populations.update` moves (per partition), hands
 * each commit its deltas, and folds landed deltas into new snapshots between commits.
 */
export class PopulationLog {
  readonly layout: ScoredLayout
  private readonly partitions = new Map<number, PartitionLog>()
  private compaction: Promise<void> | undefined
  private failure: unknown

  constructor(
    private readonly store: Store,
    operators: readonly Operator[],
    private readonly policy: CompactionPolicy = DEFAULT_COMPACTION,
  ) {
    this.layout = new ScoredLayout(operators)
  }

  /**
   * Restores the partitions' population statistics into `into` (adding to what it holds).
   * `holds`: the cuts of interrupted sweeps, by sweeping partition (see `cutForSweep`): the partitions they cut stay held from compaction.
   */
  async restore(
    partitions: readonly number[],
    into: Populations | ScopedPopulations,
    progress?: { usersRestored: number },
    holds: ReadonlyMap<number, SweepCut> = new Map(),
  ): Promise<void> {
    await this.idle()
    const restored = await rebuildPopulations(this.store, this.layout, partitions, into, { persist: true, ...(progress !== undefined ? { progress } : {}) })
    for (const [p, r] of restored) this.partitions.set(p, new PartitionLog(this.layout, r))
    for (const [sweeping, cut] of holds) for (const [p] of cut) this.partitions.get(p)?.heldBy.add(sweeping)
    this.compactIfDue()
  }

  /**
   * A sweep of partition `sweeping` starts at this instant, ranking against the population of
   * `partitions` (its own, or every partition of the process): returns, for each, the number of
   * the delta up to which its stored snapshot and deltas give its population as it is now, and
   * keeps compactions from folding later deltas until `release`, so that a sweep interrupted by a
   * crash resumes against the same population (`populationAt`).
   */
  cutForSweep(sweeping: number, partitions: Iterable<number>): SweepCut {
    const cut: [number, number][] = []
    for (const p of partitions) {
      const log = this.journal(p) as PartitionLog
      cut.push([p, log.cut()])
      log.heldBy.add(sweeping)
    }
    return cut
  }

  /** The sweep of partition `sweeping` has finished (or will not use its cut): the deltas it held may be folded again. */
  release(sweeping: number): void {
    let released = false
    for (const log of this.partitions.values()) released = log.heldBy.delete(sweeping) || released
    if (released) this.compactIfDue()
  }

  /**
   * The population of a sweep's cut (see `cutForSweep`), added to `into`; false when the store no
   * longer has it all (a partition not held here, a store written before sweeps cut their deltas).
   */
  async populationAt(cut: SweepCut, into: Populations): Promise<boolean> {
    await this.idle()
    const parts: Float64Array[][] = []
    for (const [p, seq] of cut) {
      if (!this.partitions.has(p)) return false
      const stored = await readStored(this.store, this.layout, p, seq)
      if (!('columns' in stored)) return false
      parts.push(stored.columns)
    }
    this.layout.columns.forEach((c, i) => into.get(c.operator, c.dimension).addAll(mergeAll(parts.map((columns) => columns[i] as Float64Array))))
    return true
  }

  /** Where a partition's population moves are journaled until the next commit takes them. */
  journal(partition: number): PopulationJournal {
    const log = this.partitions.get(partition)
    if (log === undefined) throw new TagstreamError(ErrorCodes.ENGINE_STATE, `population of partition ${partition} moved before it was restored`)
    return log
  }

  /** The commit's delta writes: one per partition whose population moved. Synchronous. */
  take(): TakenPopulationDeltas {
    if (this.failure !== undefined) throw this.failure
    const ops: WriteOp[] = []
    const logs: [PartitionLog, number, number][] = []
    for (const [p, log] of this.partitions) {
      if (!log.hasPending) continue
      for (const delta of log.drain()) {
        log.seq++
        ops.push({ type: 'put', key: populationDeltaKey(p, log.seq), value: delta.value })
        logs.push([log, log.seq, delta.values])
      }
    }
    return { ops, logs }
  }

  /** The commit holding `taken` is in the store: its deltas may be folded from now on. */
  landed(taken: TakenPopulationDeltas): void {
    for (const [log, seq, values] of taken.logs) log.landed(seq, values)
    this.compactIfDue()
  }

  /**
   * Takes committed partitions out of `from` (handed to another process), from their stored
   * population: the inverse of `restore`, called when the store holds all they moved. Partitions
   * with populations of their own (`partition` scope) are dropped from it, nothing read.
   */
  async forget(partitions: readonly number[], from: Populations | ScopedPopulations): Promise<void> {
    for (const p of partitions) {
      const log = this.partitions.get(p)
      if (log?.hasPending === true) throw new TagstreamError(ErrorCodes.ENGINE_STATE, `partition ${p} forgotten with uncommitted population moves`)
      this.partitions.delete(p)
    }
    // A compaction of one of them may still be writing.
    await this.idle()
    const shared = from instanceof ScopedPopulations ? from.shared : from
    if (from instanceof ScopedPopulations) from.drop(partitions)
    if (this.layout.width === 0 || shared === undefined) return
    for (const p of partitions) {
      const stored = await readStored(this.store, this.layout, p)
      let columns: Float64Array[]
      if ('columns' in stored) columns = stored.columns
      else {
        warnUnusable(p, stored)
        columns = await columnsFromRecords(this.store, this.layout, p, undefined)
      }
      this.layout.columns.forEach((c, i) => shared.get(c.operator, c.dimension).removeAll(columns[i] as Float64Array))
    }
  }

  /** Resolves once no compaction is running. */
  async idle(): Promise<void> {
    while (this.compaction !== undefined) await this.compaction
  }

  /** Starts folding the deltas of a partition that has many, unless a compaction is running. */
  private compactIfDue(): void {
    if (this.compaction !== undefined || this.failure !== undefined || this.layout.width === 0) return
    for (const [p, log] of this.partitions) {
      if (log.heldBy.size > 0) continue
      if (log.deltaValues <= Math.max(this.policy.minValues, this.policy.share * log.snapshotValues)) continue
      this.compaction = this.compact(p, log)
        .catch((err: unknown) => {
          // Nothing is lost (the batch is atomic); the next commit reports it.
          this.failure ??= err
        })
        .finally(() => {
          this.compaction = undefined
          this.compactIfDue()
        })
      return
    }
  }

  /**
   * Folds the partition's landed deltas into a new snapshot: reads snapshot and deltas through one
   * iterator, writes the merged snapshot and deletes exactly the deltas read, in one batch. A
   * commit landing meanwhile adds a delta with a higher number, which neither read nor deleted.
   */
  private async compact(partition: number, log: PartitionLog): Promise<void> {
    const stored = await readStored(this.store, this.layout, partition)
    if (!('columns' in stored)) {
      // Left as it is: the next start rebuilds it from the records.
      warnUnusable(partition, stored)
      log.folded(Number.MAX_SAFE_INTEGER, log.snapshotValues)
      return
    }
    await this.store.commit(snapshotOps(this.store, this.layout, partition, stored.columns, stored.seq, stored.keys), false)
    log.folded(stored.seq, countValues(stored.columns))
  }
}
