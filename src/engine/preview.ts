/**
 * Rule previews over stored projections, on the engine's thread or in worker threads.
 *
 * A preview of a rule that reads only projected fields reads every user's projection once: about
 * 3.4 µs per user on this project's 2-core machines, most of it classic-level turning each LevelDB
 * entry into a JS key and Buffer. That work is done where the projections are read, so worker
 * threads (each opening the same store, `Store.attach`) take it off the engine's thread, which keeps
 * ingesting, and spread it over the machine's cores. The engine gives each scan the users whose
 * in-memory state is newer than the store (`skip`). The scan hands back, as `fromRecords`, the ones
 * it meets and the users whose projection does not hold at the partition's clock: the engine
 * evaluates those from their records (in memory, or read from the store).
 */
import type { CompiledRule, RuleResult, RuleSchema, RuleValue, RuleView } from '../tags/rules.js'
import type { Store } from '../store/store.js'
import { ProjectionReader, type EncodedProjection } from './projection.js'
import { pagedProjections } from './projection-pages.js'

/** Counts of one preview, or of one partition's part of it. */
export interface PreviewCounts {
  users: number
  matched: number
  readonly values: Map<RuleValue, number>
  readonly errors: Record<string, number>
}

export function emptyCounts(): PreviewCounts {
  return { users: 0, matched: 0, values: new Map(), errors: {} }
}

/**
 * Counts one user's result (undefined: no view, a field the rule reads is missing: no value).
 * Returns whether it matched: a value other than `false`. An absent field is not an error
 * (`no_such_field`), as the engine's rule lanes treat it.
 */
export function countResult(counts: PreviewCounts, result: RuleResult | undefined): boolean {
  counts.users++
  if (result === undefined) return false
  if (!result.ok) {
    if (result.code !== 'no_such_field') counts.errors[result.code] = (counts.errors[result.code] ?? 0) + 1
    return false
  }
  counts.values.set(result.value, (counts.values.get(result.value) ?? 0) + 1)
  if (result.value === false) return false
  counts.matched++
  return true
}

export function evaluateView(rule: CompiledRule, view: RuleView | undefined): RuleResult | undefined {
  return view === undefined ? undefined : rule.evaluate(view)
}

export function mergeCounts(into: PreviewCounts, from: { users: number; matched: number; values: Iterable<[RuleValue, number]>; errors: Readonly<Record<string, number>> }): void {
  into.users += from.users
  into.matched += from.matched
  for (const [value, n] of from.values) into.values.set(value, (into.values.get(value) ?? 0) + n)
  for (const [code, n] of Object.entries(from.errors)) into.errors[code] = (into.errors[code] ?? 0) + n
}

/** One partition's scan: counts of the users read from projections, and who the engine must count. */
export interface PartitionScan {
  readonly partition: number
  readonly users: number
  readonly matched: number
  readonly values: [RuleValue, number][]
  readonly errors: Record<string, number>
  /** The first `sampleSize` matching user ids of the scan, in key order. */
  readonly sample: string[]
  /**
   * Ids of stored users the scan did not count, in key order: users in `skip` (the engine has newer
   * state), and users whose projection does not hold at the clock. Their records decide.
   */
  readonly fromRecords: string[]
}

export interface ScanOptions {
  readonly partition: number
  /** The partition's clock: a projection decides only when it holds at it. */
  readonly at: number
  /** User ids the scan must not count (the engine has newer state for them). */
  readonly skip: ReadonlySet<string>
  readonly sampleSize: number
  /** Where the user id starts in the chunks' keys: `p0000!v!<id>` keys by default, 0 for ids (`pagedProjections`). */
  readonly idAt?: number
}

/**
 * Projections a preview reads per native iterator call. 1024 rather than more: the entries of a
 * chunk, and the garbage they leave, are what a scanning thread holds (4096 added some 35 MB more to
 * the RSS of a 2-thread preview over 1,000,000 users, with no gain in speed).
 */
export const PREVIEW_CHUNK = 1024

/** Where the user id starts in a `p0000!v!<id>` key. */
const ID_AT = 'p0000!v!'.length

/**
 * Reads one partition's projections (chunks of [key, value] in key order: `Store.projectionValues`,
 * or [id, value], `pagedProjections`) and counts the rule over them.
 */
export async function scanProjections(
  chunks: AsyncIterable<readonly (readonly [string, EncodedProjection])[]>,
  reader: ProjectionReader,
  rule: CompiledRule,
  view: (r: ProjectionReader) => RuleView | undefined,
  options: ScanOptions,
): Promise<PartitionScan> {
  const { at, skip, sampleSize } = options
  const idAt = options.idAt ?? ID_AT
  const counts = emptyCounts()
  const sample: string[] = []
  const fromRecords: string[] = []
  const checkSkip = skip.size > 0
  for await (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++) {
      const [key, value] = chunk[i] as readonly [string, EncodedProjection]
      if (checkSkip) {
        const id = key.slice(idAt)
        if (skip.has(id)) {
          fromRecords.push(id)
          continue
        }
      }
      if (!reader.load(value).holdsAt(at)) {
        fromRecords.push(key.slice(idAt))
        continue
      }
      if (countResult(counts, evaluateView(rule, view(reader))) && sample.length < sampleSize) sample.push(key.slice(idAt))
    }
  }
  return { partition: options.partition, users: counts.users, matched: counts.matched, values: [...counts.values], errors: counts.errors, sample, fromRecords }
}

/** Scans one partition for a preview: from its projection pages when it has them (`scan.pages`), else from its `v!` values. */
export function scanPartition(
  store: Store,
  scan: PartitionToScan,
  reader: ProjectionReader,
  rule: CompiledRule,
  view: (r: ProjectionReader) => RuleView | undefined,
  sampleSize: number,
): Promise<PartitionScan> {
  const { partition, at, pages } = scan
  const options = { partition, at, skip: new Set(scan.skip), sampleSize }
  return pages === undefined
    ? scanProjections(store.projectionValues(partition, PREVIEW_CHUNK), reader, rule, view, options)
    : scanProjections(pagedProjections(store, partition, pages.gen, pages.fresh, PREVIEW_CHUNK), reader, rule, view, { ...options, idAt: 0 })
}

/** What a worker thread is asked for a preview (`store-worker.ts`): plain data, cloned into the thread. */
export interface PreviewJob {
  readonly kind: 'preview'
  /** The store's directory: the worker attaches to the engine's open store. */
  readonly location: string
  /** `ProjectionLayout.id` of the engine: the worker reads projections with its shape. */
  readonly layoutId: string
  readonly schema: RuleSchema
  readonly expression: string
  readonly sampleSize: number
  readonly partitions: readonly PartitionToScan[]
}

export interface PartitionToScan {
  readonly partition: number
  readonly at: number
  readonly skip: readonly string[]
  /** The partition's projection pages to read instead of its `v!` values, and the users written since they were built. */
  readonly pages?: { readonly gen: number; readonly fresh: readonly string[] }
}
