import { afterEach, describe, expect, it, vi } from 'vitest'
import { type CompactionPolicy, PopulationLog, Populations, ScoredLayout, readStoredPopulation } from '../../src/engine/population.js'
import type { DerivedTags, Operator } from '../../src/operator-api.js'
import { populationDeltaKey, populationHeadKey, populationRange } from '../../src/store/keys.js'
import type { Store } from '../../src/store/store.js'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { validateConfig } from '../../src/config/load.js'
import { Engine } from '../../src/engine/engine.js'
import { Store as LevelStore } from '../../src/store/store.js'
import { CaptureSink, createFixture, type Fixture } from '../support/engine-fixture.js'
import { ScriptedPartitions } from '../support/scripted-partitions.js'
import { columnsFromRecords } from '../support/population-reference.js'

const T0 = Date.UTC(2024, 0, 1)
const MINUTE = 60_000
const HOUR = 60 * MINUTE

interface Spend {
  total: number
  count: number
}

/**
 * Two ranked dimensions that move with events and with a timer (a purchase's value halves three
 * hours later), and a tag whose derivation fails for some totals: the event is rejected after its
 * population move, which is undone.
 */
function spendOperator(): Operator<Spend> {
  return {
    name: 'spend',
    tags: [{ id: 'big_spender', description: 'total above the mean', category: ['test', 'value'], valueType: 'boolean' }],
    eventTypes: ['purchase'],
    population: ['total', 'count'],
    rescore: true,
    initialState: () => ({ total: 0, count: 0 }),
    onEvent(s, e, ctx) {
      ctx.setTimer('halve', e.ts + 3 * HOUR)
      return { total: Math.round((s.total + Number(e.properties.amount)) * 100) / 100, count: s.count + 1 }
    },
    onTimer: (s) => (s.total === 0 ? s : { ...s, total: Math.round(s.total * 50) / 100 }),
    scoredValues: (s): Record<string, number> => (s.count === 0 ? {} : { total: s.total, count: s.count }),
    deriveTags(s, ctx) {
      if (Math.round(Math.abs(s.total) * 100) % 100 === 13) throw new Error('unlucky total')
      const tags: DerivedTags = s.count > 0 && s.total > ctx.population('total').mean() ? { big_spender: { value: true, evidence: { total: s.total } } } : {}
      return tags
    },
  }
}

/**
 * A ranked operator on every event, after spend: a `poison` event gives it a non-finite value, so
 * the move throws and spend's move of the same event, already made, is rolled back.
 */
function visitsOperator(): Operator<{ n: number }> {
  return {
    name: 'visits',
    tags: [],
    population: ['n'],
    initialState: () => ({ n: 0 }),
    onEvent: (s, e) => ({ n: e.properties.poison === true ? NaN : s.n + 1 }),
    scoredValues: (s) => ({ n: s.n }),
    deriveTags: () => ({}),
  }
}

const operators = (): Operator[] => [spendOperator(), visitsOperator()] as Operator[]
const layout = new ScoredLayout(operators())

/** Deterministic traffic over 60 users and several days (sweeps at each midnight). */
function stream(from: number, count: number): object[] {
  let seed = 99 + from
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
  const events: object[] = []
  for (let i = from; i < from + count; i++) {
    const purchase = rnd() < 0.5
    const poison = rnd() < 0.03
    events.push({
      eventId: `e${i}`,
      userId: `u${Math.floor(rnd() * 60)}`,
      type: purchase ? 'purchase' : 'view',
      ts: T0 + i * 7 * MINUTE,
      properties: { ...(purchase ? { amount: Math.round((rnd() * 300 - 30) * 100) / 100 } : {}), ...(poison ? { poison: true } : {}) },
    })
  }
  return events
}

/** The reference: every stored user's values, loaded per column (what a rebuild computes). */
async function fromRecords(store: Store, partitions: readonly number[]): Promise<Populations> {
  const { columns } = await columnsFromRecords(store, layout, partitions)
  const pop = new Populations()
  layout.columns.forEach((c, i) => pop.get(c.operator, c.dimension).load(Float64Array.from(columns[i] as number[])))
  return pop
}

/** The stored snapshots plus deltas of `partitions`, loaded; fails when one cannot be used. */
async function fromSnapshots(store: Store, partitions: readonly number[]): Promise<Populations> {
  const columns: number[][] = layout.columns.map(() => [])
  for (const p of partitions) {
    const stored = await readStoredPopulation(store, layout, p)
    if ('reason' in stored) throw new Error(`partition ${p}: ${stored.reason}`)
    stored.columns.forEach((c, i) => (columns[i] as number[]).push(...c))
  }
  const pop = new Populations()
  layout.columns.forEach((c, i) => pop.get(c.operator, c.dimension).load(Float64Array.from(columns[i] as number[])))
  return pop
}

/**
 * Same multiset in every column (so every rank query agrees), same count and, with `exactMean`,
 * the same mean to the bit (a restore loads sorted values, as the reference does; the live sets
 * add and remove one by one, their mean may differ in the last bits).
 */
function expectEqual(actual: Populations, expected: Populations, exactMean: boolean): void {
  for (const { operator, dimension } of layout.columns) {
    const a = actual.get(operator, dimension)
    const e = expected.get(operator, dimension)
    const label = `${operator}.${dimension}`
    expect(a.count, label).toBe(e.count)
    expect(Array.from(a.values()), label).toEqual(Array.from(e.values()))
    expect(a.maxRank(), label).toBe(e.maxRank())
    for (const v of e.values()) expect(a.rank(v), `${label} rank(${v})`).toBe(e.rank(v))
    if (exactMean) expect(a.mean(), label).toBe(e.mean())
    else expect(a.mean(), label).toBeCloseTo(e.mean(), 9)
  }
}

async function deltaCount(store: Store, partitions: readonly number[]): Promise<number> {
  let n = 0
  for (const p of partitions) for (const [key] of await store.entriesIn(populationRange(p), 1e9)) if (key.startsWith(populationDeltaKey(p, 0).slice(0, -12))) n++
  return n
}

async function headSeq(store: Store, p: number): Promise<number> {
  const [entry] = await store.entriesIn({ gte: populationHeadKey(p), lt: `${populationHeadKey(p)}\u0000` }, 1)
  return store.decode<{ seq: number }>(entry?.[1] as Buffer).seq
}

const PARTITIONS = [0, 1]
const SMALL_COMMITS = { engine: { partitions: 2, commitEvents: 40, batchSize: 16 } }
const EVERY_COMMIT: CompactionPolicy = { share: 0, minValues: 0 }
const NEVER: CompactionPolicy = { share: 1e9, minValues: 1e9 }

afterEach(() => {
  vi.restoreAllMocks()
})

describe('population snapshot and deltas', () => {
  for (const [name, policy] of [['compacted after every commit', EVERY_COMMIT], ['never compacted', NEVER]] as const) {
    it(`equal the user records after events, undos, timers, sweeps and restarts (${name})`, async () => {
      let f: Fixture = await createFixture(operators(), SMALL_COMMITS, { populationCompaction: policy })
      let sent = 0
      let rejected = 0
      let timers = 0
      let sweeps = 0
      for (let round = 0; round < 4; round++) {
        f.source.push(...stream(sent, 400))
        sent += 400
        await f.drain()
        rejected += f.engine.stats.operatorErrors
        timers += f.engine.stats.timersFired
        sweeps += f.engine.stats.sweepsStarted
        const expected = await fromRecords(f.store, PARTITIONS)
        // The live statistics, the stored ones, and the ones a restart restores.
        expectEqual(f.engine.populations.of(0), expected, false)
        // (Compactions run after commits land: wait for the last one before reading.)
        await f.engine.close()
        expectEqual(await fromSnapshots(f.store, PARTITIONS), expected, true)
        f = await f.reopen()
        expectEqual(f.engine.populations.of(0), expected, true)
      }
      // Every path that moves population values ran: events, undone events, timers; and sweeps.
      expect(rejected).toBeGreaterThan(20)
      expect(timers).toBeGreaterThan(100)
      expect(sweeps).toBeGreaterThan(4)
      if (policy === EVERY_COMMIT) {
        // Folded as they land: at most the last commit's deltas are left.
        expect(await deltaCount(f.store, PARTITIONS)).toBeLessThanOrEqual(2)
        expect(await headSeq(f.store, 0)).toBeGreaterThan(10)
      } else {
        expect(await deltaCount(f.store, PARTITIONS)).toBeGreaterThan(20)
        expect(await headSeq(f.store, 0)).toBe(0)
      }
      await f.close()
    })
  }

  it('forget a revoked partition and restore an assigned one exactly, from the snapshots', async () => {
    const f = await createFixture(operators(), SMALL_COMMITS, { populationCompaction: { share: 0.5, minValues: 50 } })
    f.source.push(...stream(0, 800))
    await f.drain()
    await f.close()
    const { Store } = await import('../../src/store/store.js')
    const store = await Store.open(`${f.dir}/store`)
    const read = vi.spyOn(store, 'iterateUsers')
    const log = new PopulationLog(store, operators())
    const pop = new Populations()
    await log.restore([0, 1], pop)
    expectEqual(pop, await fromRecords(store, [0, 1]), true)
    await log.forget([0], pop)
    expectEqual(pop, await fromRecords(store, [1]), true)
    // Handed back: the partition joins the population again.
    await log.restore([0], pop)
    expectEqual(pop, await fromRecords(store, [0, 1]), true)
    await log.forget([1, 0], pop)
    expect(pop.get('spend', 'total').count).toBe(0)
    // Only the references above read user records: restore and forget read the snapshots.
    expect(read.mock.calls.length).toBe(5)
    await store.close()
  })

  it('follow partitions revoked and assigned by a partitioned source, restored exactly after a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-poprebalance-'))
    const store = await LevelStore.open(join(dir, 'store'))
    const start = async (source: ScriptedPartitions): Promise<Engine> => {
      const { config } = validateConfig(SMALL_COMMITS)
      const engine = new Engine({
        config: config!,
        store,
        operators: operators(),
        sources: [source],
        sinks: [new CaptureSink()],
        deadLetters: new CaptureSink(),
        now: () => Date.UTC(2030, 0, 1),
        populationCompaction: { share: 0.5, minValues: 30 },
      })
      await engine.open()
      return engine
    }
    const source = new ScriptedPartitions(partitionOf)
    let engine = await start(source)
    const events = stream(0, 1500)
    const both = (from: number, to: number) => events.slice(from, to)
    const onlyOne = (from: number, to: number) => events.slice(from, to).filter((e) => partitionOf(e) === 1)

    source.assign([0, 1]).push(both(0, 500))
    await engine.run({ untilEnd: true })
    expectEqual(engine.populations.of(0), await fromRecords(store, [0, 1]), false)
    const visitors = engine.populations.of(0).get('visits', 'n').count
    expect(visitors).toBeGreaterThan(50)
    // Partition 0 goes to another process: its users leave the statistics.
    source.revoke([0]).push(onlyOne(500, 900))
    await engine.run({ untilEnd: true })
    expectEqual(engine.populations.of(0), await fromRecords(store, [1]), false)
    expect(engine.populations.of(0).get('visits', 'n').count).toBeGreaterThan(20)
    expect(engine.populations.of(0).get('visits', 'n').count).toBeLessThan(visitors - 20)
    // And comes back, with what the store holds of it.
    source.assign([0]).push(both(900, 1500))
    await engine.run({ untilEnd: true })
    const expected = await fromRecords(store, [0, 1])
    expectEqual(engine.populations.of(0), expected, false)
    await engine.close()
    expectEqual(await fromSnapshots(store, PARTITIONS), expected, true)
    engine = await start(new ScriptedPartitions(partitionOf).assign([0, 1]))
    await engine.run({ untilEnd: true })
    expectEqual(engine.populations.of(0), expected, true)
    await engine.close()
    await store.close()
  })

  it('with populationScope partition: one per partition, dropped on revocation, restored on assignment and after a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-popscope-'))
    const store = await LevelStore.open(join(dir, 'store'))
    const start = async (source: ScriptedPartitions): Promise<Engine> => {
      const { config } = validateConfig({ engine: { ...SMALL_COMMITS.engine, populationScope: 'partition' } })
      const engine = new Engine({ config: config!, store, operators: operators(), sources: [source], sinks: [new CaptureSink()], deadLetters: new CaptureSink(), now: () => Date.UTC(2030, 0, 1) })
      await engine.open()
      return engine
    }
    const own = async (engine: Engine, partitions: readonly number[]): Promise<void> => {
      expect(engine.populations.shared).toBeUndefined()
      for (const p of partitions) expectEqual(engine.populations.of(p), await fromRecords(store, [p]), false)
    }
    const source = new ScriptedPartitions(partitionOf)
    let engine = await start(source)
    const events = stream(0, 1200)
    source.assign([0, 1]).push(events.slice(0, 600))
    await engine.run({ untilEnd: true })
    await own(engine, [0, 1])
    // Each partition ranks among its own users only.
    const visitors = [0, 1].map((p) => engine.populations.of(p).get('visits', 'n').count)
    expect(Math.min(...visitors)).toBeGreaterThan(20)
    expect(visitors[0]! + visitors[1]!).toBe((await fromRecords(store, [0, 1])).get('visits', 'n').count)
    source.revoke([0]).push(events.slice(600, 900).filter((e) => partitionOf(e) === 1))
    await engine.run({ untilEnd: true })
    await own(engine, [1])
    // Partition 0's population went with it.
    expect(engine.populations.of(0).get('visits', 'n').count).toBe(0)
    source.assign([0]).push(events.slice(900))
    await engine.run({ untilEnd: true })
    await own(engine, [0, 1])
    await engine.close()
    engine = await start(new ScriptedPartitions(partitionOf).assign([0, 1]))
    await engine.run({ untilEnd: true })
    await own(engine, [0, 1])
    await engine.close()
    await store.close()
  })

  it('a sweep cut: the deltas up to it give the population of that instant, and no compaction folds past it until released', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-popcut-'))
    const store = await LevelStore.open(join(dir, 'store'))
    const log = new PopulationLog(store, operators(), EVERY_COMMIT)
    // One population over two partitions (populationScope process): a sweep of 0 cuts both.
    const pop = new Populations()
    await log.restore([0, 1], pop)
    const visits = (from: number | undefined, to: number, p = 0): void => pop.update('visits', from === undefined ? undefined : { n: from }, { n: to }, log.journal(p))
    const commit = async (): Promise<void> => {
      const taken = log.take()
      await store.commit([...taken.ops], true)
      log.landed(taken)
      await log.idle()
    }
    for (let n = 1; n <= 5; n++) visits(undefined, n, n % 2)
    await commit()
    expect(await deltaCount(store, [0, 1])).toBe(0) // folded at once (EVERY_COMMIT)
    visits(5, 50, 1)
    // The sweep's instant: the moves so far become a delta of their own (partition 1 moved).
    const cut = log.cutForSweep(0, [0, 1])
    const atCut = pop.snapshot()
    visits(1, 10, 1)
    visits(undefined, 7, 0)
    await commit()
    // Partition 1: the delta to the cut and the one after it; partition 0: the one after. None
    // folded while the sweep holds them.
    expect(await deltaCount(store, [0, 1])).toBe(3)
    const reread = new Populations()
    expect(await log.populationAt(cut, reread)).toBe(true)
    expectEqual(reread, atCut, true)
    expectEqual(await fromSnapshots(store, [0, 1]), pop, true)
    // A second cut with nothing moved since the last commit needs no delta.
    expect(log.cutForSweep(0, [0, 1])).toEqual(cut.map(([p, seq]) => [p, seq + 1]))
    log.release(0)
    await log.idle()
    expect(await deltaCount(store, [0, 1])).toBe(0)
    // Folded: the population of the cut is gone from the store.
    expect(await log.populationAt(cut, new Populations())).toBe(false)
    expectEqual(await fromSnapshots(store, [0, 1]), pop, true)
    await store.close()
  })

  it('are rebuilt from the records when the deltas disagree with the snapshot', async () => {
    const f = await createFixture(operators(), SMALL_COMMITS, { populationCompaction: NEVER })
    f.source.push(...stream(0, 400))
    await f.drain()
    const expected = await fromRecords(f.store, PARTITIONS)
    // A delta removing a value that no snapshot or delta holds.
    const bad = Buffer.alloc(8 + 3 * 8 + 8)
    bad.writeUInt32LE(3, 0)
    bad.writeUInt32LE(0, 8)
    bad.writeUInt32LE(1, 12)
    bad.writeDoubleLE(-123456.5, 32)
    await f.store.commit([{ type: 'put', key: populationDeltaKey(0, 1e6), value: bad }], true)
    expect(await readStoredPopulation(f.store, layout, 0)).toEqual({ reason: 'the deltas remove values the snapshot does not hold' })
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined)
    const g = await f.reopen()
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('population snapshot of partition 0 not used'))
    expectEqual(g.engine.populations.of(0), expected, true)
    // The rebuild replaced the partition's snapshot and deltas with a good one.
    expectEqual(await fromSnapshots(g.store, PARTITIONS), expected, true)
    expect(await deltaCount(g.store, [0])).toBe(0)
    await g.close()
  })
})

const partitionOf = (event: object): number => Number((event as { userId: string }).userId.slice(1)) % 2
