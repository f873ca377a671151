import { describe, expect, it } from 'vitest'
import { Populations, ScoredLayout } from '../../src/engine/population.js'
import type { Operator } from '../../src/operator-api.js'
import { SCORED_LAYOUT_KEY, scoredRange } from '../../src/store/keys.js'
import type { Store } from '../../src/store/store.js'
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

async function scoredEntries(f: Fixture): Promise<number> {
  let n = 0
  for (let p = 0; p < 2; p++) n += (await f.store.entriesIn(scoredRange(p), 1e9)).length
  return n
}

describe('population statistics after a restart', () => {
  const operators = () => [spendOperator(), visitsOperator()] as Operator[]

  it('are restored from the s! values the commits wrote, equal to a rebuild from every user record', async () => {
    const f = await createFixture(operators())
    f.source.push(...stream())
    await f.drain()
    const expected = await fromRecords(f.store, operators(), 2)
    expectSame(f.engine.populations, expected)
    const users = new Set(stream().map((e) => (e as { userId: string }).userId)).size
    expect(await scoredEntries(f)).toBe(users)
    const layout = (await f.store.entriesIn({ gte: SCORED_LAYOUT_KEY, lt: `${SCORED_LAYOUT_KEY}\u0000` }, 1))[0]?.[1].toString()
    expect(layout).toBe(new ScoredLayout(operators()).id)
    const g = await f.reopen()
    expectSame(g.engine.populations, expected)
    await g.close()
  })

  it('are rebuilt from the records when the store has no s! values, which the start then writes', async () => {
    const f = await createFixture(operators())
    f.source.push(...stream())
    await f.drain()
    const expected = await fromRecords(f.store, operators(), 2)
    await f.store.clearScored([0, 1])
    expect(await scoredEntries(f)).toBe(0)
    const g = await f.reopen()
    expectSame(g.engine.populations, expected)
    expect(await scoredEntries(g)).toBe(new Set(stream().map((e) => (e as { userId: string }).userId)).size)
    const h = await g.reopen()
    expectSame(h.engine.populations, expected)
    await h.close()
  })

  it('are rebuilt from the records when the ranked operators changed since the s! values were written', async () => {
    const f = await createFixture([spendOperator()] as Operator[])
    f.source.push(...stream())
    await f.drain()
    await f.close()
    // Same store, now with a second ranked operator: the old layout has no column for it.
    const g = await createFixture(operators(), {}, { dir: f.dir })
    const expected = await fromRecords(g.store, operators(), 2)
    expect(g.engine.populations.get('spend', 'total').count).toBeGreaterThan(0)
    // The new operator has seen no event yet.
    expect(g.engine.populations.get('visits', 'n').count).toBe(0)
    expectSame(g.engine.populations, expected)
    await g.close()
  })
})
