import type { Operator, PopulationView } from '../operator-api.js'
import { scoredKey } from '../store/keys.js'
import type { Store, WriteOp } from '../store/store.js'

const BUCKET = 512

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

  /**
   * Fills an empty set with `values` at once (sorted here, in place): a million values in one sort
   * instead of a million inserts. The sum is accumulated in sorted order.
   */
  load(values: Float64Array): void {
    if (this.size !== 0) throw new Error('load needs an empty set')
    values.sort()
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

function lowerBound(a: number[], v: number): number {
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
   * Moves one user's contribution from `before` to `after` (either may be undefined). All or
   * nothing: a non-finite new value throws before anything is moved.
   */
  update(operator: string, before: Readonly<Record<string, number>> | undefined, after: Readonly<Record<string, number>> | undefined): void {
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
      }
    }
    if (after !== undefined) {
      for (const dim in after) {
        const v = after[dim] as number
        if (before !== undefined && before[dim] === v) continue
        this.get(operator, dim).add(v)
      }
    }
  }

  snapshot(): Populations {
    const copy = new Populations()
    for (const [op, dims] of this.sets) copy.sets.set(op, new Map([...dims].map(([d, set]) => [d, set.snapshot()])))
    return copy
  }
}

/**
 * Where each ranked operator's population values sit in a user's s! value: one Float64 per
 * (operator, dimension) in declaration order, NaN where the user is not scored. `id` is stored with
 * the values; a store written with another layout (operators or dimensions changed) is rebuilt.
 */
export class ScoredLayout {
  readonly operators: readonly Operator[]
  readonly columns: readonly { readonly operator: string; readonly dimension: string }[]
  readonly id: string

  constructor(operators: readonly Operator[]) {
    this.operators = operators.filter((op) => op.scoredValues !== undefined)
    this.columns = this.operators.flatMap((op) => (op.population ?? []).map((dimension) => ({ operator: op.name, dimension })))
    this.id = JSON.stringify({ v: 1, columns: this.columns.map((c) => [c.operator, c.dimension]) })
  }

  get width(): number {
    return this.columns.length
  }

  /** A user's s! value from its operator states; undefined when the user is scored in no dimension. */
  encode(states: Readonly<Record<string, unknown>>): Buffer | undefined {
    let out: Buffer | undefined
    let col = 0
    for (const op of this.operators) {
      const state = states[op.name]
      const values = state === undefined ? undefined : op.scoredValues!(state)
      for (const dim of op.population ?? []) {
        const v = values?.[dim]
        if (v !== undefined) {
          out ??= Buffer.alloc(this.columns.length * 8, NAN_BYTES)
          out.writeDoubleLE(v, col * 8)
        }
        col++
      }
    }
    return out
  }
}

// NaN, little-endian: what an unscored column holds.
const NAN_BYTES = Buffer.from(new Float64Array([NaN]).buffer)

/** Values per column, grown as they are read, loaded into the sets at the end. */
class ColumnBuilder {
  private readonly values: Float64Array[]
  private readonly counts: number[]

  constructor(private readonly layout: ScoredLayout) {
    this.values = layout.columns.map(() => new Float64Array(1024))
    this.counts = layout.columns.map(() => 0)
  }

  add(column: number, v: number): void {
    let arr = this.values[column] as Float64Array
    const n = this.counts[column] as number
    if (n === arr.length) {
      const grown = new Float64Array(arr.length * 2)
      grown.set(arr)
      this.values[column] = grown
      arr = grown
    }
    arr[n] = v
    this.counts[column] = n + 1
  }

  addEncoded(buf: Buffer): void {
    const width = Math.min(this.layout.width, buf.length >> 3)
    for (let c = 0; c < width; c++) {
      const v = buf.readDoubleLE(c * 8)
      if (!Number.isNaN(v)) this.add(c, v)
    }
  }

  addScored(operatorIndex: number, values: Readonly<Record<string, number>>): void {
    let col = 0
    for (let i = 0; i < operatorIndex; i++) col += (this.layout.operators[i]?.population ?? []).length
    for (const dim of this.layout.operators[operatorIndex]?.population ?? []) {
      const v = values[dim]
      if (v !== undefined) this.add(col, v)
      col++
    }
  }

  loadInto(into: Populations): void {
    this.layout.columns.forEach((c, i) => {
      into.get(c.operator, c.dimension).load((this.values[i] as Float64Array).subarray(0, this.counts[i]))
    })
  }
}

/** s! writes per batch while a store without them is converted. */
const CONVERT_BATCH = 10_000

/**
 * Population statistics are derived data, rebuilt at start from the committed state. The fast way
 * reads the small s! values the engine commits with each user whose values moved; a store without
 * them (older, or with other ranked operators) is rebuilt from the user records, and, with
 * `persist`, given its s! values for the next start.
 */
export async function rebuildPopulations(
  store: Store,
  operators: readonly Operator[],
  partitionsIn: Iterable<number>,
  into: Populations,
  options: { persist: boolean; progress?: { usersRestored: number } } = { persist: false },
): Promise<void> {
  // Read by the progress reporter while the restore runs.
  const progress = options.progress
  const layout = new ScoredLayout(operators)
  if (layout.operators.length === 0) return
  const partitions = [...partitionsIn]
  const columns = new ColumnBuilder(layout)
  if ((await store.readScoredLayout()) === layout.id) {
    // Partitions read concurrently: LevelDB's reads of one overlap with the decoding of another.
    await Promise.all(
      partitions.map(async (p) => {
        for await (const chunk of store.iterateScored(p)) {
          for (const buf of chunk) columns.addEncoded(buf)
          if (progress !== undefined) progress.usersRestored += chunk.length
        }
      }),
    )
    columns.loadInto(into)
    return
  }
  if (options.persist) await store.clearScored(partitions)
  for (const p of partitions) {
    let ops: WriteOp[] = []
    for await (const rec of store.iterateUsers(p)) {
      if (progress !== undefined) progress.usersRestored++
      layout.operators.forEach((op, i) => {
        const state = rec.ops[op.name]
        if (state !== undefined) columns.addScored(i, op.scoredValues!(state))
      })
      if (!options.persist) continue
      const value = layout.encode(rec.ops)
      if (value !== undefined) ops.push({ type: 'put', key: scoredKey(p, rec.u), value })
      if (ops.length >= CONVERT_BATCH) {
        await store.commit(ops, false)
        ops = []
      }
    }
    if (options.persist) await store.commit(ops, false)
  }
  if (options.persist) await store.writeScoredLayout(layout.id)
  columns.loadInto(into)
}

/**
 * Takes the stored users of `partitions` out of the statistics (a partition handed to another
 * process): the inverse of `rebuildPopulations`, called right after a commit, when the store holds
 * exactly what the statistics counted.
 */
export async function forgetPopulations(store: Store, operators: readonly Operator[], partitions: Iterable<number>, from: Populations): Promise<void> {
  const ranked = operators.filter((op) => op.scoredValues !== undefined)
  if (ranked.length === 0) return
  for (const p of partitions) {
    for await (const rec of store.iterateUsers(p)) {
      for (const op of ranked) {
        const state = rec.ops[op.name]
        if (state !== undefined) from.update(op.name, op.scoredValues!(state), undefined)
      }
    }
  }
}
