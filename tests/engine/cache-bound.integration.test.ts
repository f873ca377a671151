import { describe, expect, it } from 'vitest'
import { DAY_MS, type Operator } from '../../src/operator-api.js'
import { userKey } from '../../src/store/keys.js'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { createFixture } from '../support/engine-fixture.js'

const T0 = Date.UTC(2024, 0, 1)

/** Counts events; active for `days` after each event, a timer ends it. */
function activityOperator(days = 1): Operator<{ n: number; activeUntil: number | null }> {
  return {
    name: 'activity',
    tags: [
      { id: 'active', description: 'seen recently', category: ['test', 'activity'], valueType: 'boolean' },
      { id: 'events', description: 'event count', category: ['test', 'activity'], valueType: 'number' },
    ],
    initialState: () => ({ n: 0, activeUntil: null }),
    onEvent(state, event, ctx) {
      const until = Math.max(state.activeUntil ?? 0, event.ts + days * DAY_MS)
      ctx.setTimer('inactive', until)
      return { n: state.n + 1, activeUntil: until }
    },
    onTimer(state, _timer, ctx) {
      return state.activeUntil !== null && state.activeUntil <= ctx.now ? { ...state, activeUntil: null } : state
    },
    deriveTags(state) {
      const tags: Record<string, { value: boolean | number }> = { events: { value: state.n } }
      if (state.activeUntil !== null) tags.active = { value: true }
      return tags
    },
  }
}

const user = (i: number) => `u${String(i).padStart(2, '0')}`

/** Users 0..n-1, one event each per round, a day between rounds (timers of earlier rounds fire in between). */
function rounds(users: number, count: number): unknown[] {
  const events: unknown[] = []
  for (let r = 0; r < count; r++) {
    for (let i = 0; i < users; i++) {
      // A different order per round, so the least recently used users are not simply the next ones.
      const u = (i * 7 + r * 3) % users
      events.push({ eventId: `e${r}-${user(u)}`, userId: user(u), type: 'visit', ts: T0 + r * 2 * DAY_MS + i * 1000, properties: {} })
    }
  }
  return events
}

const stable = (c: TagChange) => ({ ...c, emittedAt: '' })

describe('user cache bound', () => {
  it('holds the users whose estimated heap fits cacheMaxBytes, estimated from the stored size of committed states', async () => {
    const cacheMaxBytes = 20_000
    const f = await createFixture([activityOperator()], { engine: { partitions: 1, cacheMaxBytes, commitIntervalMs: 600_000 } })
    f.source.push(...rounds(40, 1))
    await f.drain()
    // One commit, of 40 records of one size: the estimate moved half way from its initial 1024 bytes.
    const stored = (await f.store.level.get(userKey(0, user(0)))) as Buffer
    for (let i = 1; i < 40; i++) expect(((await f.store.level.get(userKey(0, user(i)))) as Buffer).length).toBe(stored.length)
    const bound = Math.floor(cacheMaxBytes / (3.7 * ((1024 + stored.length) / 2)))
    expect(bound).toBeGreaterThan(1)
    expect(bound).toBeLessThan(40)
    expect(f.engine.cacheBoundUsers).toBe(bound)
    expect(f.engine.cachedUsers).toBe(bound)
    await f.close()
  })

  it('evicted users and their timers come back from the store: the same changes and profiles as with every user cached', async () => {
    const run = async (engine: Record<string, unknown>) => {
      const f = await createFixture([activityOperator()], { engine: { partitions: 2, batchSize: 9, commitEvents: 20, ...engine } })
      f.source.push(...rounds(30, 4))
      await f.drain()
      const profiles = []
      for (let i = 0; i < 30; i++) profiles.push((await f.engine.profile(user(i)))?.tags)
      const result = { changes: f.changes.changes.map(stable), profiles, cached: f.engine.cachedUsers }
      await f.close()
      return result
    }
    const all = await run({})
    const one = await run({ cacheMaxBytes: 1 })
    expect(all.cached).toBe(30)
    expect(one.cached).toBe(1)
    // Per user: entered active and events, then in each of 3 later rounds active left (its timer), entered again, events changed.
    expect(all.changes.length).toBe(30 * (2 + 3 * 3))
    expect(all.changes.filter((c) => c.cause.kind === 'timer').length).toBe(30 * 3)
    expect(one.changes).toEqual(all.changes)
    expect(one.profiles).toEqual(all.profiles)
    expect(all.profiles.map((tags) => tags?.events?.value)).toEqual(new Array(30).fill(4))
  })
})
