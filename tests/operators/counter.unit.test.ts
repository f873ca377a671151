import { RankedMultiset } from '../../src/engine/population.js'
import { describe, expect, it } from 'vitest'
import counter, { type CounterState } from '../../operators/counter.js'
import { isTagstreamError } from '../../src/errors.js'
import { DAY_MS } from '../../src/operator-api.js'
import { operatorContractSuite } from './contract-suite.js'
import { createDriver, createOperator, event } from './harness.js'

const HOUR = 3_600_000
/** Day index of 2024-03-01 (UTC). */
const D = Date.UTC(2024, 2, 1) / DAY_MS
const at = (day: number, hours = 0): number => day * DAY_MS + hours * HOUR
const iso = (ms: number): string => new Date(ms).toISOString()

const makeOperator = () => createOperator(counter, 'purchases', { eventTypes: ['purchase', 'refund'], windowDays: 7 })

operatorContractSuite(
  'counter',
  makeOperator,
  () => [
    event('u1', 'purchase', at(D, 9)),
    event('u2', 'purchase', at(D, 10)),
    event('u1', 'purchase', at(D + 1, 9)),
    event('u1', 'view', at(D + 1, 10)),
    event('u1', 'refund', at(D + 2, 9)),
    event('u1', 'purchase', at(D + 1, 23)), // late, inside the window
    event('u2', 'purchase', at(D + 12, 8)), // u2's first day has expired by now; u1 fell back
    event('u1', 'purchase', at(D + 3, 8)), // late, outside the window: counted in the total only
    event('u3', 'purchase', at(D + 13, 0)),
    event('u3', 'purchase', at(D + 13, 1)),
    event('u3', 'purchase', at(D + 13, 2)),
  ],
  { driver: { lateness: 2 * HOUR } },
)

describe('counter operator', () => {
  it('declares its tag, defaulting to <name>_frequency, and applies the defaults', () => {
    const op = createOperator(counter, 'orders', { eventTypes: ['purchase'] })
    expect(op.tags).toStrictEqual([
      {
        id: 'orders_frequency',
        description: 'purchase in the last 30 days: occasional >= 1, regular >= 3, frequent >= 10',
        category: ['behaviour', 'frequency'],
        valueType: 'string',
      },
    ])
    expect(op.eventTypes).toStrictEqual(['purchase'])
    expect(createOperator(counter, 'o', { eventTypes: ['a'], tag: 'buyer', description: 'd' }).tags[0]?.id).toBe('buyer')
  })

  it('maps the windowed count to the highest band whose min it reaches', () => {
    const d = createDriver(createOperator(counter, 'orders', { eventTypes: ['purchase'] }))
    const seen: unknown[] = []
    for (let i = 0; i < 11; i++) {
      d.apply('u1', event('u1', 'purchase', at(D, i)))
      seen.push(d.tagValues('u1').orders_frequency)
    }
    expect(seen).toStrictEqual([
      'occasional',
      'occasional',
      'regular',
      'regular',
      'regular',
      'regular',
      'regular',
      'regular',
      'regular',
      'frequent',
      'frequent',
    ])
    expect(d.tags('u1')).toStrictEqual({
      orders_frequency: { value: 'frequent', evidence: { countInWindow: 11, windowDays: 30, total: 11 } },
    })
    expect(d.changes.map((c) => [c.op, c.from, c.to, c.at])).toStrictEqual([
      ['entered', null, 'occasional', at(D, 0)],
      ['changed', 'occasional', 'regular', at(D, 2)],
      ['changed', 'regular', 'frequent', at(D, 9)],
    ])
  })

  it('no tag below the lowest band, and events of other types are not counted', () => {
    const op = createOperator(counter, 'orders', { eventTypes: ['purchase'], bands: [{ name: 'buyer', min: 2 }] })
    const d = createDriver(op)
    d.apply('u1', event('u1', 'purchase', at(D)))
    d.apply('u1', event('u1', 'view', at(D, 1)))
    expect(d.tagValues('u1')).toStrictEqual({})
    expect(d.view('u1')).toStrictEqual({ total: 1, countInWindow: 1, windowDays: 30, firstAt: iso(at(D)), lastAt: iso(at(D)) })
    // Even called directly (bypassing the dispatch table), other types leave the state alone.
    const s = d.state('u1')
    const ctx = { now: at(D, 2), timeZone: 'UTC', userId: 'u1', setTimer() {}, deleteTimer() {}, timer: () => undefined, population: () => new RankedMultiset() }
    expect(op.onEvent(s, event('u1', 'view', at(D, 2)), ctx)).toBe(s)
    d.apply('u1', event('u1', 'purchase', at(D, 2)))
    expect(d.tagValues('u1')).toStrictEqual({ orders_frequency: 'buyer' })
  })

  it('an event on day D counts until the start of day D + windowDays, when the timer drops the band', () => {
    const d = createDriver(makeOperator()) // windowDays 7
    d.apply('u1', event('u1', 'purchase', at(D, 23.5)))
    d.apply('u1', event('u1', 'purchase', at(D + 2, 12)))
    d.apply('u1', event('u1', 'purchase', at(D + 3, 12)))
    expect(d.tagValues('u1')).toStrictEqual({ purchases_frequency: 'regular' })
    // The timer sits at the instant day D leaves the window.
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'expire', dueMs: at(D + 7) }])

    d.advanceTo(at(D + 7) - 1)
    expect(d.tagValues('u1')).toStrictEqual({ purchases_frequency: 'regular' })
    expect(d.derive('u1')).toStrictEqual({
      purchases_frequency: { value: 'regular', evidence: { countInWindow: 3, windowDays: 7, total: 3 } },
    })

    d.advanceTo(at(D + 7))
    expect(d.tags('u1')).toStrictEqual({
      purchases_frequency: { value: 'occasional', evidence: { countInWindow: 2, windowDays: 7, total: 3 } },
    })
    expect(d.changes.at(-1)).toStrictEqual({
      userId: 'u1',
      tag: 'purchases_frequency',
      op: 'changed',
      from: 'regular',
      to: 'occasional',
      at: at(D + 7),
      cause: { kind: 'timer', name: 'expire' },
      evidence: { countInWindow: 2, windowDays: 7, total: 3 },
    })
    expect(d.state('u1').days).toStrictEqual([
      [D + 2, 1],
      [D + 3, 1],
    ])
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'expire', dueMs: at(D + 9) }])

    // Then it re-registers for each next oldest day, and deletes itself with the last.
    d.advanceTo(at(D + 20))
    expect(d.changes.slice(-1)).toStrictEqual([expect.objectContaining({ op: 'left', from: 'occasional', to: null, at: at(D + 10) })])
    expect(d.timers()).toStrictEqual([])
    expect(d.state('u1')).toStrictEqual({ total: 3, firstTs: at(D, 23.5), lastTs: at(D + 3, 12), days: [] })
    expect(d.view('u1')).toStrictEqual({
      total: 3,
      countInWindow: 0,
      windowDays: 7,
      firstAt: iso(at(D, 23.5)),
      lastAt: iso(at(D + 3, 12)),
    })
  })

  it('the same boundary holds when an event, not the timer, moves the clock past it', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', event('u1', 'purchase', at(D)))
    d.apply('u1', event('u1', 'purchase', at(D, 1)))
    d.apply('u1', event('u1', 'purchase', at(D + 1)))
    d.apply('u2', event('u2', 'purchase', at(D + 7, 5)))
    // u1's timer fired at its due time, before u2's event.
    expect(d.changes.filter((c) => c.userId === 'u1').map((c) => [c.to, c.at, c.cause])).toStrictEqual([
      ['occasional', at(D), { kind: 'event', eventId: event('u1', 'purchase', at(D)).eventId }],
      ['regular', at(D + 1), { kind: 'event', eventId: event('u1', 'purchase', at(D + 1)).eventId }],
      ['occasional', at(D + 7), { kind: 'timer', name: 'expire' }],
    ])
  })

  it('late events land in their own day, inside the window only', () => {
    const d = createDriver(makeOperator(), { lateness: 3 * DAY_MS })
    d.apply('u1', event('u1', 'purchase', at(D + 10, 12))) // clock: D+7 12:00
    expect(d.clock).toBe(at(D + 7, 12))
    d.apply('u1', event('u1', 'purchase', at(D + 4, 6))) // late, day D+4 > D+7-7: inside
    d.apply('u1', event('u1', 'purchase', at(D + 4, 7)))
    d.apply('u1', event('u1', 'purchase', at(D, 6))) // late, day D <= D+7-7: outside
    const s: CounterState = d.state('u1')
    expect(s).toStrictEqual({
      total: 4,
      firstTs: at(D, 6),
      lastTs: at(D + 10, 12),
      days: [
        [D + 4, 2],
        [D + 10, 1],
      ],
    })
    expect(d.tags('u1').purchases_frequency).toStrictEqual({
      value: 'regular',
      evidence: { countInWindow: 3, windowDays: 7, total: 4 },
    })
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'expire', dueMs: at(D + 11) }])
    d.advanceTo(at(D + 11))
    expect(d.tagValues('u1')).toStrictEqual({ purchases_frequency: 'occasional' })
    expect(d.changes.at(-1)).toStrictEqual(expect.objectContaining({ from: 'regular', to: 'occasional', at: at(D + 11) }))
  })

  it('counts events ahead of the clock', () => {
    const d = createDriver(makeOperator(), { lateness: 2 * DAY_MS })
    d.apply('u1', event('u1', 'purchase', at(D + 5)))
    d.apply('u2', event('u2', 'purchase', at(D + 1)))
    expect(d.view('u1', at(D))).toStrictEqual(expect.objectContaining({ countInWindow: 1 }))
    expect(d.tagValues('u1')).toStrictEqual({ purchases_frequency: 'occasional' })
  })

  it('stays bounded after 1,000 days of activity', () => {
    const d = createDriver(createOperator(counter, 'orders', { eventTypes: ['purchase'], windowDays: 30 }), { roundTrip: true })
    for (let day = 0; day < 1000; day++) {
      for (let k = 0; k < 1 + (day % 4); k++) d.apply('u1', event('u1', 'purchase', at(D + day, 8 + k), {}, `e${day}.${k}`))
    }
    const s = d.state('u1') as CounterState
    expect(s.total).toBe(2500)
    expect(s.days.length).toBe(30)
    // Days 970..999 with 1 + (day % 4) events each: 3, 4, 1, 2, ... = 77.
    expect(s.days[0]).toStrictEqual([D + 970, 3])
    expect(d.tags('u1').orders_frequency).toStrictEqual({
      value: 'frequent',
      evidence: { countInWindow: 77, windowDays: 30, total: 2500 },
    })
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'expire', dueMs: at(D + 1000) }])
  })

  it('rejects bands out of order and duplicate band names', () => {
    const code = (config: unknown): string | undefined => {
      try {
        createOperator(counter, 'c', config)
      } catch (err) {
        return isTagstreamError(err) ? err.code : 'schema'
      }
      return undefined
    }
    const bands = (...b: Array<[string, number]>) => b.map(([name, min]) => ({ name, min }))
    expect(code({ eventTypes: ['p'], bands: bands(['a', 3], ['b', 1]) })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ eventTypes: ['p'], bands: bands(['a', 1], ['b', 1]) })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ eventTypes: ['p'], bands: bands(['a', 1], ['a', 2]) })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ eventTypes: ['p'], bands: bands(['a', 0]) })).toBe('schema')
    expect(code({ eventTypes: [] })).toBe('schema')
    expect(code({ eventTypes: ['p'], windowDays: 0 })).toBe('schema')
    expect(code({ eventTypes: ['p'], bands: bands(['a', 1], ['b', 5]) })).toBeUndefined()
  })

  it('counts local days in the configured time zone: a Berlin purchase at 00:30 belongs to that local day', () => {
    const op = createOperator(counter, 'orders', { eventTypes: ['purchase'], windowDays: 2, tag: 'orders_frequency', bands: [{ name: 'buyer', min: 1 }] }, { timeZone: 'Europe/Berlin' })
    const d = createDriver(op, { timeZone: 'Europe/Berlin' })
    // 2024-03-30T23:30Z is 00:30 on 31 March in Berlin (CET): local day 31 March.
    d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 2, 30, 23, 30)))
    // Two local days later, 2 April 00:00 CEST = 1 April 22:00Z (after the DST change), it leaves.
    d.advanceTo(Date.UTC(2024, 3, 1, 21, 59, 59, 999))
    expect(d.tagValues('u1')).toStrictEqual({ orders_frequency: 'buyer' })
    d.advanceTo(Date.UTC(2024, 3, 1, 22))
    expect(d.tagValues('u1')).toStrictEqual({})
    expect(d.changes.at(-1)).toMatchObject({ op: 'left', at: Date.UTC(2024, 3, 1, 22) })
  })
})

