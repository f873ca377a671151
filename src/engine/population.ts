import type { Operator, PopulationView } from '../operator-api.js'
import type { Store } from '../store/store.js'

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
 * Population statistics are derived data: rebuilt from the stored users (one pass over the user
 * key ranges), so they can never disagree with the committed state.
 */
export async function rebuildPopulations(store: Store, operators: readonly Operator[], partitions: Iterable<number>, into: Populations): Promise<void> {
  const ranked = operators.filter((op) => op.scoredValues !== undefined)
  if (ranked.length === 0) return
  for (const p of partitions) {
    for await (const rec of store.iterateUsers(p)) {
      for (const op of ranked) {
        const state = rec.ops[op.name]
        if (state !== undefined) into.update(op.name, undefined, op.scoredValues!(state))
      }
    }
  }
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
