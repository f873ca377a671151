/**
 * A store holding `sizes.storeUsers` customers, built by replaying the population file with the
 * default operators. Scenario 4 builds it (each build is one memory sample); scenarios 5 and 6 work
 * on copies of the last build, built once per invocation when scenario 4 did not run.
 */
import { join } from 'node:path'
import { dirBytes, freshDir, replay, storeDir, writeEngineConfig, type ReplaySummary } from './processes.js'
import type { BenchContext } from './scenario.js'
import { populationFile } from './workloads.js'

export interface PopulatedStore {
  /** The bench dir: config at tagstream.yaml, store at data/store. */
  readonly dir: string
  readonly users: number
  readonly storeBytes: number
  readonly build: ReplaySummary & { wallMs: number }
}

const KEY = 'populated-store'

export async function buildPopulatedStore(ctx: BenchContext): Promise<PopulatedStore> {
  const users = ctx.sizes.storeUsers
  const input = await populationFile(ctx, users)
  const dir = freshDir(join(ctx.workDir, 'populated'))
  const config = writeEngineConfig(ctx, dir)
  const build = await replay(ctx, config, [input])
  if (build.users !== users) throw new Error(`the populated store holds ${build.users} users, expected ${users}`)
  const store: PopulatedStore = { dir, users, storeBytes: dirBytes(storeDir(dir)), build }
  ctx.shared.set(KEY, store)
  return store
}

export async function populatedStore(ctx: BenchContext): Promise<PopulatedStore> {
  return (ctx.shared.get(KEY) as PopulatedStore | undefined) ?? buildPopulatedStore(ctx)
}
