import { describe, expect, it } from 'vitest'
import loyalty, { toMinorUnits, type LoyaltyState } from '../../operators/loyalty.js'
import { isTagstreamError } from '../../src/errors.js'
import { DAY_MS } from '../../src/operator-api.js'
import { operatorContractSuite } from './contract-suite.js'
import { createDriver, createOperator, event } from './harness.js'

const HOUR = 3_600_000
const BERLIN = 'Europe/Berlin'
/** An instant written as local time with its offset, e.g. '2024-03-02T12:00+01:00'. */
const t = (s: string): number => Date.parse(s)
const iso = (ms: number): string => new Date(ms).toISOString()

const makeOperator = (config: unknown = {}) => createOperator(loyalty, 'loyalty', config)
const buy = (userId: string, at: string, amount: unknown, id?: string) => event(userId, 'purchase', t(at), { amount }, id)
const refund = (userId: string, at: string, amount: unknown, id?: string) => event(userId, 'refund', t(at), { amount }, id)

operatorContractSuite(
  'loyalty',
  () => makeOperator(),
  () => [
    buy('u1', '2024-03-30T10:00+01:00', 450.5),
    buy('u2', '2024-03-30T11:00+01:00', 20),
    buy('u1', '2024-03-31T10:00+02:00', 49.5), // silver: 500.00
    buy('u3', '2024-04-01T09:00+02:00', '2500.00'), // gold
    refund('u3', '2024-04-02T09:00+02:00', 600), // back to silver
    buy('u1', '2024-04-01T08:00+02:00', 1.25), // late, inside the lateness
    buy('u2', '2024-10-27T02:30+01:00', 12000), // diamond, in the repeated hour
    event('u2', 'view', t('2024-10-28T10:00+01:00')),
    buy('u4', '2024-10-28T10:00+01:00', 'n/a'), // ignored
  ],
  { driver: { timeZone: BERLIN, lateness: HOUR } },
)

operatorContractSuite(
  'loyalty (never downgrade)',
  () => makeOperator({ downgrade: { policy: 'never' }, pointsPerUnit: 2 }),
  () => [buy('u1', '2024-01-01T10:00+01:00', 249.99), buy('u1', '2024-01-02T10:00+01:00', 0.01), refund('u1', '2024-01-03T10:00+01:00', 100)],
  { driver: { timeZone: BERLIN } },
)

describe('loyalty operator', () => {
  it('config {} is 1 point per unit of amount, bronze to diamond, points held for 365 days', () => {
    const op = makeOperator()
    expect(op.tags).toStrictEqual([
      {
        id: 'loyalty_tier',
        description:
          'Loyalty tier by points (1 per unit of amount, last 365 days): bronze >= 0, silver >= 500, gold >= 2000, platinum >= 5000, diamond >= 10000',
        category: ['model', 'loyalty'],
        valueType: 'string',
      },
    ])
    expect(op.eventTypes).toStrictEqual(['purchase', 'refund'])
  })

  it('given purchases, the tier upgrades the moment the points reach a threshold, exact to the cent', () => {
    const d = createDriver(makeOperator(), { timeZone: BERLIN })
    d.apply('u1', buy('u1', '2024-05-01T10:00+02:00', 199.99, 'p1'))
    expect(d.tags('u1')).toStrictEqual({
      loyalty_tier: { value: 'bronze', evidence: { points: 199.99, tier: 'bronze', nextTier: 'silver', pointsToNextTier: 300.01 } },
    })
    // 0.1 + 0.2 !== 0.3 in floating point; points are integer hundredths.
    d.apply('u1', buy('u1', '2024-05-01T11:00+02:00', 0.1, 'p2'))
    d.apply('u1', buy('u1', '2024-05-01T12:00+02:00', 0.2, 'p3'))
    d.apply('u1', buy('u1', '2024-05-01T13:00+02:00', 299.7, 'p4'))
    expect(d.tags('u1').loyalty_tier?.evidence).toStrictEqual({ points: 499.99, tier: 'bronze', nextTier: 'silver', pointsToNextTier: 0.01 })
    d.apply('u1', buy('u1', '2024-05-02T09:00+02:00', 0.01, 'p5'))
    expect(d.tags('u1')).toStrictEqual({
      loyalty_tier: { value: 'silver', evidence: { points: 500, tier: 'silver', nextTier: 'gold', pointsToNextTier: 1500 } },
    })
    d.apply('u1', buy('u1', '2024-05-03T09:00+02:00', 20000, 'p6'))
    expect(d.tags('u1').loyalty_tier).toStrictEqual({
      value: 'diamond',
      evidence: { points: 20500, tier: 'diamond', nextTier: null, pointsToNextTier: null },
    })
    expect(d.changes.map((c) => [c.op, c.from, c.to, c.cause])).toStrictEqual([
      ['entered', null, 'bronze', { kind: 'event', eventId: 'p1' }],
      ['changed', 'bronze', 'silver', { kind: 'event', eventId: 'p5' }],
      ['changed', 'silver', 'diamond', { kind: 'event', eventId: 'p6' }],
    ])
  })

  it('sums a thousand 19.99 purchases to exactly 19,990 points', () => {
    const d = createDriver(makeOperator({ downgrade: { policy: 'never' } }))
    let float = 0
    for (let i = 0; i < 1000; i++) {
      d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 0, 1) + i * HOUR, { amount: 19.99 }, `p${i}`))
      float += 19.99
    }
    expect(float).not.toBe(19990)
    expect(d.tags('u1').loyalty_tier?.evidence).toStrictEqual({ points: 19990, tier: 'diamond', nextTier: null, pointsToNextTier: null })
    expect(d.state('u1')).toStrictEqual({ earnEvents: 1000, refundEvents: 0, earned: 1_999_000, balance: 1_999_000, days: [] })
  })

  it('reads amounts as cents, rounded half up; points per unit are rounded once per event to the hundredth', () => {
    expect([19.99, 0.285, '12.345', '7', 0, 1e-7].map(toMinorUnits)).toStrictEqual([1999, 29, 1235, 700, 0, 0])
    expect([-1, '-1', '1e3', 'abc', '', Number.NaN, Number.POSITIVE_INFINITY, null, true, { v: 1 }].map(toMinorUnits)).toStrictEqual(
      Array(10).fill(undefined),
    )
    const d = createDriver(makeOperator({ pointsPerUnit: 0.1, amountProperty: 'total' }))
    d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 0, 1), { total: 19.99 })) // 1.999 points -> 2.00
    d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 0, 2), { total: '12.345' })) // 12.35 units -> 1.235 -> 1.24
    expect(d.view('u1')).toStrictEqual(expect.objectContaining({ points: 3.24, earnedPoints: 3.24 }))
  })

  it('ignores purchases and refunds without a usable amount', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 0, 1), { amount: 10 }))
    const before = d.state('u1')
    for (const [i, props] of [{}, { amount: -5 }, { amount: 'ten' }, { amount: null }, { price: 10 }].entries()) {
      d.apply('u1', event('u1', i % 2 === 0 ? 'purchase' : 'refund', Date.UTC(2024, 0, 2 + i), props))
      expect(d.state('u1')).toBe(before)
    }
    expect(d.changes).toHaveLength(1)
  })

  it('a refund takes its points back at once, newest days first, never below zero', () => {
    const d = createDriver(makeOperator(), { timeZone: BERLIN })
    d.apply('u1', buy('u1', '2024-05-01T10:00+02:00', 1500))
    d.apply('u1', buy('u1', '2024-05-10T10:00+02:00', 700))
    expect(d.tagValues('u1')).toStrictEqual({ loyalty_tier: 'gold' })
    d.apply('u1', refund('u1', '2024-05-12T10:00+02:00', 250.5, 'r1'))
    expect(d.changes.at(-1)).toStrictEqual({
      userId: 'u1',
      tag: 'loyalty_tier',
      op: 'changed',
      from: 'gold',
      to: 'silver',
      at: t('2024-05-12T10:00+02:00'),
      cause: { kind: 'event', eventId: 'r1' },
      evidence: { points: 1949.5, tier: 'silver', nextTier: 'gold', pointsToNextTier: 50.5 },
    })
    const may = (day: number) => t(`2024-05-${String(day).padStart(2, '0')}T00:00+02:00`)
    const dayOf = (ms: number) => Math.floor((ms + 2 * HOUR) / DAY_MS)
    expect(d.state('u1').days).toStrictEqual([
      [dayOf(may(1)), 150_000],
      [dayOf(may(10)), 44_950],
    ])
    // Taking back more than the newest day holds reaches into older days.
    d.apply('u1', refund('u1', '2024-05-13T10:00+02:00', 1000))
    expect(d.state('u1').days).toStrictEqual([[dayOf(may(1)), 94_950]])
    d.apply('u1', refund('u1', '2024-05-14T10:00+02:00', 5000))
    expect(d.state('u1')).toStrictEqual({ earnEvents: 2, refundEvents: 3, earned: 220_000, balance: 0, days: [] })
    expect(d.tags('u1').loyalty_tier?.evidence).toStrictEqual({ points: 0, tier: 'bronze', nextTier: 'silver', pointsToNextTier: 500 })
    expect(d.timers()).toStrictEqual([])
    // A refund of a purchase from before the engine's time makes nobody a member.
    d.apply('u2', refund('u2', '2024-05-14T11:00+02:00', 20))
    expect(d.tagValues('u2')).toStrictEqual({})
    expect(d.view('u2')).toStrictEqual(
      expect.objectContaining({ points: 0, tier: null, nextTier: 'bronze', pointsToNextTier: 0, earnEvents: 0, refundEvents: 1, tierUntil: null }),
    )
  })

  it('rolling window: points leave 365 local days after the day earned, and the tier falls exactly then', () => {
    const d = createDriver(makeOperator(), { timeZone: BERLIN })
    d.apply('u1', buy('u1', '2024-03-30T22:00+01:00', 600))
    d.apply('u1', buy('u1', '2024-06-01T10:00+02:00', 100))
    expect(d.tagValues('u1')).toStrictEqual({ loyalty_tier: 'silver' })
    // 30 March 2024 + 365 days = 30 March 2025, itself a DST day, starting at 00:00 CET.
    const due = t('2025-03-30T00:00+01:00')
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'downgrade', dueMs: due }])
    expect(d.view('u1')).toStrictEqual({
      points: 700,
      tier: 'silver',
      nextTier: 'gold',
      pointsToNextTier: 1300,
      earnedPoints: 700,
      earnEvents: 2,
      refundEvents: 0,
      policy: 'rollingWindow',
      windowDays: 365,
      nextExpiry: { at: iso(due), points: 600 },
      tierUntil: iso(due),
    })
    d.advanceTo(due - 1)
    expect(d.tagValues('u1')).toStrictEqual({ loyalty_tier: 'silver' })
    d.advanceTo(due)
    expect(d.changes.at(-1)).toStrictEqual({
      userId: 'u1',
      tag: 'loyalty_tier',
      op: 'changed',
      from: 'silver',
      to: 'bronze',
      at: due,
      cause: { kind: 'timer', name: 'downgrade' },
      evidence: { points: 100, tier: 'bronze', nextTier: 'silver', pointsToNextTier: 400 },
    })
    // Bronze starts at 0: nothing left to lose, no timer, though 100 points expire on 1 June 2025.
    expect(d.timers()).toStrictEqual([])
    expect(d.view('u1', t('2025-06-01T00:00+02:00'))).toStrictEqual(expect.objectContaining({ points: 0, tier: 'bronze', nextExpiry: null }))
  })

  it('the timer sits at the expiry that drops the tier, not at every day that expires', () => {
    const d = createDriver(makeOperator({ downgrade: { policy: 'rollingWindow', days: 30 } }), { timeZone: BERLIN })
    d.apply('u1', buy('u1', '2024-10-01T12:00+02:00', 1000))
    d.apply('u1', buy('u1', '2024-10-05T12:00+02:00', 800))
    d.apply('u1', buy('u1', '2024-10-09T12:00+02:00', 300)) // 2100: gold
    d.apply('u1', buy('u1', '2024-10-10T12:00+02:00', 500)) // 2600
    expect(d.tagValues('u1')).toStrictEqual({ loyalty_tier: 'gold' })
    // Losing 1 October leaves 1600 < 2000: the first expiry already drops the tier. 31 October 00:00 CET (after the change).
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'downgrade', dueMs: t('2024-10-31T00:00+01:00') }])
    d.advanceTo(t('2024-10-31T00:00+01:00'))
    expect(d.tags('u1').loyalty_tier?.evidence).toStrictEqual({ points: 1600, tier: 'silver', nextTier: 'gold', pointsToNextTier: 400 })
    // 1600 - 800 (5 Oct) = 800, still silver; - 300 (9 Oct) = 500, still silver; - 500 (10 Oct) = 0: bronze on 9 November.
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'downgrade', dueMs: t('2024-11-09T00:00+01:00') }])
    d.advanceTo(t('2024-11-09T00:00+01:00') - 1)
    expect(d.derive('u1').loyalty_tier?.evidence).toStrictEqual({ points: 500, tier: 'silver', nextTier: 'gold', pointsToNextTier: 1500 })
    d.advanceTo(t('2024-11-09T00:00+01:00'))
    expect(d.changes.map((c) => [c.to, iso(c.at)])).toStrictEqual([
      ['silver', '2024-10-01T10:00:00.000Z'],
      ['gold', '2024-10-09T10:00:00.000Z'],
      ['silver', '2024-10-30T23:00:00.000Z'],
      ['bronze', '2024-11-08T23:00:00.000Z'],
    ])
  })

  it('a purchase can move the downgrade later; a late purchase from a day out of the window earns nothing that counts', () => {
    const d = createDriver(makeOperator({ downgrade: { policy: 'rollingWindow', days: 30 } }), { timeZone: BERLIN, lateness: 40 * DAY_MS })
    d.apply('u1', buy('u1', '2024-03-20T12:00+01:00', 600))
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'downgrade', dueMs: t('2024-04-19T00:00+02:00') }])
    d.apply('u1', buy('u1', '2024-05-01T12:00+02:00', 10)) // clock: 22 March 10:00 UTC (40 days back)
    // 600 still expires on 19 April, and 10 alone is not silver: the timer stays.
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'downgrade', dueMs: t('2024-04-19T00:00+02:00') }])
    d.apply('u1', buy('u1', '2024-04-25T12:00+02:00', 600))
    // 1210 points: losing 20 March leaves 610 (silver), losing 25 April too leaves 10.
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'downgrade', dueMs: t('2024-05-25T00:00+02:00') }])
    d.apply('u1', buy('u1', '2024-06-10T12:00+02:00', 1)) // clock: 1 May; 20 March has left the window
    d.apply('u1', buy('u1', '2024-03-25T12:00+01:00', 5000)) // late, out of the window
    const s: LoyaltyState = d.state('u1')
    expect(s.earnEvents).toBe(5)
    expect(s.earned).toBe(621_100)
    expect(s.days.map(([, points]) => points)).toStrictEqual([60_000, 1000, 100])
    expect(d.tags('u1').loyalty_tier?.evidence).toStrictEqual({ points: 611, tier: 'silver', nextTier: 'gold', pointsToNextTier: 1389 })
    expect(d.changes.map((c) => c.to)).toStrictEqual(['silver'])
  })

  it('policy never: points never expire, only refunds lower them', () => {
    const d = createDriver(makeOperator({ downgrade: { policy: 'never' } }), { timeZone: BERLIN })
    d.apply('u1', buy('u1', '2020-01-01T10:00+01:00', 2500))
    expect(d.timers()).toStrictEqual([])
    d.advanceTo(t('2030-01-01T00:00+01:00'))
    expect(d.tagValues('u1')).toStrictEqual({ loyalty_tier: 'gold' })
    expect(d.view('u1')).toStrictEqual({
      points: 2500,
      tier: 'gold',
      nextTier: 'platinum',
      pointsToNextTier: 2500,
      earnedPoints: 2500,
      earnEvents: 1,
      refundEvents: 0,
      policy: 'never',
    })
    d.apply('u1', refund('u1', '2030-01-02T10:00+01:00', 500.01))
    expect(d.tags('u1').loyalty_tier?.evidence).toStrictEqual({ points: 1999.99, tier: 'silver', nextTier: 'gold', pointsToNextTier: 0.01 })
  })

  it('custom tiers: below the lowest tier there is no tag', () => {
    const d = createDriver(makeOperator({ tiers: [{ name: 'member', minPoints: 100 }, { name: 'vip', minPoints: 1000 }], tag: 'club' }))
    d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 0, 1), { amount: 99.99 }))
    expect(d.tagValues('u1')).toStrictEqual({})
    d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 0, 2), { amount: 0.01 }))
    expect(d.tags('u1')).toStrictEqual({ club: { value: 'member', evidence: { points: 100, tier: 'member', nextTier: 'vip', pointsToNextTier: 900 } } })
    // 365 days on, the points have left: the user leaves the tag.
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'downgrade', dueMs: Date.UTC(2024, 11, 31) }])
    d.advanceTo(Date.UTC(2024, 11, 31))
    expect(d.changes.at(-1)).toStrictEqual(expect.objectContaining({ op: 'left', from: 'member', to: null, at: Date.UTC(2024, 11, 31) }))
  })

  it('rejects tiers out of order, duplicate tiers and an event type that both earns and refunds', () => {
    const code = (config: unknown): string | undefined => {
      try {
        createOperator(loyalty, 'l', config)
      } catch (err) {
        return isTagstreamError(err) ? err.code : 'schema'
      }
      return undefined
    }
    const tiers = (...t: Array<[string, number]>) => t.map(([name, minPoints]) => ({ name, minPoints }))
    expect(code({ tiers: tiers(['a', 10], ['b', 5]) })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ tiers: tiers(['a', 0], ['b', 0]) })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ tiers: tiers(['a', 0], ['a', 5]) })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ earnEventTypes: ['order'], refundEventTypes: ['order'] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ pointsPerUnit: 0 })).toBe('schema')
    expect(code({ tiers: [] })).toBe('schema')
    expect(code({ tiers: tiers(['a', 0.5]) })).toBe('schema')
    expect(code({ downgrade: { policy: 'rollingWindow', days: 0 } })).toBe('schema')
    expect(code({ downgrade: { policy: 'sometimes' } })).toBe('schema')
    expect(code({ tag: 'loyalty-tier' })).toBe('schema')
    expect(code({ downgrade: { policy: 'rollingWindow' } })).toBeUndefined()
    expect(code({ refundEventTypes: [] })).toBeUndefined()
  })
})
