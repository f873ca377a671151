/**
 * A store holding `sizes.storeUsers` customers, built by replaying the population file through the
 * engine (`tagstream replay`, the default operators and tags), once per invocation: scenarios 4, 5
 * and 6 work on copies of it.
 *
 * The build runs with settings that change how fast the store is written, never what it holds: a
 * cache of up to 100,000 users whatever their estimated size (every user of a small store; for a
 * large one, the population file visits each user once per round, a cycle an LRU smaller than the
 * population misses on every event anyway, and a million cached users would pass V8's 4 GB heap
 * limit), unsynced large commits, and no tag-change sink (the changes are derived, numbered and
 * recorded in the users' history as always; they are just not written to a file nobody reads). The engine's state is the same whatever the commit
 * boundaries and cache size (DESIGN.md: exactly-once, deterministic per partition; compared key by
 * key in tests/bench/populated-store.e2e.test.ts). A million users take about 3 million events.
 *
 * The built store is then compacted: LevelDB does not flush its memtable at close, so the last
 * commits would otherwise stay in its log, replayed (and compacted) by every scenario's first open
 * of a copy: seconds of work and hundreds of MB of RSS that belong to the build, not to the engine.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { parse } from 'yaml'
import { gitCommit } from './machine.js'
import { dirBytes, freshDir, replay, storeDir, writeEngineConfig, type ReplaySummary } from './processes.js'
import type { BenchContext } from './scenario.js'
import { populationFile } from './workloads.js'

export interface PopulatedStore {
  /** The bench dir: config at tagstream.yaml, store at data/store. */
  readonly dir: string
  readonly users: number
  /** Days the customers' histories span (`populationFile`): 0, every purchase in one day. */
  readonly spanDays: number
  readonly storeBytes: number
  readonly build: ReplaySummary & { wallMs: number }
  /** Commit the store was built at (an earlier one when reused, `--reuse-stores`). */
  readonly builtAt: string
}

const KEY = 'populated-store'

/** The span of the realistic store's customer histories: a quarter of a year. */
export const REALISTIC_SPAN_DAYS = 90

/**
 * Engine settings of the build: see the module comment. A store whose histories span days
 * (`spanDays` > 0) is built with the daily sweep off: the replay would cross a sweep instant every
 * few hundred milliseconds, each superseding the last, and take most of the build's time. Its
 * users' scores are then those of their last event, as in a deployment that ran without sweeps:
 * the first sweep on it catches up, the next day's is the steady state (scenario 6 reports both).
 */
export function buildEngineSettings(ctx: BenchContext, users: number, spanDays = 0): Record<string, unknown> {
  const base = parse(readFileSync(join(ctx.root, 'config/tagstream.yaml'), 'utf8')) as { engine?: Record<string, unknown> }
  return {
    engine: {
      ...base.engine,
      cacheMaxUsers: Math.min(users + 1, 100_000),
      cacheMaxBytes: Number.MAX_SAFE_INTEGER,
      syncWrites: false,
      commitEvents: 250_000,
      commitIntervalMs: 600_000,
      batchSize: 8192,
    },
    sinks: { tagChanges: [], deadLetter: { type: 'ndjson-file', fsync: false } },
    ...(spanDays > 0 ? { rescore: { schedule: 'off' } } : {}),
  }
}

/** Flushes LevelDB's memtable and compacts every level (keys are ASCII: `g!...`, `p....!...`). */
async function compact(path: string): Promise<void> {
  const db = new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false })
  await db.open()
  try {
    await db.compactRange('\u0000', '\u007f')
  } finally {
    await db.close()
  }
}

/** Written beside a built store: what it was built from, and the build's figures. */
const STAMP = 'built.json'

/**
 * What a store's content depends on: the committed trees of src/, operators/, config/ and bench/lib/ (the
 * engine, its operators and default tags), the build settings and the input. Undefined when those
 * directories have uncommitted changes: such a store is never reused.
 */
function buildFingerprint(ctx: BenchContext, settings: Record<string, unknown>, input: string): string | undefined {
  const git = (...args: string[]): string => execFileSync('git', args, { cwd: ctx.root, encoding: 'utf8' }).trim()
  try {
    if (git('status', '--porcelain', '--', 'src', 'operators', 'config', 'bench/lib') !== '') return undefined
    const trees = ['src', 'operators', 'config', 'bench/lib'].map((d) => git('rev-parse', `HEAD:${d}`))
    return createHash('sha256').update(JSON.stringify({ trees, settings, input: input.slice(input.lastIndexOf('/') + 1) })).digest('hex')
  } catch {
    return undefined
  }
}

interface Stamp extends Omit<PopulatedStore, 'dir'> {
  readonly fingerprint: string
}

function reusable(ctx: BenchContext, dir: string, fingerprint: string | undefined): PopulatedStore | undefined {
  if (!ctx.reuseStores || fingerprint === undefined || !existsSync(join(dir, STAMP))) return undefined
  const stamp = JSON.parse(readFileSync(join(dir, STAMP), 'utf8')) as Stamp
  if (stamp.fingerprint !== fingerprint) return undefined
  const { fingerprint: _, ...store } = stamp
  return { ...store, dir }
}

export async function buildPopulatedStore(ctx: BenchContext, spanDays = 0): Promise<PopulatedStore> {
  const users = ctx.sizes.storeUsers
  const input = await populationFile(ctx, users, spanDays)
  const settings = buildEngineSettings(ctx, users, spanDays)
  // One directory per size, so a --quick run leaves a full-size store to reuse.
  const dirName = join(ctx.workDir, `populated-u${users}${spanDays === 0 ? '' : `-span${spanDays}d`}`)
  const fingerprint = buildFingerprint(ctx, settings, input)
  const reused = reusable(ctx, dirName, fingerprint)
  if (reused !== undefined) {
    ctx.log(`reusing the populated store of ${users.toLocaleString('en')} users built at ${reused.builtAt} from the same code (--reuse-stores)`)
    ctx.shared.set(`${KEY}-${spanDays}`, reused)
    return reused
  }
  if (ctx.reuseStores) ctx.log(fingerprint === undefined ? 'src/, operators/ or config/ have uncommitted changes: building the store again' : 'no store built from this code: building it')
  const dir = freshDir(dirName)
  const config = writeEngineConfig(ctx, dir, settings)
  ctx.log(`building the populated store: ${users.toLocaleString('en')} users, histories over ${spanDays === 0 ? 'one day' : `${spanDays} days`}`)
  const build = await replay(ctx, config, [input])
  if (build.users !== users) throw new Error(`the populated store holds ${build.users} users, expected ${users}`)
  await compact(storeDir(dir))
  const store: PopulatedStore = { dir, users, spanDays, storeBytes: dirBytes(storeDir(dir)), build, builtAt: gitCommit(ctx.root).short }
  // Scenarios work on copies: the store as built stays as the stamp describes it.
  if (fingerprint !== undefined) writeFileSync(join(dir, STAMP), JSON.stringify({ ...store, dir: undefined, fingerprint }))
  ctx.log(`built the populated store in ${(build.wallMs / 1000).toFixed(0)} s (${Math.round(build.records / build.seconds)} events/s), ${(store.storeBytes / users).toFixed(0)} B/user`)
  ctx.shared.set(`${KEY}-${spanDays}`, store)
  return store
}

/**
 * The populated store of this invocation (built on first use): `spanDays` 0, every customer's
 * purchases in one day (scenarios 4, 5, 7 and the sweep's worst case); REALISTIC_SPAN_DAYS, the
 * histories a shop's customer base has (the sweep's figure against its target).
 */
export async function populatedStore(ctx: BenchContext, spanDays = 0): Promise<PopulatedStore> {
  return (ctx.shared.get(`${KEY}-${spanDays}`) as PopulatedStore | undefined) ?? buildPopulatedStore(ctx, spanDays)
}
