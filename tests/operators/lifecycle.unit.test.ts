import { describe, expect, it } from 'vitest'
import lifecycle, { type LifecycleState } from '../../operators/lifecycle.js'
import { isTagstreamError } from '../../src/errors.js'
import { DAY_MS } from '../../src/operator-api.js'
import { operatorContractSuite } from './contract-suite.js'
import { createDriver, createOperator, event } from './harness.js'

const HOUR = 3_600_000
const BERLIN = 'Europe/Berlin'
/** An instant written as local time with its offset, e.g. '2024-03-02T12:00+01:00'. */
const t = (s: string): number => Date.parse(s)
const iso = (ms: number): string => new Date(ms).toISOString()

const shop = (config: unknown = {}) => createOperator(lifecycle, 'lifecycle', config)

/** The seeds' other status model: registered -> activated -> engaged -> dormant, on logins and visits. */
const USER_STATUS = {
  states: ['registered', 'activated', 'engaged', 'dormant', 'deleted'],
  initial: 'registered',
  tag: 'user_status',
  purchaseEventTypes: [],
  eventTypes: ['signup'],
  transitions: [
    { name: 'first login', from: 'registered', to: 'activated', on: { eventTypes: ['login'] } },
    { name: 'regular use', from: 'activated', to: 'engaged', on: { eventTypes: ['login', 'visit'], guard: { minEvents: 5 } } },
    {
      name: '14 days without a login or visit',
      from: ['activated', 'engaged'],
      to: 'dormant',
      after: { days: 14, since: 'lastEventOfTypes', eventTypes: ['login', 'visit'] },
    },
    { name: 'back, regular', from: 'dormant', to: 'engaged', on: { eventTypes: ['login', 'visit'], guard: { minEvents: 5 } } },
    { name: 'back', from: 'dormant', to: 'activated', on: { eventTypes: ['login', 'visit'] } },
    { name: 'account closed', from: '*', to: 'deleted', on: { eventTypes: ['account_closed'] } },
  ],
  category: ['model', 'lifecycle', 'status'],
}

operatorContractSuite(
  'lifecycle',
  () => shop(),
  () => [
    event('u1', 'view', t('2024-03-01T10:00+01:00')),
    event('u1', 'purchase', t('2024-03-02T12:00+01:00'), { amount: 30 }),
    event('u2', 'view', t('2024-03-05T09:00+01:00')),
    event('u1', 'purchase', t('2024-03-10T12:00+01:00'), { amount: 12 }),
    event('u3', 'purchase', t('2024-03-10T13:00+01:00')),
    event('u3', 'purchase', t('2024-03-10T12:30+01:00')), // late, inside the lateness
    event('u2', 'purchase', t('2024-05-01T09:00+02:00')), // u1 went silent on 9 April; u3 too
    event('u3', 'purchase', t('2024-05-02T09:00+02:00')), // reactivated
    event('u1', 'view', t('2024-09-30T09:00+02:00')), // u1 churned on 8 June
    event('u1', 'purchase', t('2024-10-27T02:30+01:00')), // reactivated, in the repeated hour
  ],
  { driver: { timeZone: BERLIN, lateness: HOUR } },
)

operatorContractSuite(
  'lifecycle (user status)',
  () => createOperator(lifecycle, 'status', USER_STATUS),
  () => [
    event('a', 'signup', t('2024-03-20T10:00+01:00')),
    event('a', 'login', t('2024-03-20T10:05+01:00')),
    event('b', 'signup', t('2024-03-21T10:00+01:00')),
    ...[22, 23, 24, 25].map((d) => event('a', 'visit', t(`2024-03-${d}T08:00+01:00`))),
    event('b', 'login', t('2024-04-20T10:00+02:00')),
    event('a', 'login', t('2024-05-01T10:00+02:00')),
    event('b', 'account_closed', t('2024-05-02T10:00+02:00')),
  ],
  { driver: { timeZone: BERLIN } },
)

describe('lifecycle operator', () => {
  it('config {} is the e-commerce lifecycle: one string tag, every event makes a user known', () => {
    const op = shop()
    expect(op.tags).toStrictEqual([
      {
        id: 'lifecycle_stage',
        description: 'Lifecycle stage: prospect, new, active, silent, churned, reactivated',
        category: ['model', 'lifecycle'],
        valueType: 'string',
      },
    ])
    expect(op.eventTypes).toBeUndefined()
    const status = createOperator(lifecycle, 'status', USER_STATUS)
    expect(status.eventTypes).toStrictEqual(['signup', 'login', 'visit', 'account_closed'])
    expect(status.tags[0]?.id).toBe('user_status')
  })

  it('given a user only browsing, then prospect with evidence; given no event, no tag', () => {
    const d = createDriver(shop(), { timeZone: BERLIN })
    expect(d.derive('u1')).toStrictEqual({})
    d.apply('u1', event('u1', 'view', t('2024-03-01T10:00+01:00')))
    d.apply('u1', event('u1', 'add_to_cart', t('2024-03-01T10:05+01:00')))
    expect(d.tags('u1')).toStrictEqual({
      lifecycle_stage: {
        value: 'prospect',
        evidence: {
          stage: 'prospect',
          previousStage: null,
          since: '2024-03-01T09:00:00.000Z',
          daysSinceLastPurchase: null,
          purchases: 0,
          rule: 'initial',
        },
      },
    })
    // Browsing after being seen changes nothing: the same state object comes back.
    expect(d.changes).toHaveLength(1)
    expect(d.timers()).toStrictEqual([])
  })

  it('new -> active -> silent -> churned at the start of local day (day + N), exact to the ms across the March DST change', () => {
    const d = createDriver(shop(), { timeZone: BERLIN })
    d.apply('u1', event('u1', 'purchase', t('2024-03-02T12:00+01:00'), {}, 'p1'))
    expect(d.tags('u1').lifecycle_stage?.evidence).toStrictEqual({
      stage: 'new',
      previousStage: 'prospect',
      since: iso(t('2024-03-02T12:00+01:00')),
      daysSinceLastPurchase: 0,
      purchases: 1,
      rule: 'first purchase',
    })
    d.apply('u1', event('u1', 'purchase', t('2024-03-10T12:00+01:00'), {}, 'p2'))

    // new for 30 days: entered on 2 March -> active from 1 April 00:00 CEST, the clocks having gone forward on 31 March.
    const active = t('2024-04-01T00:00+02:00')
    expect(active).toBe(Date.UTC(2024, 2, 31, 22))
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: active }])
    d.advanceTo(active - 1)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'new' })
    d.advanceTo(active)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'active' })

    // Last purchase 10 March: silent from 9 April 00:00 CEST (30 calendar days, one of them 23 hours long).
    const silent = t('2024-04-09T00:00+02:00')
    expect(silent - t('2024-03-10T00:00+01:00')).toBe(30 * DAY_MS - HOUR)
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: silent }])
    d.advanceTo(silent - 1)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'active' })
    d.advanceTo(silent)

    // 90 days after 10 March: churned from 8 June 00:00 CEST.
    const churned = t('2024-06-08T00:00+02:00')
    d.advanceTo(churned - 1)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'silent' })
    d.advanceTo(churned)
    expect(d.timers()).toStrictEqual([])

    expect(d.changes.map((c) => [c.op, c.from, c.to, iso(c.at), c.cause])).toStrictEqual([
      ['entered', null, 'new', '2024-03-02T11:00:00.000Z', { kind: 'event', eventId: 'p1' }],
      ['changed', 'new', 'active', '2024-03-31T22:00:00.000Z', { kind: 'timer', name: 'transition' }],
      ['changed', 'active', 'silent', '2024-04-08T22:00:00.000Z', { kind: 'timer', name: 'transition' }],
      ['changed', 'silent', 'churned', '2024-06-07T22:00:00.000Z', { kind: 'timer', name: 'transition' }],
    ])
    expect(d.changes.slice(1).map((c) => c.evidence)).toStrictEqual([
      { stage: 'active', previousStage: 'new', since: '2024-03-31T22:00:00.000Z', daysSinceLastPurchase: 22, purchases: 2, rule: 'new for 30 days' },
      { stage: 'silent', previousStage: 'active', since: '2024-04-08T22:00:00.000Z', daysSinceLastPurchase: 30, purchases: 2, rule: 'no purchase for 30 days' },
      { stage: 'churned', previousStage: 'silent', since: '2024-06-07T22:00:00.000Z', daysSinceLastPurchase: 90, purchases: 2, rule: 'no purchase for 90 days' },
    ])
  })

  it('counts local days, not UTC days or 24-hour periods, across the October DST change', () => {
    const d = createDriver(shop(), { timeZone: BERLIN })
    // 00:30 CEST on 28 September is still 27 September in UTC.
    const bought = t('2024-09-28T00:30+02:00')
    expect(bought).toBe(Date.UTC(2024, 8, 27, 22, 30))
    d.apply('u1', event('u1', 'purchase', bought))
    // 30 local days later: 28 October 00:00 CET. 27 October has 25 hours, so 30 x 24 h after local
    // midnight would be an hour early, and UTC days 23 hours early.
    const due = t('2024-10-28T00:00+01:00')
    expect(due).toBe(Date.UTC(2024, 9, 27, 23))
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: due }])
    d.advanceTo(t('2024-09-28T00:00+02:00') + 30 * DAY_MS)
    d.advanceTo(due - 1)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'new' })
    expect(d.view('u1')).toStrictEqual({
      stage: 'new',
      previousStage: 'prospect',
      since: iso(bought),
      daysInStage: 29,
      purchases: 1,
      lastPurchaseAt: iso(bought),
      daysSinceLastPurchase: 29,
      next: { stage: 'active', at: iso(due), rule: 'new for 30 days' },
    })
    // At the boundary the user is both 30 days new and 30 days without a purchase: both transitions
    // are taken at that instant, so the stage goes from new to silent (through active) in one change.
    d.advanceTo(due)
    expect(d.changes.at(-1)).toStrictEqual({
      userId: 'u1',
      tag: 'lifecycle_stage',
      op: 'changed',
      from: 'new',
      to: 'silent',
      at: due,
      cause: { kind: 'timer', name: 'transition' },
      evidence: { stage: 'silent', previousStage: 'active', since: iso(due), daysSinceLastPurchase: 30, purchases: 1, rule: 'no purchase for 30 days' },
    })
    // Churned 90 local days after 28 September: 27 December 00:00 CET.
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: t('2024-12-27T00:00+01:00') }])
  })

  it('a boundary on the DST day itself: 27 October starts at 00:00 CEST', () => {
    const d = createDriver(shop(), { timeZone: BERLIN })
    d.apply('u1', event('u1', 'purchase', t('2024-09-27T23:59:59.999+02:00')))
    const due = t('2024-10-27T00:00+02:00')
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: due }])
    d.advanceTo(due - 1)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'new' })
    d.advanceTo(due)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'silent' })
  })

  it('a purchase while silent or churned reactivates; 30 days after reactivation the customer is active again', () => {
    const d = createDriver(shop(), { timeZone: BERLIN })
    d.apply('u1', event('u1', 'purchase', t('2024-01-10T12:00+01:00')))
    d.advanceTo(t('2024-02-09T00:00+01:00'))
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'silent' })

    d.apply('u1', event('u1', 'purchase', t('2024-02-20T18:00+01:00'), {}, 'back'))
    expect(d.tags('u1').lifecycle_stage).toStrictEqual({
      value: 'reactivated',
      evidence: {
        stage: 'reactivated',
        previousStage: 'silent',
        since: iso(t('2024-02-20T18:00+01:00')),
        daysSinceLastPurchase: 0,
        purchases: 2,
        rule: 'purchase after silence',
      },
    })
    // Another purchase while reactivated changes the stage's counters, not the stage or its 30 days.
    d.apply('u1', event('u1', 'purchase', t('2024-03-05T10:00+01:00')))
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'reactivated' })
    const active = t('2024-03-21T00:00+01:00') // 20 February + 30 days
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: active }])
    d.advanceTo(active)
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'active' })
    // Silent 30 days after 5 March, churned 90 days after it.
    d.advanceTo(t('2024-06-03T00:00+02:00'))
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'churned' })
    d.apply('u1', event('u1', 'purchase', t('2024-07-01T12:00+02:00')))
    expect(d.tags('u1').lifecycle_stage?.evidence).toStrictEqual(
      expect.objectContaining({ stage: 'reactivated', previousStage: 'churned', purchases: 4 }),
    )
    expect(d.changes.map((c) => [c.to, iso(c.at)])).toStrictEqual([
      ['new', '2024-01-10T11:00:00.000Z'],
      ['silent', '2024-02-08T23:00:00.000Z'],
      ['reactivated', '2024-02-20T17:00:00.000Z'],
      ['active', '2024-03-20T23:00:00.000Z'],
      ['silent', '2024-04-03T22:00:00.000Z'],
      ['churned', '2024-06-02T22:00:00.000Z'],
      ['reactivated', '2024-07-01T10:00:00.000Z'],
    ])
  })

  it('a purchase ahead of the watermark is applied at its own time: the silence it ends is not missed', () => {
    const d = createDriver(shop(), { timeZone: BERLIN, lateness: 2 * DAY_MS })
    d.apply('u1', event('u1', 'purchase', t('2024-01-10T12:00+01:00')))
    d.apply('u1', event('u1', 'purchase', t('2024-01-11T12:00+01:00')))
    // Active from 9 February 00:00, silent from 10 February 00:00. This purchase at 10 February 12:00
    // arrives while the clock is at 8 February 12:00: both transitions are taken at their own times first.
    d.apply('u1', event('u1', 'purchase', t('2024-02-10T12:00+01:00'), {}, 'ahead'))
    expect(d.clock).toBe(t('2024-02-08T12:00+01:00'))
    expect(d.changes.at(-1)).toStrictEqual(
      expect.objectContaining({
        from: 'new',
        to: 'reactivated',
        at: t('2024-02-10T12:00+01:00'),
        cause: { kind: 'event', eventId: 'ahead' },
        evidence: expect.objectContaining({ previousStage: 'silent', purchases: 3, rule: 'purchase after silence' }),
      }),
    )
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: t('2024-03-11T00:00+01:00') }])
  })

  it('a purchase behind the clock counts and moves the last purchase only forward', () => {
    const d = createDriver(shop(), { timeZone: BERLIN })
    d.apply('u1', event('u1', 'purchase', t('2024-05-10T12:00+02:00')))
    d.apply('u1', event('u1', 'purchase', t('2024-05-01T12:00+02:00'))) // late
    const s: LifecycleState = d.state('u1')
    expect(s).toStrictEqual({
      stage: 'new',
      since: t('2024-05-10T12:00+02:00'),
      previous: 'prospect',
      rule: 'first purchase',
      purchases: 2,
      lastPurchaseTs: t('2024-05-10T12:00+02:00'),
      lastEventTs: null,
      types: {},
    })
  })

  it('the default transitions follow purchaseEventTypes', () => {
    const d = createDriver(shop({ purchaseEventTypes: ['order_paid'] }), { timeZone: BERLIN })
    d.apply('u1', event('u1', 'purchase', t('2024-05-01T12:00+02:00')))
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'prospect' })
    d.apply('u1', event('u1', 'order_paid', t('2024-05-02T12:00+02:00')))
    expect(d.tagValues('u1')).toStrictEqual({ lifecycle_stage: 'new' })
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: t('2024-06-01T00:00+02:00') }])
  })

  it('guards: the first event transition out of the stage whose types and guard hold is taken', () => {
    const op = createOperator(lifecycle, 'tiers', {
      states: ['visitor', 'buyer', 'repeat', 'vip'],
      initial: 'visitor',
      tag: 'buyer_stage',
      transitions: [
        { from: 'visitor', to: 'buyer', on: { guard: { firstPurchase: true } } },
        { from: ['buyer', 'repeat'], to: 'vip', on: { guard: { minPurchases: 5 } } },
        { from: 'buyer', to: 'repeat', on: { guard: { firstPurchase: false, maxPurchases: 4 } } },
      ],
    })
    const d = createDriver(op)
    const seen: unknown[] = []
    for (let i = 0; i < 6; i++) {
      d.apply('u1', event('u1', 'purchase', Date.UTC(2024, 0, 1 + i)))
      seen.push(d.tagValues('u1').buyer_stage)
    }
    expect(seen).toStrictEqual(['buyer', 'repeat', 'repeat', 'repeat', 'vip', 'vip'])
    expect(d.changes.map((c) => c.evidence.rule)).toStrictEqual([
      'visitor -> buyer on purchase if firstPurchase: true',
      'buyer -> repeat on purchase if firstPurchase: false, maxPurchases: 4',
      'buyer|repeat -> vip on purchase if minPurchases: 5',
    ])
    // No time transitions: no timers.
    expect(d.timers()).toStrictEqual([])
  })

  it('is the seeds\' user status model with another config: registered -> activated -> engaged -> dormant', () => {
    const d = createDriver(createOperator(lifecycle, 'status', USER_STATUS), { timeZone: BERLIN })
    d.apply('a', event('a', 'signup', t('2024-03-20T10:00+01:00')))
    expect(d.tagValues('a')).toStrictEqual({ user_status: 'registered' })
    d.apply('a', event('a', 'visit', t('2024-03-20T10:01+01:00')))
    expect(d.tagValues('a')).toStrictEqual({ user_status: 'registered' }) // only a login activates
    d.apply('a', event('a', 'login', t('2024-03-20T10:05+01:00')))
    expect(d.tagValues('a')).toStrictEqual({ user_status: 'activated' })
    for (const day of [21, 22, 23]) d.apply('a', event('a', 'visit', t(`2024-03-${day}T08:00+01:00`)))
    expect(d.tagValues('a')).toStrictEqual({ user_status: 'engaged' }) // 5 logins and visits
    expect(d.state('a').types).toStrictEqual({ visit: [4, t('2024-03-23T08:00+01:00')], login: [1, t('2024-03-20T10:05+01:00')] })

    // Dormant 14 local days after the last visit (23 March): 6 April 00:00 CEST, after the spring change.
    const dormant = t('2024-04-06T00:00+02:00')
    expect(d.timers('a')).toStrictEqual([{ userId: 'a', name: 'transition', dueMs: dormant }])
    d.advanceTo(dormant - 1)
    expect(d.tagValues('a')).toStrictEqual({ user_status: 'engaged' })
    d.advanceTo(dormant)
    expect(d.tags('a').user_status).toStrictEqual({
      value: 'dormant',
      evidence: {
        stage: 'dormant',
        previousStage: 'engaged',
        since: iso(dormant),
        daysSinceLastPurchase: null,
        purchases: 0,
        rule: '14 days without a login or visit',
      },
    })
    // Back with 5+ logins and visits: engaged again; a closed account from any stage.
    d.apply('a', event('a', 'login', t('2024-04-10T09:00+02:00')))
    expect(d.tagValues('a')).toStrictEqual({ user_status: 'engaged' })
    d.apply('a', event('a', 'account_closed', t('2024-04-11T09:00+02:00')))
    expect(d.tagValues('a')).toStrictEqual({ user_status: 'deleted' })
    expect(d.timers('a')).toStrictEqual([])

    // A newcomer with one login who stays away comes back activated, not engaged.
    d.apply('b', event('b', 'login', t('2024-04-11T10:00+02:00')))
    expect(d.tagValues('b')).toStrictEqual({ user_status: 'activated' })
    d.advanceTo(t('2024-04-25T00:00+02:00'))
    expect(d.tagValues('b')).toStrictEqual({ user_status: 'dormant' })
    d.apply('b', event('b', 'visit', t('2024-05-01T10:00+02:00')))
    expect(d.tags('b').user_status?.evidence).toStrictEqual(expect.objectContaining({ stage: 'activated', previousStage: 'dormant', rule: 'back' }))
  })

  it('since: lastEvent counts from any observed event', () => {
    const op = createOperator(lifecycle, 'presence', {
      states: ['present', 'away'],
      initial: 'present',
      tag: 'presence',
      transitions: [
        { from: 'present', to: 'away', after: { days: 3, since: 'lastEvent' } },
        { from: 'away', to: 'present', on: { eventTypes: ['view'] } },
      ],
    })
    const d = createDriver(op, { timeZone: BERLIN })
    d.apply('u1', event('u1', 'view', t('2024-03-29T23:30+01:00')))
    d.apply('u1', event('u1', 'search', t('2024-03-30T08:00+01:00')))
    const away = t('2024-04-02T00:00+02:00')
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: away }])
    d.advanceTo(away)
    expect(d.tagValues('u1')).toStrictEqual({ presence: 'away' })
    d.apply('u1', event('u1', 'search', t('2024-04-03T08:00+02:00')))
    expect(d.tagValues('u1')).toStrictEqual({ presence: 'away' }) // only a view brings the user back
    d.apply('u1', event('u1', 'view', t('2024-04-03T09:00+02:00')))
    expect(d.tagValues('u1')).toStrictEqual({ presence: 'present' })
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: 'transition', dueMs: t('2024-04-06T00:00+02:00') }])
  })

  it('rejects configs that name unknown stages, misplace options or loop in time', () => {
    const code = (config: unknown): string | undefined => {
      try {
        createOperator(lifecycle, 'l', config)
      } catch (err) {
        return isTagstreamError(err) ? err.code : 'schema'
      }
      return undefined
    }
    const states = ['a', 'b']
    const on = { eventTypes: ['x'] }
    expect(code({ states, initial: 'c', transitions: [] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ states: ['a', 'a'], initial: 'a', transitions: [] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ states: ['a', '*'], initial: 'a', transitions: [] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ states, initial: 'a', transitions: [{ from: 'a', to: 'z', on }] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ states, initial: 'a', transitions: [{ from: ['a', 'z'], to: 'b', on }] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ states, initial: 'a', transitions: [{ from: ['*', 'a'], to: 'b', on }] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    // The default transitions name the default stages.
    expect(code({ states })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ states, initial: 'a', transitions: [{ from: 'a', to: 'b', after: { days: 3, since: 'enteredState', eventTypes: ['x'] } }] })).toBe(
      'TS_ERR_OPERATOR_CONFIG_INVALID',
    )
    expect(code({ states, initial: 'a', purchaseEventTypes: [], transitions: [{ from: 'a', to: 'b', on: {} }] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    // a -> b -> a, each 3 days after the last event: would flip forever at one instant.
    const after = { days: 3, since: 'lastEvent' }
    expect(code({ states, initial: 'a', transitions: [{ from: 'a', to: 'b', after }, { from: 'b', to: 'a', after }] })).toBe(
      'TS_ERR_OPERATOR_CONFIG_INVALID',
    )
    expect(code({ states, initial: 'a', transitions: [{ from: 'a', to: 'a', after }] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    // Schema errors.
    expect(code({ transitions: [{ from: 'prospect', to: 'new' }] })).toBe('schema')
    expect(code({ transitions: [{ from: 'prospect', to: 'new', after: { days: 0, since: 'lastEvent' } }] })).toBe('schema')
    expect(code({ transitions: [{ from: 'prospect', to: 'new', on: { guard: { minPurchases: -1 } } }] })).toBe('schema')
    expect(code({ tag: 'lifecycle stage' })).toBe('schema')
    // Accepted: a cycle where every step waits since entering its stage.
    const entered = { days: 7, since: 'enteredState' }
    expect(code({ states, initial: 'a', transitions: [{ from: 'a', to: 'b', after: entered }, { from: '*', to: 'a', after: entered }] })).toBeUndefined()
    expect(code({})).toBeUndefined()
  })

  it('a cycle through enteredState alternates once per period, settled up to the clock', () => {
    const entered = { days: 7, since: 'enteredState' }
    const op = createOperator(lifecycle, 'weeks', {
      states: ['odd', 'even'],
      initial: 'odd',
      tag: 'week_parity',
      transitions: [
        { from: 'odd', to: 'even', after: entered },
        { from: 'even', to: 'odd', after: entered },
      ],
    })
    const d = createDriver(op)
    d.apply('u1', event('u1', 'view', Date.UTC(2024, 0, 1, 12)))
    // Derived at any later instant without firing: a projection of the pending transitions.
    expect(d.derive('u1', Date.UTC(2024, 0, 15) - 1).week_parity?.value).toBe('even')
    expect(d.derive('u1', Date.UTC(2024, 0, 15)).week_parity?.value).toBe('odd')
    d.advanceTo(Date.UTC(2024, 1, 1))
    expect(d.changes.map((c) => [c.to, iso(c.at)])).toStrictEqual([
      ['odd', '2024-01-01T12:00:00.000Z'],
      ['even', '2024-01-08T00:00:00.000Z'],
      ['odd', '2024-01-15T00:00:00.000Z'],
      ['even', '2024-01-22T00:00:00.000Z'],
      ['odd', '2024-01-29T00:00:00.000Z'],
    ])
  })
})
