import { describe, expect, it } from 'vitest'
import { DAY_MS, type Operator } from '../../src/operator-api.js'
import { createFixture } from '../support/engine-fixture.js'

const T0 = Date.UTC(2024, 0, 1)

/** Active for `days` after each event; a timer ends it. Counts events. */
function activityOperator(days = 10): Operator<{ n: number; activeUntil: number | null }> {
  return {
    name: 'activity',
    tags: [
      { id: 'active', description: 'seen recently', category: ['test', 'activity'], valueType: 'boolean' },
      { id: 'events', description: 'event count', category: ['test', 'activity'], valueType: 'number' },
    ],
    initialState: () => ({ n: 0, activeUntil: null }),
    onEvent(state, event, ctx) {
      if (event.properties.explode === true) throw new Error('boom')
      const until = Math.max(state.activeUntil ?? 0, event.ts + days * DAY_MS)
      ctx.setTimer('inactive', until)
      return { n: state.n + 1, activeUntil: until }
    },
    onTimer(state, _timer, ctx) {
      return state.activeUntil !== null && state.activeUntil <= ctx.now ? { ...state, activeUntil: null } : state
    },
    deriveTags(state) {
      const tags: Record<string, { value: boolean | number; evidence?: Record<string, unknown> }> = { events: { value: state.n } }
      if (state.activeUntil !== null) tags.active = { value: true, evidence: { activeUntil: state.activeUntil } }
      return tags
    },
  }
}

const ev = (id: string, user: string, day: number, props: Record<string, unknown> = {}) => ({
  eventId: id,
  userId: user,
  type: 'visit',
  ts: T0 + day * DAY_MS,
  properties: props,
})

describe('engine', () => {
  it('emits entered/changed/left with stable ids, per-user seq and causes', async () => {
    // One partition: one clock for all users (each partition has its own watermark).
    const f = await createFixture([activityOperator()], { engine: { partitions: 1 } })
    f.source.push(ev('e1', 'alice', 0), ev('e2', 'alice', 1), ev('e3', 'bob', 20))
    await f.drain()
    const summary = f.changes.changes.map((c) => [c.userId, c.tag, c.op, c.from, c.to, c.seq, c.at, c.cause])
    expect(summary).toEqual([
      ['alice', 'active', 'entered', null, true, 1, '2024-01-01T00:00:00.000Z', { kind: 'event', eventId: 'e1' }],
      ['alice', 'events', 'entered', null, 1, 2, '2024-01-01T00:00:00.000Z', { kind: 'event', eventId: 'e1' }],
      ['alice', 'events', 'changed', 1, 2, 3, '2024-01-02T00:00:00.000Z', { kind: 'event', eventId: 'e2' }],
      // bob's event moves the clock to day 20: alice's timer (day 11) fires first, at its own time.
      ['alice', 'active', 'left', true, null, 4, '2024-01-12T00:00:00.000Z', { kind: 'timer', name: 'activity.inactive' }],
      ['bob', 'active', 'entered', null, true, 1, '2024-01-21T00:00:00.000Z', { kind: 'event', eventId: 'e3' }],
      ['bob', 'events', 'entered', null, 1, 2, '2024-01-21T00:00:00.000Z', { kind: 'event', eventId: 'e3' }],
    ])
    expect(new Set(f.changes.changes.map((c) => c.id)).size).toBe(6)
    expect(f.changes.changes[0]?.evidence).toEqual({ activeUntil: T0 + 10 * DAY_MS })
    await f.close()
  })

  it('fires a timer exactly when the watermark reaches it, not before', async () => {
    // alice and bob share partition 0 with partitions: 1.
    const f = await createFixture([activityOperator(10)], { engine: { partitions: 1 } })
    f.source.push(ev('e1', 'alice', 0), { ...ev('e2', 'bob', 0), ts: T0 + 10 * DAY_MS - 1 })
    await f.drain()
    expect(f.changes.changes.filter((c) => c.op === 'left')).toEqual([])
    const g = await f.reopen()
    g.source.push({ ...ev('e3', 'bob', 0), ts: T0 + 10 * DAY_MS })
    await g.drain()
    expect(g.changes.changes.filter((c) => c.op === 'left').map((c) => [c.userId, c.at])).toEqual([['alice', '2024-01-11T00:00:00.000Z']])
    await g.close()
  })

  it('applies a duplicate event id once', async () => {
    const f = await createFixture([activityOperator()])
    f.source.push(ev('e1', 'alice', 0), ev('e1', 'alice', 0), ev('e2', 'alice', 0), ev('e1', 'bob', 0))
    await f.drain()
    expect(f.engine.stats.duplicates).toBe(1)
    expect((await f.engine.profile('alice'))?.tags.events?.value).toBe(2)
    expect((await f.engine.profile('bob'))?.tags.events?.value).toBe(1)
    await f.close()
  })

  it('dead-letters an event an operator throws on, and leaves the user as before', async () => {
    const f = await createFixture([activityOperator()])
    f.source.push(ev('e1', 'alice', 0), ev('e2', 'alice', 1, { explode: true }), ev('e3', 'alice', 2))
    await f.drain()
    expect(f.deadLetters.deadLetters.map((d) => [d.reason.code, d.eventId, d.coordinates.offset])).toEqual([['operator_error', 'e2', 1]])
    expect((await f.engine.profile('alice'))?.tags.events?.value).toBe(2)
    expect(f.engine.stats.operatorErrors).toBe(1)
    await f.close()
  })

  it('dead-letters events older than the late horizon and applies late ones within it', async () => {
    const f = await createFixture([activityOperator()], { time: { lateHorizonMs: 5 * DAY_MS } })
    f.source.push(ev('e1', 'alice', 30), ev('e2', 'alice', 26), ev('e3', 'alice', 24))
    await f.drain()
    expect(f.deadLetters.deadLetters.map((d) => [d.reason.code, d.eventId])).toEqual([['too_late', 'e3']])
    expect((await f.engine.profile('alice'))?.tags.events?.value).toBe(2)
    await f.close()
  })

  it('restores state, clock and timers after a restart and resumes from the stored position', async () => {
    const f = await createFixture([activityOperator()], { engine: { partitions: 1 } })
    f.source.push(ev('e1', 'alice', 0), ev('e2', 'bob', 3))
    await f.drain()
    const g = await f.reopen()
    g.source.push(ev('e3', 'carol', 30))
    await g.drain()
    // Only the new event was read; alice's and bob's timers, stored before the restart, fired.
    expect(g.engine.stats.recordsIn).toBe(1)
    expect(g.changes.changes.filter((c) => c.op === 'left').map((c) => [c.userId, c.seq])).toEqual([
      ['alice', 3],
      ['bob', 3],
    ])
    const profile = await g.engine.profile('alice')
    expect(profile).toEqual({ userId: 'alice', tags: { events: { value: 1, since: '2024-01-01T00:00:00.000Z', version: 1 } }, state: { activity: { n: 1, activeUntil: null } } })
    await g.close()
  })

  it('fires more timers than one scan reads, in order, across prefetch rounds', async () => {
    const f = await createFixture([activityOperator(1)], { engine: { partitions: 1 } }, { timerScanLimit: 7 })
    for (let i = 0; i < 40; i++) f.source.push({ ...ev(`e${i}`, `u${String(i).padStart(2, '0')}`, 0), ts: T0 + (i % 5) })
    await f.drain()
    const g = await f.reopen() // timers now only in the store
    g.source.push(ev('x', 'late-comer', 5))
    await g.drain()
    const left = g.changes.changes.filter((c) => c.op === 'left')
    expect(left).toHaveLength(40)
    const order = left.map((c) => [Date.parse(c.at), c.userId])
    expect(order).toEqual([...order].sort((a, b) => (a[0] as number) - (b[0] as number) || String(a[1]).localeCompare(String(b[1]))))
    await g.close()
  })

  it('dead-letters undecodable records with their coordinates and raw bytes', async () => {
    const f = await createFixture([activityOperator()])
    f.source.push(ev('e1', 'alice', 0), '{broken', ev('e2', 'alice', 1))
    await f.drain()
    expect(f.deadLetters.deadLetters).toEqual([
      expect.objectContaining({ reason: expect.objectContaining({ code: 'invalid_json' }), coordinates: { source: 'test', partition: 0, offset: 1 }, raw: Buffer.from('{broken').toString('base64'), truncated: false }),
    ])
    expect(f.engine.stats.eventsApplied).toBe(2)
    await f.close()
  })

  it('advances an idle live partition with the wall clock, so inactivity timers fire on a quiet stream', async () => {
    let wall = Date.UTC(2030, 0, 1)
    const f = await createFixture([activityOperator(10)], { engine: { partitions: 1 } }, { now: () => wall, idleAdvance: true })
    f.source.push({ ...ev('e1', 'alice', 0), ts: wall - 1000 })
    await f.engine.processRecords(f.source, (await f.source.poll(10)) ?? [])
    wall += 11 * DAY_MS
    await f.engine.advanceIdlePartitions(wall)
    await f.engine.commit()
    expect(f.changes.changes.filter((c) => c.op === 'left').map((c) => [c.userId, c.at, c.cause])).toEqual([
      ['alice', new Date(Date.UTC(2030, 0, 1) - 1000 + 10 * DAY_MS).toISOString(), { kind: 'timer', name: 'activity.inactive' }],
    ])
    await f.close()
  })

  it('does not move a replayed history to the wall clock when it goes quiet', async () => {
    let wall = Date.UTC(2030, 0, 1)
    const f = await createFixture([activityOperator(10)], { engine: { partitions: 1 } }, { now: () => wall, idleAdvance: true })
    f.source.push(ev('e1', 'alice', 0)) // 2024: far behind the wall clock
    await f.engine.processRecords(f.source, (await f.source.poll(10)) ?? [])
    wall += 60_000
    await f.engine.advanceIdlePartitions(wall)
    await f.engine.commit()
    expect(f.changes.changes.filter((c) => c.op === 'left')).toEqual([])
    await f.close()
  })

  it('keeps the last history.perUser tag changes of each user, newest first, across restarts', async () => {
    const f = await createFixture([activityOperator()], { engine: { partitions: 1 }, history: { perUser: 3 } })
    f.source.push(ev('e1', 'alice', 0), ev('e2', 'alice', 1), ev('e3', 'alice', 2), ev('e4', 'bob', 30))
    await f.drain()
    const emitted = f.changes.changes.filter((c) => c.userId === 'alice')
    expect(emitted.map((c) => c.seq)).toEqual([1, 2, 3, 4, 5])
    const g = await f.reopen()
    const history = await g.engine.history('alice')
    expect(history.map((c) => c.seq)).toEqual([5, 4, 3])
    // The same changes as emitted, ids included.
    expect(history).toEqual(emitted.slice(2).reverse())
    expect(await g.engine.history('alice', 1)).toEqual([emitted[4]])
    expect(await g.engine.history('nobody')).toEqual([])
    await g.close()
  })
})

