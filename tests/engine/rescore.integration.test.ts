import { describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { DAY_MS, type DerivedTags, type Operator } from '../../src/operator-api.js'
import { createFixture } from '../support/engine-fixture.js'

const T0 = Date.UTC(2024, 0, 1)
const HOUR = 3_600_000

/** Spend, and whether it is above the population's average: a tag that moves when others buy. */
function spendOperator(): Operator<{ total: number }> {
  return {
    name: 'spend',
    tags: [{ id: 'above_average', description: 'spends more than the average user', category: ['test', 'value'], valueType: 'boolean' }],
    eventTypes: ['purchase'],
    population: ['total'],
    rescore: true,
    initialState: () => ({ total: 0 }),
    onEvent: (state, event) => ({ total: state.total + Number(event.properties.amount) }),
    scoredValues: (state) => ({ total: state.total }),
    deriveTags(state, ctx) {
      const mean = ctx.population('total').mean()
      const tags: DerivedTags = state.total > mean ? { above_average: { value: true, evidence: { total: state.total, mean } } } : {}
      return tags
    },
  }
}

const buy = (id: string, user: string, at: number, amount: number) => ({ eventId: id, userId: user, type: 'purchase', ts: at, properties: { amount } })

const STREAM = [
  buy('1', 'a', T0 + 1 * HOUR, 10),
  buy('2', 'b', T0 + 2 * HOUR, 20),
  buy('3', 'c', T0 + 3 * HOUR, 30), // mean 20: c is above
  buy('4', 'd', T0 + 4 * HOUR, 100), // mean 40: c is no longer above, but c sent nothing
  buy('5', 'a', T0 + DAY_MS + 12 * HOUR, 1), // day 1: the midnight sweep re-scores everybody first
  buy('6', 'e', T0 + 3 * DAY_MS, 5), // days 2 and 3 pass: one sweep, at the last midnight
]

async function replay(overrides: Record<string, unknown>): Promise<TagChange[]> {
  const f = await createFixture([spendOperator()], { ...overrides, engine: { partitions: 1, ...(overrides.engine as object) } })
  f.source.push(...STREAM)
  await f.drain()
  await f.close()
  return f.changes.changes
}

describe('re-scoring sweeps', () => {
  it('re-derives population-dependent tags at midnight (event time) with cause rescore', async () => {
    const changes = await replay({ rescore: { chunkUsers: 2 } })
    const view = changes.map((c) => [c.userId, c.op, c.at, c.cause.kind])
    expect(view).toEqual([
      ['b', 'entered', '2024-01-01T02:00:00.000Z', 'event'], // mean 15 when b arrives
      ['c', 'entered', '2024-01-01T03:00:00.000Z', 'event'],
      ['d', 'entered', '2024-01-01T04:00:00.000Z', 'event'],
      // The sweep at 2024-01-02T00:00 sees mean 40: b and c leave. Then the clock jumps to day
      // 3: one sweep, at its last midnight, which changes nothing more.
      ['b', 'left', '2024-01-02T00:00:00.000Z', 'rescore'],
      ['c', 'left', '2024-01-02T00:00:00.000Z', 'rescore'],
    ])
    const left = changes.find((c) => c.userId === 'c' && c.op === 'left')
    expect(left?.evidence).toEqual({})
    expect(left?.seq).toBe(2)
  })

  it('gives every user the same changes, with the same ids, whatever the chunk and batch sizes', async () => {
    const byUser = (changes: TagChange[]) => {
      const m: Record<string, string[]> = {}
      for (const c of changes) (m[c.userId] ??= []).push(`${c.id} ${c.op} ${c.at} ${c.cause.kind}`)
      return m
    }
    const a = byUser(await replay({ rescore: { chunkUsers: 1 }, engine: { batchSize: 1 } }))
    const b = byUser(await replay({ rescore: { chunkUsers: 1000 }, engine: { batchSize: 4096 } }))
    expect(b).toEqual(a)
  })

  // A live partition that goes idle follows the wall clock (idle advance): a jump of days starts a
  // sweep while the previous one is part way through the users. The new one goes on from there,
  // wraps around, and ends with the user the old one was at, which it has yet to re-score.
  it.each([
    ['projections', true],
    ['full records', false],
  ])('a sweep superseded by idle advance is finished by the new one, which re-scores every user (sweeps read %s)', async (_, readProjections) => {
    let wall = T0 + 10 * HOUR
    const lifecycle = {
      sweepStarted(_partition: number, at: number) {
        // The day-1 sweep has started: by the next idle loop the wall clock is two days on.
        if (at === T0 + DAY_MS) wall = T0 + 3 * DAY_MS + 2 * HOUR
      },
    }
    const f = await createFixture(
      [spendOperator()],
      { engine: { partitions: 1, batchSize: 1 }, rescore: { chunkUsers: 1 }, time: { idleAdvanceMs: 1000 } },
      { readProjections, idleAdvance: true, now: () => wall, lifecycle },
    )
    const spenders = ['a', 'b', 'c', 'd', 'e', 'f']
    // Every spender enters on arrival (above the mean with `s`'s 1) and stays above at the day-1 sweep.
    f.source.push(buy('s', 's', T0, 1), ...spenders.map((u, i) => buy(u, u, T0 + (i + 1) * HOUR, 50)))
    // Committed: a sweep's pass reads the stored users (uncommitted ones are swept when it starts).
    await f.drain()
    wall = T0 + DAY_MS + HOUR
    // Day 1, live: its sweep starts without z in its population. Then the source is idle.
    f.source.push(buy('z', 'z', T0 + DAY_MS + HOUR, 1000))
    await f.drain()
    await f.close()
    expect(f.engine.stats.sweepsStarted).toBe(2)
    // The day-3 sweep's population has z: every spender leaves, the one the day-1 sweep was at included.
    const rescored = f.changes.changes.filter((c) => c.cause.kind === 'rescore')
    expect(rescored.map((c) => [c.userId, c.op, c.at]).sort()).toEqual(spenders.map((u) => [u, 'left', '2024-01-04T00:00:00.000Z']))
  })

  it('commits while a sweep dirties users, so the cache stays near its bound, and changes nothing in the result', async () => {
    // 200 users, user i spending i: each but the first enters on arrival (above the mean so far),
    // and the day-1 sweep (mean 100.5) takes users 2 to 100 out. The sweep reads them back from the store, 10 per step.
    const stream = [...Array.from({ length: 200 }, (_, i) => buy(`e${i}`, `u${String(i + 1).padStart(3, '0')}`, T0 + i * 60_000, i + 1)), buy('next', 'u001', T0 + DAY_MS + HOUR, 0)]
    const sweepOver = async (cacheMaxUsers: number) => {
      let peakCached = 0
      let engine: { cachedUsers: number } | undefined
      const watch = { name: 'watch', write: () => void (peakCached = Math.max(peakCached, engine?.cachedUsers ?? 0)), flush: async () => {}, close: async () => {} }
      const f = await createFixture([spendOperator()], { engine: { partitions: 1, cacheMaxUsers }, rescore: { chunkUsers: 10 } }, { sinks: [watch] })
      engine = f.engine
      f.source.push(...stream.slice(0, -1))
      await f.drain()
      peakCached = 0
      const commitsBefore = f.engine.stats.commits
      f.source.push(...stream.slice(-1))
      await f.drain()
      await f.close()
      const rescored = f.changes.changes.filter((c) => c.cause.kind === 'rescore')
      return { rescored: rescored.map((c) => `${c.id} ${c.userId} ${c.op} ${c.at}`), peakCached, commits: f.engine.stats.commits - commitsBefore }
    }
    const bounded = await sweepOver(40)
    const unbounded = await sweepOver(100_000)
    expect(bounded.rescored).toHaveLength(99)
    expect(bounded.rescored).toEqual(unbounded.rescored)
    // Users waiting for a commit reach a quarter of the bound (10, one step) and the loop commits:
    // the cache never holds the sweep's 200 users at once, as it does without a bound to reach.
    expect(bounded.commits).toBeGreaterThanOrEqual(10)
    expect(bounded.peakCached).toBeLessThanOrEqual(40 + 2 * 10)
    expect(unbounded.peakCached).toBeGreaterThanOrEqual(150)
  })

  it('can be switched off', async () => {
    const changes = await replay({ rescore: { schedule: 'off' } })
    expect(changes.filter((c) => c.cause.kind === 'rescore')).toEqual([])
  })

  it('runs at the configured local time of day', async () => {
    const changes = await replay({ rescore: { at: '06:30' }, timeZone: 'Europe/Berlin' })
    // 06:30 in Berlin on 2 January is 05:30 UTC.
    expect(changes.filter((c) => c.cause.kind === 'rescore').map((c) => c.at)).toEqual(['2024-01-02T05:30:00.000Z', '2024-01-02T05:30:00.000Z'])
  })
})
