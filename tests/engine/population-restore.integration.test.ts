import { describe, expect, it } from 'vitest'
import { Populations, ScoredLayout } from '../../src/engine/population.js'
import type { Operator } from '../../src/operator-api.js'
import { SCORED_LAYOUT_KEY, populationDeltaKey, populationHeadKey, populationRange, scoredKey, scoredRange } from '../../src/store/keys.js'
import type { Store, WriteOp } from '../../src/store/store.js'
import { createFixture, type Fixture } from '../support/engine-fixture.js'

const T0 = Date.UTC(2024, 0, 1)

/** Two ranked dimensions; users who only browse are not scored. */
function spendOperator(): Operator<{ total: number; count: number }> {
  return {
    name: 'spend',
    tags: [],
    eventTypes: ['purchase'],
    population: ['total', 'count'],
    initialState: () => ({ total: 0, count: 0 }),
    onEvent: (s, e) => ({ total: s.total + Number(e.properties.amount), count: s.count + 1 }),
    scoredValues: (s): Record<string, number> => (s.count === 0 ? {} : { total: s.total, count: s.count }),
    deriveTags: () => ({}),
  }
}

/** A second ranked operator, on other events: its column follows spend's two. */
function visitsOperator(): Operator<{ n: number }> {
  return {
    name: 'visits',
    tags: [],
    eventTypes: ['view'],
    population: ['n'],
    initialState: () => ({ n: 0 }),
    onEvent: (s) => ({ n: s.n + 1 }),
    scoredValues: (s) => ({ n: s.n }),
    deriveTags: () => ({}),
  }
}

function stream(): object[] {
  const events: object[] = []
  let seed = 7
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
  for (let i = 0; i < 600; i++) {
    const user = `u${Math.floor(rnd() * 80)}`
    const purchase = rnd() < 0.4
    events.push({
      eventId: `e${i}`,
      userId: user,
      type: purchase ? 'purchase' : 'view',
      ts: T0 + i * 60_000,
      properties: purchase ? { amount: Math.round((rnd() * 200 - 20) * 100) / 100 } : {},
    })
  }
  return events
}

/** The reference: every stored user's values added one by one. */
async function fromRecords(store: Store, operators: Operator[], partitions: number): Promise<Populations> {
  const pop = new Populations()
  for (let p = 0; p < partitions; p++) {
    for await (const rec of store.iterateUsers(p)) {
      for (const op of operators) {
        const state = rec.ops[op.name]
        if (state !== undefined) pop.update(op.name, undefined, op.scoredValues!(state))
      }
    }
  }
  return pop
}

const PROBES = [-50, -1, 0, 1, 2, 3, 5, 10, 55.5, 100, 250, 1000]

function expectSame(actual: Populations, expected: Populations): void {
  for (const [op, dim] of [['spend', 'total'], ['spend', 'count'], ['visits', 'n']] as const) {
    const a = actual.get(op, dim)
    const e = expected.get(op, dim)
    expect(a.count, `${op}.${dim}`).toBe(e.count)
    expect(a.maxRank(), `${op}.${dim}`).toBe(e.maxRank())
    for (const v of PROBES) expect(a.rank(v), `${op}.${dim} rank(${v})`).toBe(e.rank(v))
    if (e.count === 0) expect(a.mean()).toBeNaN()
    else expect(a.mean()).toBeCloseTo(e.mean(), 9)
  }
}

/** Keys of the population snapshots and deltas, and of legacy s! values, in both partitions. */
async function populationKeys(f: Fixture): Promise<{ heads: number; deltas: number; legacy: number }> {
  let heads = 0
  let deltas = 0
  let legacy = 0
  for (let p = 0; p < 2; p++) {
    for (const [key] of await f.store.entriesIn(populationRange(p), 1e9)) {
      if (key === populationHeadKey(p)) heads++
      if (key.startsWith(populationDeltaKey(p, 0).slice(0, -12))) deltas++
    }
    legacy += (await f.store.entriesIn(scoredRange(p), 1e9)).length
  }
  return { heads, deltas, legacy }
}

/** Rewrites a store as an engine before population snapshots left it: s! values and their layout, no P! keys. */
async function makeLegacy(store: Store, operators: Operator[]): Promise<void> {
  const layout = new ScoredLayout(operators)
  const ops: WriteOp[] = [{ type: 'put', key: SCORED_LAYOUT_KEY, value: Buffer.from(layout.id, 'utf8') }]
  for (let p = 0; p < 2; p++) {
    for (const [key] of await store.entriesIn(populationRange(p), 1e9)) ops.push({ type: 'del', key })
    for await (const rec of store.iterateUsers(p)) {
      const value = Buffer.alloc(layout.width * 8)
      let col = 0
      let scored = false
      for (const op of layout.operators) {
        const values = rec.ops[op.name] === undefined ? {} : op.scoredValues!(rec.ops[op.name])
        for (const dim of op.population ?? []) {
          const v = values[dim]
          scored ||= v !== undefined
          value.writeDoubleLE(v ?? NaN, col++ * 8)
        }
      }
      if (scored) ops.push({ type: 'put', key: scoredKey(p, rec.u), value })
    }
  }
  await store.commit(ops, true)
}

describe('population statistics after a restart', () => {
  const operators = () => [spendOperator(), visitsOperator()] as Operator[]

  it('are restored from the snapshots and deltas the commits wrote, equal to a rebuild from every user record', async () => {
    const f = await createFixture(operators())
    f.source.push(...stream())
    await f.drain()
    const expected = await fromRecords(f.store, operators(), 2)
    expectSame(f.engine.populations.of(0), expected)
    // A snapshot per partition (written at the first open), and deltas from the commits; no s! value.
    const keys = await populationKeys(f)
    expect(keys.heads).toBe(2)
    expect(keys.deltas).toBeGreaterThan(0)
    expect(keys.legacy).toBe(0)
    const g = await f.reopen()
    expectSame(g.engine.populations.of(0), expected)
    await g.close()
  })

  it('are rebuilt from the records when the store has no snapshot, which the start then writes', async () => {
    const f = await createFixture(operators())
    f.source.push(...stream())
    await f.drain()
    const expected = await fromRecords(f.store, operators(), 2)
    const ops: WriteOp[] = []
    for (let p = 0; p < 2; p++) for (const [key] of await f.store.entriesIn(populationRange(p), 1e9)) ops.push({ type: 'del', key })
    await f.store.commit(ops, true)
    expect(await populationKeys(f)).toEqual({ heads: 0, deltas: 0, legacy: 0 })
    const g = await f.reopen()
    expectSame(g.engine.populations.of(0), expected)
    expect(await populationKeys(g)).toEqual({ heads: 2, deltas: 0, legacy: 0 })
    const h = await g.reopen()
    expectSame(h.engine.populations.of(0), expected)
    await h.close()
  })

  it('are converted from the s! values of a store written before snapshots, which are then dropped', async () => {
    const f = await createFixture(operators())
    f.source.push(...stream())
    await f.drain()
    const expected = await fromRecords(f.store, operators(), 2)
    await makeLegacy(f.store, operators())
    const users = new Set(stream().map((e) => (e as { userId: string }).userId)).size
    expect(await populationKeys(f)).toEqual({ heads: 0, deltas: 0, legacy: users })
    const g = await f.reopen()
    expectSame(g.engine.populations.of(0), expected)
    // Converted: snapshots written, the s! values and their layout gone (an older engine would
    // rebuild from the records rather than trust values no commit updates any more).
    expect(await populationKeys(g)).toEqual({ heads: 2, deltas: 0, legacy: 0 })
    expect(await g.store.entriesIn({ gte: SCORED_LAYOUT_KEY, lt: `${SCORED_LAYOUT_KEY}\u0000` }, 1)).toEqual([])
    const h = await g.reopen()
    expectSame(h.engine.populations.of(0), expected)
    await h.close()
  })

  it('are rebuilt from the records when the ranked operators changed since the snapshot was written', async () => {
    const f = await createFixture([spendOperator()] as Operator[])
    f.source.push(...stream())
    await f.drain()
    await f.close()
    // Same store, now with a second ranked operator: the old layout has no column for it.
    const g = await createFixture(operators(), {}, { dir: f.dir })
    const expected = await fromRecords(g.store, operators(), 2)
    expect(g.engine.populations.of(0).get('spend', 'total').count).toBeGreaterThan(0)
    // The new operator has seen no event yet.
    expect(g.engine.populations.of(0).get('visits', 'n').count).toBe(0)
    expectSame(g.engine.populations.of(0), expected)
    const head = g.store.decode<{ layout: string }>((await g.store.entriesIn({ gte: populationHeadKey(0), lt: `${populationHeadKey(0)}\u0000` }, 1))[0]?.[1] as Buffer)
    expect(head.layout).toBe(new ScoredLayout(operators()).id)
    await g.close()
  })
})
