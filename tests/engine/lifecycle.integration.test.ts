import { describe, expect, it } from 'vitest'
import type { EngineLifecycle } from '../../src/engine/lifecycle.js'
import { DAY_MS, type DerivedTags, type Operator } from '../../src/operator-api.js'
import type { TagChangeSink } from '../../src/sinks/sink.js'
import { createFixture } from '../support/engine-fixture.js'

const T0 = Date.UTC(2024, 0, 1)
const HOUR = 3_600_000

/** Spend above the population's average: ranked (population statistics) and re-scored daily. */
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
      const tags: DerivedTags = state.total > ctx.population('total').mean() ? { above_average: { value: true } } : {}
      return tags
    },
  }
}

/** Counts events; keeps no population statistics. */
const countOperator: Operator<{ n: number }> = {
  name: 'count',
  tags: [{ id: 'events', description: 'events seen', category: ['test', 'activity'], valueType: 'number' }],
  initialState: () => ({ n: 0 }),
  onEvent: (state) => ({ n: state.n + 1 }),
  deriveTags: (state) => ({ events: { value: state.n } }),
}

const buy = (id: string, user: string, at: number, amount: number) => ({ eventId: id, userId: user, type: 'purchase', ts: at, properties: { amount } })

const STREAM = [
  buy('1', 'a', T0 + 1 * HOUR, 10),
  buy('2', 'b', T0 + 2 * HOUR, 20),
  buy('3', 'c', T0 + 3 * HOUR, 30),
  buy('4', 'd', T0 + 4 * HOUR, 100),
  buy('5', 'a', T0 + DAY_MS + 12 * HOUR, 1), // crosses 2024-01-02T00:00: a sweep
  buy('6', 'e', T0 + 3 * DAY_MS, 5), // reaches 2024-01-04T00:00: one sweep, at the last midnight
]

function recorder(): { lifecycle: EngineLifecycle; calls: unknown[][] } {
  const calls: unknown[][] = []
  return {
    calls,
    lifecycle: {
      sweepStarted: (partition, at) => void calls.push(['started', partition, new Date(at).toISOString()]),
      sweepFinished: (partition, at) => void calls.push(['finished', partition, new Date(at).toISOString()]),
      commitFailed: (err) => void calls.push(['commitFailed', (err as Error).message]),
    },
  }
}

describe('engine lifecycle hooks', () => {
  it('tells when each partition sweep starts and finishes, in order', async () => {
    const { lifecycle, calls } = recorder()
    const f = await createFixture([spendOperator()], { engine: { partitions: 1 }, rescore: { chunkUsers: 2 } }, { lifecycle })
    f.source.push(...STREAM)
    await f.drain()
    await f.close()
    expect(calls).toEqual([
      ['started', 0, '2024-01-02T00:00:00.000Z'],
      ['finished', 0, '2024-01-02T00:00:00.000Z'],
      ['started', 0, '2024-01-04T00:00:00.000Z'],
      ['finished', 0, '2024-01-04T00:00:00.000Z'],
    ])
    expect(f.engine.stats.sweepsStarted).toBe(2)
    expect(f.engine.stats.sweepsCompleted).toBe(2)
  })

  it('reports a failed commit once, and the run ends with its error', async () => {
    const { lifecycle, calls } = recorder()
    const failing: TagChangeSink = {
      name: 'failing',
      write: () => undefined,
      flush: async () => {
        throw new Error('disk full')
      },
      close: async () => undefined,
    }
    const f = await createFixture([countOperator], {}, { lifecycle, sinks: [failing] })
    f.source.push(buy('1', 'a', T0, 1))
    await expect(f.drain()).rejects.toThrow('disk full')
    expect(calls).toEqual([['commitFailed', 'disk full']])
    await f.close()
  })
})

describe('restore progress', () => {
  it('counts the users read back to rebuild population statistics', async () => {
    const f = await createFixture([spendOperator()], { engine: { partitions: 2 }, rescore: { schedule: 'off' } })
    f.source.push(...STREAM)
    await f.drain()
    expect(f.engine.stats.usersRestored).toBe(0)
    const reopened = await f.reopen()
    expect(reopened.engine.userCount).toBe(5)
    expect(reopened.engine.stats.usersRestored).toBe(5)
    await reopened.close()
  })

  it('reads no user back when no operator ranks users', async () => {
    const f = await createFixture([countOperator])
    f.source.push(buy('1', 'a', T0, 1), buy('2', 'b', T0, 1))
    await f.drain()
    const reopened = await f.reopen()
    expect(reopened.engine.userCount).toBe(2)
    expect(reopened.engine.stats.usersRestored).toBe(0)
    await reopened.close()
  })
})
