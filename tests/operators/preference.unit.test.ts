import { describe, expect, it } from 'vitest'
import preference, { type PreferenceState } from '../../operators/preference.js'
import { isTagstreamError } from '../../src/errors.js'
import { DAY_MS } from '../../src/operator-api.js'
import { operatorContractSuite } from './contract-suite.js'
import { createDriver, createOperator, event } from './harness.js'

const HOUR = 3_600_000
const BERLIN = 'Europe/Berlin'
/** An instant written as local time with its offset, e.g. '2024-03-02T12:00+01:00'. */
const t = (s: string): number => Date.parse(s)
const iso = (ms: number): string => new Date(ms).toISOString()

const makeOperator = (config: unknown = {}) => createOperator(preference, 'preference', config)
const buy = (userId: string, at: string | number, category: unknown, amount: unknown = 10, id?: string) =>
  event(userId, 'purchase', typeof at === 'number' ? at : t(at), { category, amount }, id)

operatorContractSuite(
  'preference',
  () => makeOperator({ labels: { 'fresh-food': 'fresh-food lover' } }),
  () => [
    buy('u1', '2024-01-05T10:00+01:00', 'fresh-food', 50),
    buy('u1', '2024-01-05T11:00+01:00', 'fresh-food', 50),
    buy('u2', '2024-01-06T10:00+01:00', 'electronics', 300),
    buy('u1', '2024-02-10T10:00+01:00', 'grocery', 30),
    buy('u2', '2024-02-11T10:00+01:00', 'books', 12.5),
    buy('u2', '2024-02-11T09:30+01:00', 'books', 12.5), // late, inside the lateness
    buy('u1', '2024-03-31T03:30+02:00', 'grocery', 30), // the hour after the spring change
    event('u1', 'view', t('2024-04-01T10:00+02:00'), { category: 'toys' }),
    buy('u3', '2024-10-27T02:30+01:00', 'toys', '19.99'), // the repeated autumn hour
    buy('u3', '2024-10-27T02:45+01:00', 'toys', '5.01'),
  ],
  { driver: { timeZone: BERLIN, lateness: HOUR } },
)

operatorContractSuite(
  'preference (events)',
  () => makeOperator({ measure: 'events', eventTypes: ['view'], windowDays: 7, minShare: 0.5, minEvents: 3 }),
  () =>
    ['toys', 'toys', 'books', 'toys', 'books', 'books', 'books', 'garden'].map((category, i) =>
      event('u1', 'view', Date.UTC(2024, 0, 1 + 2 * i, 9), { category }),
    ),
)

describe('preference operator', () => {
  it('config {} ranks purchase categories by spend over 90 days', () => {
    const op = makeOperator()
    expect(op.tags).toStrictEqual([
      {
        id: 'preferred_category',
        description: 'Category with the largest share of spend (purchase) in the last 90 days, when >= 0.4 with >= 2 events',
        category: ['model', 'preference'],
        valueType: 'string',
      },
    ])
    expect(op.eventTypes).toStrictEqual(['purchase'])
  })

  it('given purchases, the leader by spend is tagged once its share reaches minShare and the user has minEvents', () => {
    const d = createDriver(makeOperator({ labels: { 'fresh-food': 'fresh-food lover' } }))
    const day = Date.UTC(2024, 4, 1)
    d.apply('u1', buy('u1', day, 'fresh-food', 30))
    expect(d.tagValues('u1')).toStrictEqual({}) // one event < minEvents 2
    d.apply('u1', buy('u1', day + HOUR, 'grocery', 20))
    expect(d.tags('u1')).toStrictEqual({
      preferred_category: {
        value: 'fresh-food lover',
        evidence: { category: 'fresh-food', share: 0.6, windowDays: 90, total: 50, measure: 'spend', events: 2 },
      },
    })
    d.apply('u1', buy('u1', day + 2 * HOUR, 'electronics', 40))
    expect(d.tags('u1').preferred_category).toStrictEqual({
      value: 'electronics buyer',
      evidence: { category: 'electronics', share: 40 / 90, windowDays: 90, total: 90, measure: 'spend', events: 3 },
    })
    // Exactly minShare still holds: 40 of 100.00.
    d.apply('u1', buy('u1', day + 3 * HOUR, 'books', 10))
    expect(d.tags('u1').preferred_category?.evidence).toStrictEqual(
      expect.objectContaining({ category: 'electronics', share: 0.4, total: 100 }),
    )
    // One more cent elsewhere and it does not: the user leaves the tag.
    d.apply('u1', buy('u1', day + 4 * HOUR, 'books', 0.01, 'cent'))
    expect(d.tagValues('u1')).toStrictEqual({})
    expect(d.changes.at(-1)).toStrictEqual(
      expect.objectContaining({ op: 'left', from: 'electronics buyer', to: null, cause: { kind: 'event', eventId: 'cent' } }),
    )
    expect(d.view('u1')).toStrictEqual({
      measure: 'spend',
      windowDays: 90,
      total: 100.01,
      events: 5,
      allTimeEvents: 5,
      categories: [
        { category: 'electronics', events: 1, spend: 40, share: 4000 / 10001 },
        { category: 'fresh-food', events: 1, spend: 30, share: 3000 / 10001 },
        { category: 'grocery', events: 1, spend: 20, share: 2000 / 10001 },
        { category: 'books', events: 2, spend: 10.01, share: 1001 / 10001 },
      ],
    })
  })

  it('ties: more events wins, then the most recent day, then the category name, whatever the arrival order', () => {
    const day = Date.UTC(2024, 4, 1)
    const tagOf = (events: ReturnType<typeof buy>[]) => {
      const d = createDriver(makeOperator())
      for (const e of events) d.apply(e.userId, e)
      return d.tags('u1').preferred_category
    }
    // Same spend, same events, same day: by name.
    const sameDay = [buy('u1', day + HOUR, 'grocery', 50), buy('u1', day, 'fresh-food', 50)]
    expect(tagOf(sameDay)).toStrictEqual({
      value: 'fresh-food buyer',
      evidence: { category: 'fresh-food', share: 0.5, windowDays: 90, total: 100, measure: 'spend', events: 2 },
    })
    expect(tagOf([...sameDay].reverse())?.value).toBe('fresh-food buyer')
    // Same spend and events, grocery bought on a later day: grocery.
    const laterDay = [buy('u1', day, 'fresh-food', 50), buy('u1', day + DAY_MS, 'grocery', 50)]
    expect(tagOf(laterDay)?.value).toBe('grocery buyer')
    expect(tagOf([...laterDay].reverse())?.value).toBe('grocery buyer')
    // Same spend, fresh-food in two purchases: fresh-food, even though grocery is more recent.
    const moreEvents = [buy('u1', day, 'fresh-food', 25), buy('u1', day, 'fresh-food', 25), buy('u1', day + DAY_MS, 'grocery', 50)]
    expect(tagOf(moreEvents)?.value).toBe('fresh-food buyer')
    expect(tagOf([...moreEvents].reverse())?.value).toBe('fresh-food buyer')
  })

  it('measure events: shares of the event count; amounts are not needed', () => {
    const d = createDriver(makeOperator({ measure: 'events', eventTypes: ['purchase', 'view'], minShare: 0.5, minEvents: 3 }))
    const day = Date.UTC(2024, 4, 1)
    d.apply('u1', event('u1', 'view', day, { category: 'toys' }))
    d.apply('u1', event('u1', 'view', day + 1, { category: 'toys' }))
    expect(d.tagValues('u1')).toStrictEqual({})
    d.apply('u1', event('u1', 'purchase', day + 2, { category: 'books', amount: 500 }))
    expect(d.tags('u1').preferred_category).toStrictEqual({
      value: 'toys buyer',
      evidence: { category: 'toys', share: 2 / 3, windowDays: 90, total: 3, measure: 'events', events: 3 },
    })
    d.apply('u1', event('u1', 'view', day + 3, { category: 'books' }))
    // 2 : 2, equal events; books has the larger spend.
    expect(d.tags('u1').preferred_category?.evidence).toStrictEqual(expect.objectContaining({ category: 'books', share: 0.5 }))
  })

  it('ignores events without a category, and in spend mode without a usable amount', () => {
    const d = createDriver(makeOperator())
    const day = Date.UTC(2024, 4, 1)
    d.apply('u1', buy('u1', day, 'toys', 10))
    const before: PreferenceState = d.state('u1')
    const ignored = [
      event('u1', 'purchase', day + 1, { amount: 10 }),
      buy('u1', day + 2, '', 10),
      buy('u1', day + 3, 42, 10),
      buy('u1', day + 4, ['toys'], 10),
      buy('u1', day + 5, 'toys', -1),
      buy('u1', day + 6, 'toys', 'free'),
      event('u1', 'purchase', day + 7, { category: 'toys' }),
      event('u1', 'refund', day + 8, { category: 'toys', amount: 10 }),
    ]
    for (const e of ignored) d.apply('u1', e)
    expect(d.state('u1')).toBe(before)
    d.apply('u1', buy('u1', day + 9, 'toys', 0)) // a free item counts as an event
    expect(d.tags('u1').preferred_category?.evidence).toStrictEqual(expect.objectContaining({ share: 1, total: 10, events: 2 }))
  })

  it('window expiry: a day leaves at the start of local day (day + windowDays), and the tag follows at that instant', () => {
    const d = createDriver(makeOperator(), { timeZone: BERLIN })
    d.apply('u1', buy('u1', '2024-01-05T23:30+01:00', 'fresh-food', 50))
    d.apply('u1', buy('u1', '2024-01-05T23:45+01:00', 'fresh-food', 50))
    d.apply('u1', buy('u1', '2024-02-10T10:00+01:00', 'grocery', 30))
    d.apply('u1', buy('u1', '2024-03-20T10:00+01:00', 'grocery', 30))
    expect(d.tags('u1').preferred_category?.evidence).toStrictEqual(
      expect.objectContaining({ category: 'fresh-food', share: 0.625, total: 160 }),
    )
    // 5 January (22:30 UTC, local day 5 January) + 90 days = 4 April 00:00 CEST, after the spring change.
    const first = t('2024-04-04T00:00+02:00')
    expect(first).toBe(Date.UTC(2024, 3, 3, 22))
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'expire', dueMs: first }])
    d.advanceTo(first - 1)
    expect(d.tagValues('u1')).toStrictEqual({ preferred_category: 'fresh-food buyer' })
    d.advanceTo(first)
    expect(d.tags('u1').preferred_category).toStrictEqual({
      value: 'grocery buyer',
      evidence: { category: 'grocery', share: 1, windowDays: 90, total: 60, measure: 'spend', events: 2 },
    })
    // 10 February + 90 days = 10 May: one event left, below minEvents.
    const second = t('2024-05-10T00:00+02:00')
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'expire', dueMs: second }])
    d.advanceTo(t('2024-12-31T00:00+01:00'))
    expect(d.changes.map((c) => [c.op, c.to, iso(c.at), c.cause.kind])).toStrictEqual([
      ['entered', 'fresh-food buyer', '2024-01-05T22:45:00.000Z', 'event'],
      ['changed', 'grocery buyer', '2024-04-03T22:00:00.000Z', 'timer'],
      ['left', null, '2024-05-09T22:00:00.000Z', 'timer'],
    ])
    // The last day (20 March) left on 18 June; nothing is kept, no timer.
    expect(d.state('u1')).toStrictEqual({ total: 4, days: [] })
    expect(d.timers()).toStrictEqual([])
  })

  it('late events land in their own day, inside the window only', () => {
    const d = createDriver(makeOperator({ windowDays: 7 }), { lateness: 3 * DAY_MS })
    const D = Date.UTC(2024, 4, 10) / DAY_MS
    d.apply('u1', buy('u1', (D + 10) * DAY_MS, 'toys', 10)) // clock: D + 7
    d.apply('u1', buy('u1', (D + 2) * DAY_MS, 'books', 99)) // late, day D + 2 > D + 7 - 7: inside
    d.apply('u1', buy('u1', D * DAY_MS, 'books', 1000)) // late, outside
    expect(d.state('u1')).toStrictEqual({
      total: 3,
      days: [
        [D + 2, 'books', 1, 9900],
        [D + 10, 'toys', 1, 1000],
      ],
    })
    expect(d.tagValues('u1')).toStrictEqual({ preferred_category: 'books buyer' })
    d.advanceTo((D + 9) * DAY_MS)
    expect(d.tagValues('u1')).toStrictEqual({})
  })

  it('stays bounded after 1,000 days of purchases', () => {
    const d = createDriver(makeOperator({ windowDays: 30 }), { roundTrip: true, timeZone: BERLIN })
    const categories = ['toys', 'books', 'garden']
    const start = Date.UTC(2024, 0, 1, 11)
    for (let day = 0; day < 1000; day++) {
      for (let k = 0; k <= day % 3; k++) d.apply('u1', buy('u1', start + day * DAY_MS + k * 60_000, categories[k], 10 + k, `e${day}.${k}`))
    }
    const s = d.state('u1') as PreferenceState
    expect(s.total).toBe(1999)
    // 30 days x (1 + day % 3) categories: 10 x (1 + 2 + 3) buckets.
    expect(s.days.length).toBe(60)
    expect(d.tags('u1').preferred_category).toStrictEqual({
      value: 'toys buyer',
      evidence: { category: 'toys', share: 300 / 640, windowDays: 30, total: 640, measure: 'spend', events: 60 },
    })
  })

  it('rejects configs outside the schema', () => {
    const code = (config: unknown): string | undefined => {
      try {
        createOperator(preference, 'p', config)
      } catch (err) {
        return isTagstreamError(err) ? err.code : 'schema'
      }
      return undefined
    }
    expect(code({ minShare: 0 })).toBe('schema')
    expect(code({ minShare: 1.5 })).toBe('schema')
    expect(code({ windowDays: 0 })).toBe('schema')
    expect(code({ minEvents: 0 })).toBe('schema')
    expect(code({ measure: 'visits' })).toBe('schema')
    expect(code({ eventTypes: [] })).toBe('schema')
    expect(code({ labels: { toys: '' } })).toBe('schema')
    expect(code({ tag: '1st' })).toBe('schema')
    expect(code({ minShare: 1, measure: 'events', labels: { toys: 'toy fan' } })).toBeUndefined()
  })
})
