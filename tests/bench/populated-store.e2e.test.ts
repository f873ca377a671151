import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { Packr } from 'msgpackr'
import { beforeAll, describe, expect, it } from 'vitest'
import { buildEngineSettings } from '../../bench/lib/populated-store.js'
import { freshDir, replay, storeDir, writeEngineConfig } from '../../bench/lib/processes.js'
import { decodeProjection } from '../../src/engine/projection.js'
import { populationFile } from '../../bench/lib/workloads.js'
import { ScoredLayout, readStoredPopulation } from '../../src/engine/population.js'
import type { Operator } from '../../src/operator-api.js'
import { partitionPrefix, populationHeadKey } from '../../src/store/keys.js'
import { Store } from '../../src/store/store.js'
import { quickBenchContext } from '../support/bench-context.js'
import { assertBuilt } from '../support/cli.js'

const USERS = 3000
const packr = new Packr({ useRecords: false, mapsAsObjects: true })

/** Every entry of a store, decoded; wall times blanked (a history entry's emission, the catalog's load). */
async function contents(path: string): Promise<Map<string, unknown>> {
  const db = new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false })
  await db.open()
  const out = new Map<string, unknown>()
  for await (const [key, value] of db.iterator()) {
    // Population snapshots and deltas follow the commit boundaries; the values they add up to do not (below).
    if (/^p[0-9a-f]{4}!P!/.test(key)) continue
    // Raw values: s! (Float64s), membership (empty), the s! layout (JSON).
    if (/^p[0-9a-f]{4}!(s|m)!/.test(key) || key === 'g!scored') {
      out.set(key, value.toString('hex'))
      continue
    }
    // A projection (flat binary): the partition clock of the commit that wrote it (its views hold
    // from then on) depends on when commits happen.
    if (/^p[0-9a-f]{4}!v!/.test(key)) {
      const projection = decodeProjection(value)
      projection[0] = 0
      out.set(key, projection)
      continue
    }
    const decoded = packr.unpack(value) as unknown
    if (/^p[0-9a-f]{4}!h!/.test(key)) (decoded as unknown[])[6] = 0
    // A catalog entry: when the tags file was loaded, at start.
    out.set(key, key.startsWith('g!cat!') ? JSON.parse(JSON.stringify(decoded).replace(/"\d{4}-\d\d-\d\dT[\d:.]+Z"/g, '""')) : decoded)
  }
  await db.close()
  const store = await Store.open(path)
  for (const p of await store.partitionsInStore()) {
    const head = await store.readValue<{ layout: string }>(populationHeadKey(p))
    if (head === undefined) continue
    // The layout the head names, as operators (only their names and dimensions make a layout).
    const columns = (JSON.parse(head.layout) as { columns: [string, string][] }).columns
    const operators = [...new Set(columns.map(([op]) => op))].map((name) => ({ name, population: columns.filter(([op]) => op === name).map(([, dim]) => dim), scoredValues: () => ({}) }) as unknown as Operator)
    const stored = await readStoredPopulation(store, new ScoredLayout(operators), p)
    out.set(`${partitionPrefix(p)}P (values)`, 'columns' in stored ? stored.columns.map((c) => Array.from(c)) : stored.reason)
  }
  await store.close()
  return out
}

describe('the bench populated store', () => {
  beforeAll(() => assertBuilt())

  it('built with its fast settings, holds exactly what a replay with the default settings stores', async () => {
    const ctx = quickBenchContext('ts-populated-', USERS)
    const work = ctx.workDir
    const input = await populationFile(ctx, USERS)
    const plain = freshDir(join(work, 'plain'))
    const fast = freshDir(join(work, 'fast'))
    // A cache far smaller than the population: the default run evicts and reloads users all along.
    const a = await replay(ctx, writeEngineConfig(ctx, plain, { engine: { partitions: 4, cacheMaxUsers: 500, commitEvents: 2000 } }), [input])
    const b = await replay(ctx, writeEngineConfig(ctx, fast, buildEngineSettings(ctx, USERS)), [input])
    expect(a.users).toBe(USERS)
    expect(b.users).toBe(USERS)
    expect(b.tagChanges).toBe(a.tagChanges)
    expect(b.commits).toBeLessThan(a.commits)
    const expected = await contents(storeDir(plain))
    const actual = await contents(storeDir(fast))
    expect([...actual.keys()]).toEqual([...expected.keys()])
    // The RFM population of every partition, as its snapshot and deltas add up.
    const populations = [...expected].filter(([key]) => key.endsWith('!P (values)'))
    expect(populations).toHaveLength(4)
    for (const [, columns] of populations) expect((columns as number[][])[0]?.length).toBeGreaterThan(100)
    for (const [key, value] of expected) expect(actual.get(key), key).toEqual(value)
  }, 300_000)
})
