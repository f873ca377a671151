/**
 * The population restore of a start, alone, at a size the recovery scenario takes long to build:
 * `node dist/bench/population-restore.js [users] [runs]` (default 1,000,000 users, 5 runs).
 *
 * Writes the RFM population of `users` customers (4 partitions, like config/tagstream.yaml) into
 * two stores: one as an engine before snapshots left it (one s! value per user), one as snapshots
 * plus deltas (converted by the engine's own code, then 20% of the users' values moved by journaled
 * commits that are not folded: close to the most a start meets before a compaction). Both stores
 * are compacted (as the bench's populated store is), then each run opens each store afresh and times
 * `rebuildPopulations` into empty statistics, alternating the two. Prints medians as JSON.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { validateConfig } from '../src/config/load.js'
import { createOperators } from '../src/engine/operators.js'
import { PopulationLog, Populations, ScoredLayout, rebuildPopulations } from '../src/engine/population.js'
import { SCORED_LAYOUT_KEY, scoredKey } from '../src/store/keys.js'
import { Store, type WriteOp } from '../src/store/store.js'

const PARTITIONS = [0, 1, 2, 3]
const users = Number(process.argv[2] ?? 1_000_000)
const runs = Number(process.argv[3] ?? 5)

const { config } = validateConfig({
  operators: [{ name: 'rfm', type: 'rfm', config: { purchaseEventTypes: ['purchase'], refundEventTypes: ['refund'], amountProperty: 'amount', windowsDays: [30, 90, 365] } }],
})
if (config === undefined) throw new Error('invalid config')
const operators = await createOperators(config)
const layout = new ScoredLayout(operators)

let seed = 11
const random = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
/** RFM-like values: recency -(epoch day), a small purchase count, a skewed amount. */
function values(): [number, number, number] {
  return [-(19_700 + Math.floor(random() * 365)), 1 + Math.floor(-Math.log(1 - random()) * 2), Math.round(random() * random() * 2000 * 100) / 100]
}

async function compact(path: string): Promise<void> {
  const db = new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false })
  await db.open()
  await db.compactRange('\u0000', '\u007f')
  await db.close()
}

const dir = mkdtempSync(join(tmpdir(), 'ts-poprestore-'))
const legacyPath = join(dir, 'legacy')
const snapshotPath = join(dir, 'snapshot')
const legacy = await Store.open(legacyPath)
const snap = await Store.open(snapshotPath)
const current: [number, number, number][] = []
for (let start = 0; start < users; start += 10_000) {
  const ops: WriteOp[] = []
  for (let u = start; u < Math.min(users, start + 10_000); u++) {
    const v = values()
    current.push(v)
    ops.push({ type: 'put', key: scoredKey(u % PARTITIONS.length, `u${u.toString().padStart(7, '0')}`), value: Buffer.from(new Float64Array(v).buffer) })
  }
  await legacy.commit(ops, false)
  await snap.commit(ops, false)
}
const layoutOp: WriteOp = { type: 'put', key: SCORED_LAYOUT_KEY, value: Buffer.from(layout.id, 'utf8') }
await legacy.commit([layoutOp], true)
await snap.commit([layoutOp], true)
// The snapshot store: converted by a start, then 20% of the users move in 100 commits.
const log = new PopulationLog(snap, operators, { share: 1e9, minValues: 1e9 })
const live = new Populations()
await log.restore(PARTITIONS, live)
const moves = Math.floor(users * 0.2)
for (let c = 0; c < 100; c++) {
  for (let i = 0; i < moves / 100; i++) {
    const u = Math.floor(random() * users)
    const before = current[u] as [number, number, number]
    const after: [number, number, number] = [before[0] - 1, before[1] + 1, Math.round((before[2] + random() * 100) * 100) / 100]
    current[u] = after
    const rec = (v: [number, number, number]) => ({ recency: v[0], frequency: v[1], monetary: v[2] })
    live.update('rfm', rec(before), rec(after), log.journal(u % PARTITIONS.length))
  }
  const taken = log.take()
  await snap.commit([...taken.ops], false)
  log.landed(taken)
}
await legacy.close()
await snap.close()
await compact(legacyPath)
await compact(snapshotPath)

async function timeRestore(path: string): Promise<{ ms: number; count: number }> {
  const store = await Store.open(path, { readOnly: true })
  try {
    const into = new Populations()
    const t0 = performance.now()
    await rebuildPopulations(store, layout, PARTITIONS, into, { persist: false })
    const ms = performance.now() - t0
    return { ms, count: into.get('rfm', 'monetary').count }
  } finally {
    await store.close()
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
const legacyMs: number[] = []
const snapshotMs: number[] = []
for (let r = 0; r < runs; r++) {
  const a = await timeRestore(legacyPath)
  const b = await timeRestore(snapshotPath)
  if (a.count !== users || b.count !== users) throw new Error(`restored ${a.count} and ${b.count} values, expected ${users}`)
  legacyMs.push(a.ms)
  snapshotMs.push(b.ms)
  process.stderr.write(`run ${r + 1}/${runs}: s! values ${a.ms.toFixed(0)} ms, snapshot + deltas ${b.ms.toFixed(0)} ms\n`)
}
console.log(JSON.stringify({ users, runs, legacyMs: { median: median(legacyMs), samples: legacyMs }, snapshotMs: { median: median(snapshotMs), samples: snapshotMs } }))
rmSync(dir, { recursive: true, force: true })
