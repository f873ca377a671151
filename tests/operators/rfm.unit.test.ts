import { Value } from '@sinclair/typebox/value'
import { describe, expect, it } from 'vitest'
import rfm, { DEFAULT_SEGMENT_MAP, EXPIRE_TIMER, type RfmConfig, type RfmState } from '../../operators/rfm.js'
import { isTagstreamError } from '../../src/errors.js'
import { DAY_MS, type InputEvent, type OperatorContext } from '../../src/operator-api.js'
import { operatorContractSuite } from './contract-suite.js'
import { createDriver, createOperator, event, type Driver } from './harness.js'

const HOUR = 3_600_000
/** Day index of 2024-03-01 (UTC). */
const D = Date.UTC(2024, 2, 1) / DAY_MS
const at = (day: number, hours = 0): number => day * DAY_MS + hours * HOUR
const iso = (ms: number): string => new Date(ms).toISOString()

const makeOperator = (config: Record<string, unknown> = {}) => createOperator(rfm, 'rfm', config)
const buy = (userId: string, ts: number, amount?: number, eventId?: string) =>
  event(userId, 'purchase', ts, amount === undefined ? {} : { amount }, eventId ?? `${userId}:p:${ts}:${amount}`)
const refund = (userId: string, ts: number, amount: number) => event(userId, 'refund', ts, { amount }, `${userId}:r:${ts}:${amount}`)

function contractEvents(): InputEvent[] {
  return [
    buy('u1', at(D, 9), 120),
    buy('u2', at(D, 10), 40),
    buy('u3', at(D, 11), 15.5),
    buy('u1', at(D + 1, 9), 80),
    event('u1', 'view', at(D + 1, 10)),
    refund('u2', at(D + 2, 9), 10),
    buy('u4', at(D + 2, 23), 300),
    buy('u2', at(D + 1, 23), 25), // late, inside the windows
    buy('u3', at(D + 40, 8), -5), // a negative purchase is a refund
    buy('u5', at(D + 41, 8), 60),
    buy('u2', at(D + 70, 12), 30),
    buy('u1', at(D + 30, 6), 10), // late, inside the longest window
    refund('u6', at(D + 95, 1), 20), // a refund without purchases: not scored
    buy('u4', at(D + 100, 0), 5),
    buy('u5', at(D + 100, 1)), // no amount: counts with 0
  ]
}

operatorContractSuite('rfm', () => makeOperator(), contractEvents, {
  driver: { timeZone: 'Europe/Berlin', lateness: 2 * HOUR },
  // Scores and segments move when *other* users' values move the population: the engine's
  // re-scoring sweep (rescore: true) re-derives them, not timers. Tag values never depend on the
  // clock (tested below), and after settling every user has re-derived on the final population.
  exactBetweenCalls: false,
})

/** `d.view(u)` for the RFM part that the population decides. */
function scoresOf(d: Driver<RfmState>, userId: string): unknown {
  const v = d.view(userId)
  return { scores: v.scores, cell: v.cell, segment: v.segment, valueSegment: v.valueSegment }
}

describe('rfm operator', () => {
  it('declares its tags, population and dispatch, with the defaults', () => {
    const op = makeOperator()
    expect(op.tags.map((t) => [t.id, t.category, t.valueType])).toStrictEqual([
      ['rfm_score', ['model', 'rfm'], 'string'],
      ['rfm_segment', ['model', 'rfm'], 'string'],
      ['rfm_value_segment', ['model', 'rfm'], 'string'],
    ])
    expect(op.eventTypes).toStrictEqual(['purchase', 'refund'])
    expect(op.population).toStrictEqual(['recency', 'frequency', 'monetary'])
    expect(op.rescore).toBe(true)
    const custom = makeOperator({
      purchaseEventTypes: ['order'],
      refundEventTypes: [],
      scoreTag: 'cell',
      segmentTag: 'segment',
      valueSegmentTag: 'value',
      category: ['a', 'b', 'c'],
    })
    expect(custom.tags.map((t) => t.id)).toStrictEqual(['cell', 'segment', 'value'])
    expect(custom.eventTypes).toStrictEqual(['order'])
  })

  it('ships the 11-segment map for all 125 cells', () => {
    const cells = Object.keys(DEFAULT_SEGMENT_MAP)
    expect(cells.length).toBe(125)
    expect(new Set(cells).size).toBe(125)
    for (const c of cells) expect(c).toMatch(/^[1-5],[1-5],[1-5]$/)
    const bySegment: Record<string, number> = {}
    for (const s of Object.values(DEFAULT_SEGMENT_MAP)) bySegment[s] = (bySegment[s] ?? 0) + 1
    expect(bySegment).toStrictEqual({
      Champions: 7,
      Loyal: 8,
      'Potential Loyalists': 24,
      'New Customers': 7,
      Promising: 16,
      'Need Attention': 8,
      'About to Sleep': 5,
      'At Risk': 22,
      'Cannot Lose Them': 8,
      Hibernating: 14,
      Lost: 6,
    })
    // The 12 cells the Online Retail reference does not contain (its 113 are checked end to end).
    const filled = ['1,4,1', '1,5,1', '1,5,2', '2,5,1', '2,5,2', '3,5,1', '3,5,2', '4,3,1', '4,4,1', '4,5,1', '4,5,2', '5,5,2']
    expect(filled.map((c) => DEFAULT_SEGMENT_MAP[c])).toStrictEqual([
      'Lost',
      'Lost',
      'At Risk',
      'Hibernating',
      'At Risk',
      'Potential Loyalists',
      'Potential Loyalists',
      'Potential Loyalists',
      'Potential Loyalists',
      'Potential Loyalists',
      'Potential Loyalists',
      'Potential Loyalists',
    ])
    expect(makeOperator().tags[1]?.description).toContain('Champions, Loyal, Potential Loyalists')
  })

  it('a lone user (maxRank 1) scores 3,3,3 and sits at the mean in every dimension', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', buy('u1', at(D, 9), 50, 'e1'))
    const evidence = { recencyDays: 0, frequency: 1, monetary: 50, r: 3, f: 3, m: 3 }
    expect(d.tags('u1')).toStrictEqual({
      rfm_score: { value: '3,3,3', evidence },
      rfm_segment: { value: 'Potential Loyalists', evidence: { ...evidence, cell: '3,3,3' } },
      rfm_value_segment: {
        value: 'general_win_back',
        evidence: { ...evidence, meanRecencyDays: 0, meanFrequency: 1, meanMonetary: 50 },
      },
    })
    expect(d.changes.map((c) => [c.tag, c.op, c.to, c.at, c.cause])).toStrictEqual([
      ['rfm_score', 'entered', '3,3,3', at(D, 9), { kind: 'event', eventId: 'e1' }],
      ['rfm_segment', 'entered', 'Potential Loyalists', at(D, 9), { kind: 'event', eventId: 'e1' }],
      ['rfm_value_segment', 'entered', 'general_win_back', at(D, 9), { kind: 'event', eventId: 'e1' }],
    ])
    // A second user tied in all three values: still maxRank 1.
    d.apply('u2', buy('u2', at(D, 10), 50))
    expect(scoresOf(d, 'u1')).toStrictEqual({ scores: { r: 3, f: 3, m: 3 }, cell: '3,3,3', segment: 'Potential Loyalists', valueSegment: 'general_win_back' })
    expect(scoresOf(d, 'u2')).toStrictEqual(scoresOf(d, 'u1'))
  })

  it('scores quintiles of min ranks with ties, recency reversed, and the 8-segment pattern against the means', () => {
    const d = createDriver(makeOperator())
    d.applyAll([
      buy('u1', at(D, 1), 10),
      buy('u2', at(D, 2), 10),
      buy('u3', at(D, 3), 5),
      buy('u6', at(D, 4), 1),
      buy('u3', at(D + 1, 1), 15),
      buy('u4', at(D + 1, 2), 10),
      buy('u6', at(D + 1, 3), 1),
      buy('u4', at(D + 2, 1), 10),
      buy('u5', at(D + 2, 2), 100),
      buy('u6', at(D + 2, 3), 1),
      buy('u4', at(D + 3, 1), 10),
      buy('u5', at(D + 3, 2), 50),
      buy('u5', at(D + 3, 3), 50),
      buy('u6', at(D + 3, 4), 1),
      buy('u6', at(D + 4, 1), 1),
    ])
    // Last purchase days D, D, D+1, D+3, D+3, D+4: recency min ranks (most recent first) 5, 5, 4, 2, 2, 1 of 5.
    // Frequencies 1, 1, 2, 3, 3, 5: ranks 1, 1, 3, 4, 4, 6 of 6. Monetary 10, 10, 20, 30, 200, 5: ranks 2, 2, 4, 5, 6, 1 of 6.
    // Means: last day D + 11/6, frequency 2.5, monetary 275/6.
    const expected: Record<string, unknown> = {
      u1: { scores: { r: 1, f: 1, m: 1 }, cell: '1,1,1', segment: 'Lost', valueSegment: 'general_win_back' },
      u2: { scores: { r: 1, f: 1, m: 1 }, cell: '1,1,1', segment: 'Lost', valueSegment: 'general_win_back' },
      u3: { scores: { r: 2, f: 2, m: 3 }, cell: '2,2,3', segment: 'Hibernating', valueSegment: 'general_win_back' },
      u4: { scores: { r: 4, f: 3, m: 4 }, cell: '4,3,4', segment: 'Need Attention', valueSegment: 'general_value' },
      u5: { scores: { r: 4, f: 3, m: 5 }, cell: '4,3,5', segment: 'Loyal', valueSegment: 'important_value' },
      u6: { scores: { r: 5, f: 5, m: 1 }, cell: '5,5,1', segment: 'Potential Loyalists', valueSegment: 'general_value' },
    }
    for (const [u, want] of Object.entries(expected)) expect(scoresOf(d, u), u).toStrictEqual(want)
    // The last user to change derived its tags on the whole population, with the evidence behind them.
    expect(d.tags('u6').rfm_value_segment).toStrictEqual({
      value: 'general_value',
      evidence: {
        recencyDays: 0,
        frequency: 5,
        monetary: 5,
        r: 5,
        f: 5,
        m: 1,
        meanRecencyDays: expect.closeTo(4 - 11 / 6, 9),
        meanFrequency: 2.5,
        meanMonetary: 275 / 6,
      },
    })
    expect(d.view('u6', at(D + 10))).toStrictEqual(expect.objectContaining({ recencyDays: 6, frequency: 5, monetary: 5, cell: '5,5,1' }))
  })

  it('ranks recency as the reference does: ascending recency with min ranks, labels reversed', () => {
    // Last purchases on D, D, D+1, D+2. Recency ranks (most recent first, ties share the lowest):
    // D+2 -> 1, D+1 -> 2, D -> 3 of maxRank 3, so D+1 scores 6 - ceil(5 * 1 / 2) = 3. Ranking the
    // day index upwards instead (D -> 1, D+1 -> 3, D+2 -> 4 of 4) would give it ceil(5 * 2 / 3) = 4.
    const d = createDriver(makeOperator())
    d.applyAll([buy('a', at(D), 1), buy('b', at(D), 1), buy('c', at(D + 1), 1), buy('e', at(D + 2), 1)])
    expect(['a', 'b', 'c', 'e'].map((u) => (d.view(u).scores as { r: number }).r)).toStrictEqual([1, 1, 3, 5])
    expect(d.operator.scoredValues!(d.state('c'))).toStrictEqual({ recency: -(D + 1), frequency: 1, monetary: 1 })
  })

  it('8-segment model: every pattern gets its configured label', () => {
    const labels = { HHH: 'hhh', HLH: 'hlh', LHH: 'lhh', LLH: 'llh', HHL: 'hhl', HLL: 'hll', LHL: 'lhl', LLL: 'lll' }
    const d = createDriver(makeOperator({ segments8: { labels } }))
    // R high: last purchase on D+10 (mean D+5); F high: 3 purchases (mean 2); M high: 1000 in total (mean 505).
    for (const pattern of Object.keys(labels)) {
      const [r, f, m] = pattern
      const purchases = f === 'H' ? 3 : 1
      for (let i = 0; i < purchases; i++) {
        d.apply(pattern, buy(pattern, at(r === 'H' ? D + 10 : D, i), (m === 'H' ? 1000 : 10) / purchases, `${pattern}.${i}`))
      }
    }
    for (const [pattern, name] of Object.entries(labels)) expect(d.view(pattern).valueSegment, pattern).toBe(name)
    // Defaults, and partial overrides keep the other defaults.
    const partial = createDriver(makeOperator({ segments8: { labels: { LLL: 'sleepers' } } }))
    partial.apply('x', buy('x', at(D), 1))
    expect(partial.tagValues('x').rfm_value_segment).toBe('sleepers')
  })

  it('tag values follow the population, not the clock; held tags move with the user or the sweep', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', buy('u1', at(D), 100))
    d.apply('u2', buy('u2', at(D + 1), 10))
    expect(d.tagValues('u1')).toStrictEqual({ rfm_score: '3,3,3', rfm_segment: 'Potential Loyalists', rfm_value_segment: 'general_win_back' })
    // u2's purchase moved the population: derived now, u1 is the less recent, bigger spender.
    expect(d.derive('u1').rfm_score?.value).toBe('1,3,5')
    expect(d.derive('u2').rfm_score?.value).toBe('5,3,1')
    // The same a year later: only the evidence's recencyDays moves with the clock.
    const later = d.derive('u1', at(D + 365))
    expect(later.rfm_score).toStrictEqual({ value: '1,3,5', evidence: { recencyDays: 365, frequency: 1, monetary: 100, r: 1, f: 3, m: 5 } })
    // The held tag of u1 changes at its next own call (or the engine's re-scoring sweep).
    d.apply('u1', buy('u1', at(D + 2), 0))
    expect(d.tagValues('u1').rfm_score).toBe('5,5,5')
  })

  it('refunds subtract from monetary and the day they happen; they never count as purchases', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', buy('u1', at(D, 9), 100))
    d.apply('u1', refund('u1', at(D + 1, 9), 30))
    d.apply('u1', refund('u1', at(D + 2, 9), -20)) // the sign of a refund's amount does not matter
    d.apply('u1', buy('u1', at(D + 3, 9), -5)) // a negative purchase is a refund
    expect(d.state('u1')).toStrictEqual({
      lastPurchaseTs: at(D, 9),
      lastPurchaseDay: D,
      frequency: 1,
      monetary: 45,
      days: [
        [D, 1, 100],
        [D + 1, 0, -30],
        [D + 2, 0, -20],
        [D + 3, 0, -5],
      ],
      windows: [
        [1, 45],
        [1, 45],
        [1, 45],
      ],
    })
    expect(d.view('u1')).toStrictEqual(expect.objectContaining({ recencyDays: 3, frequency: 1, monetary: 45, lastPurchaseAt: iso(at(D, 9)) }))
    // 30 days after the purchase's day it leaves the 30-day window; the refunds are still inside.
    expect(d.view('u1', at(D + 30))).toStrictEqual(expect.objectContaining({ frequency30d: 0, monetary30d: -55, frequency90d: 1, monetary90d: 45 }))
    // A user with refunds only is not scored, and has no tags.
    d.apply('u2', refund('u2', at(D + 3, 10), 12))
    expect(d.operator.scoredValues!(d.state('u2'))).toStrictEqual({})
    expect(d.tagValues('u2')).toStrictEqual({})
    expect(d.view('u2')).toStrictEqual({
      lastPurchaseAt: null,
      recencyDays: null,
      frequency: 0,
      monetary: -12,
      frequency30d: 0,
      monetary30d: -12,
      frequency90d: 0,
      monetary90d: -12,
      frequency365d: 0,
      monetary365d: -12,
      scores: null,
      cell: null,
      segment: null,
      valueSegment: null,
    })
    expect(d.populations.get('rfm', 'frequency').count).toBe(1)
  })

  it('amounts: a purchase without one counts with 0; a refund without one, or a non-number, is an error', () => {
    const op = makeOperator()
    const d = createDriver(op)
    d.apply('u1', buy('u1', at(D)))
    expect(d.state('u1')).toStrictEqual(expect.objectContaining({ frequency: 1, monetary: 0 }))
    const ctx = { now: at(D, 1), timeZone: 'UTC', userId: 'u1', setTimer() {}, deleteTimer() {}, timer: () => undefined } as unknown as OperatorContext
    const s = d.state('u1')
    expect(() => op.onEvent(s, event('u1', 'refund', at(D, 1)), ctx)).toThrow('refund event')
    expect(() => op.onEvent(s, event('u1', 'purchase', at(D, 1), { amount: '12.5' }), ctx)).toThrow('must be a finite number')
    expect(() => op.onEvent(s, event('u1', 'purchase', at(D, 1), { amount: 1e308 }), ctx)).not.toThrow()
    const big = op.onEvent(s, event('u1', 'purchase', at(D, 1), { amount: 1e308 }), ctx)
    expect(() => op.onEvent(big, event('u1', 'purchase', at(D, 2), { amount: 1e308 }), ctx)).toThrow('overflow')
    // Other event types leave the state alone, even called directly.
    expect(op.onEvent(s, event('u1', 'view', at(D, 1), { amount: 5 }), ctx)).toBe(s)
    // -0 amounts keep the state plain data.
    const z = op.onEvent(op.initialState(), event('u1', 'purchase', at(D, 1), { amount: -0 }), ctx)
    expect(Object.is(z.monetary, 0) && Object.is(z.days[0]?.[2], 0)).toBe(true)
  })

  it('minPurchasesToScore: users below it are not scored and not in the population', () => {
    const d = createDriver(makeOperator({ minPurchasesToScore: 2 }))
    d.apply('u1', buy('u1', at(D), 10))
    d.apply('u2', buy('u2', at(D), 10))
    expect(d.tagValues('u1')).toStrictEqual({})
    expect(d.populations.get('rfm', 'monetary').count).toBe(0)
    d.apply('u1', buy('u1', at(D + 1), 10))
    expect(d.tagValues('u1')).toStrictEqual({ rfm_score: '3,3,3', rfm_segment: 'Potential Loyalists', rfm_value_segment: 'general_win_back' })
    expect(d.populations.get('rfm', 'monetary').count).toBe(1)
  })

  it('windows hold a day until the start of day + N, and the timer moves from window to window', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', buy('u1', at(D, 23.5), 10))
    d.apply('u1', buy('u1', at(D + 5, 1), 20))
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: EXPIRE_TIMER, dueMs: at(D + 30) }])
    const windowed = (ms: number) => {
      const v = d.view('u1', ms)
      return [v.frequency30d, v.monetary30d, v.frequency90d, v.monetary90d, v.frequency365d, v.monetary365d]
    }
    expect(windowed(at(D + 30) - 1)).toStrictEqual([2, 30, 2, 30, 2, 30])
    expect(windowed(at(D + 30))).toStrictEqual([1, 20, 2, 30, 2, 30])

    d.advanceTo(at(D + 30) - 1)
    expect(d.state('u1').windows).toStrictEqual([
      [2, 30],
      [2, 30],
      [2, 30],
    ])
    d.advanceTo(at(D + 30))
    // The state changed at the boundary (so rules over the windows re-evaluate then); the tags did not.
    expect(d.state('u1').windows).toStrictEqual([
      [1, 20],
      [2, 30],
      [2, 30],
    ])
    expect(d.changes.length).toBe(3)
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: EXPIRE_TIMER, dueMs: at(D + 35) }])
    d.advanceTo(at(D + 35))
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: EXPIRE_TIMER, dueMs: at(D + 90) }])
    d.advanceTo(at(D + 95))
    expect(d.state('u1').windows).toStrictEqual([
      [0, 0],
      [0, 0],
      [2, 30],
    ])
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: EXPIRE_TIMER, dueMs: at(D + 365) }])
    d.advanceTo(at(D + 370))
    expect(d.state('u1')).toStrictEqual({
      lastPurchaseTs: at(D + 5, 1),
      lastPurchaseDay: D + 5,
      frequency: 2,
      monetary: 30,
      days: [],
      windows: [
        [0, 0],
        [0, 0],
        [0, 0],
      ],
    })
    expect(d.timers()).toStrictEqual([])
    expect(d.tagValues('u1')).toStrictEqual({ rfm_score: '3,3,3', rfm_segment: 'Potential Loyalists', rfm_value_segment: 'general_win_back' })
    expect(d.view('u1')).toStrictEqual(
      expect.objectContaining({ recencyDays: 365, frequency: 2, monetary: 30, frequency365d: 0, monetary365d: 0, lastPurchaseAt: iso(at(D + 5, 1)) }),
    )
  })

  it('local days in Europe/Berlin: buckets, recency and expiry across both DST changes', () => {
    const zone = 'Europe/Berlin'
    const d = createDriver(makeOperator(), { timeZone: zone })
    // 2024-03-02T23:30Z is 00:30 on 3 March in Berlin (CET, +1): that local day, not 2 March.
    const t1 = Date.UTC(2024, 2, 2, 23, 30)
    d.apply('u1', buy('u1', t1, 10))
    const march3 = Date.UTC(2024, 2, 3) / DAY_MS
    expect(d.state('u1').days).toStrictEqual([[march3, 1, 10]])
    expect(d.state('u1').lastPurchaseDay).toBe(march3)
    // 30 local days later is 2 April, which starts at 22:00Z on 1 April (CEST, +2, since 31 March).
    const expiry = Date.UTC(2024, 3, 1, 22)
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: EXPIRE_TIMER, dueMs: expiry }])
    expect(d.view('u1', expiry - 1)).toStrictEqual(expect.objectContaining({ frequency30d: 1, monetary30d: 10, recencyDays: 29 }))
    expect(d.view('u1', expiry)).toStrictEqual(expect.objectContaining({ frequency30d: 0, monetary30d: 0, frequency90d: 1, recencyDays: 30 }))
    d.advanceTo(expiry - 1)
    expect(d.state('u1').windows[0]).toStrictEqual([1, 10])
    d.advanceTo(expiry)
    expect(d.state('u1').windows[0]).toStrictEqual([0, 0])

    // Recency counts calendar days: Saturday 30 March 23:30 local to Monday 1 April 00:30 local is
    // 2 days, though the 31st has 23 hours and only 24 hours pass.
    const e = createDriver(makeOperator(), { timeZone: zone })
    const sat = Date.UTC(2024, 2, 30, 22, 30) // 23:30 CET
    e.apply('u2', buy('u2', sat, 5))
    const mon = Date.UTC(2024, 2, 31, 22, 30) // 00:30 CEST on 1 April
    expect(mon - sat).toBe(24 * HOUR)
    expect(e.view('u2', mon).recencyDays).toBe(2)
    // And the 30-day window of 30 March ends at the start of 29 April (22:00Z on the 28th).
    expect(e.timers()).toStrictEqual([{ userId: 'u2', name: EXPIRE_TIMER, dueMs: Date.UTC(2024, 3, 28, 22) }])

    // Autumn: 28 September (CEST) + 30 local days is 28 October, which starts at 23:00Z on the
    // 27th (CET again since 27 October 03:00 local, a 25-hour day).
    const f = createDriver(makeOperator(), { timeZone: zone })
    f.apply('u3', buy('u3', Date.UTC(2024, 8, 28, 10), 5))
    expect(f.timers()).toStrictEqual([{ userId: 'u3', name: EXPIRE_TIMER, dueMs: Date.UTC(2024, 9, 27, 23) }])
    expect(f.view('u3', Date.UTC(2024, 9, 27, 23) - 1)).toStrictEqual(expect.objectContaining({ frequency30d: 1, recencyDays: 29 }))
    f.advanceTo(Date.UTC(2024, 9, 27, 23))
    expect(f.state('u3').windows[0]).toStrictEqual([0, 0])
    expect(f.view('u3')).toStrictEqual(expect.objectContaining({ frequency30d: 0, frequency90d: 1, recencyDays: 30 }))
  })

  it('late events: inside the longest window they land in their own day; older ones count all-time only', () => {
    const d = createDriver(makeOperator({ windowsDays: [7, 30] }), { lateness: 40 * DAY_MS })
    d.apply('u1', buy('u1', at(D + 60, 12), 10)) // clock D+20 12:00
    d.apply('u1', buy('u1', at(D + 58, 6), 5)) // ahead of the clock: counted
    d.apply('u1', buy('u1', at(D - 20, 6), 7)) // day D-20 <= D+20-30: outside every window
    const s = d.state('u1')
    expect(s).toStrictEqual({
      lastPurchaseTs: at(D + 60, 12),
      lastPurchaseDay: D + 60,
      frequency: 3,
      monetary: 22,
      days: [
        [D + 58, 1, 5],
        [D + 60, 1, 10],
      ],
      windows: [
        [2, 15],
        [2, 15],
      ],
    })
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: EXPIRE_TIMER, dueMs: at(D + 65) }])
  })

  it('no windows: no buckets and no timers', () => {
    const d = createDriver(makeOperator({ windowsDays: [] }))
    d.apply('u1', buy('u1', at(D), 10))
    expect(d.state('u1')).toStrictEqual({ lastPurchaseTs: at(D), lastPurchaseDay: D, frequency: 1, monetary: 10, days: [], windows: [] })
    expect(d.timers()).toStrictEqual([])
    expect(d.view('u1')).toStrictEqual(expect.objectContaining({ frequency: 1, monetary: 10, cell: '3,3,3' }))
  })

  it('segmentMap: given cells override the default one by one', () => {
    const d = createDriver(makeOperator({ segmentMap: { '3,3,3': 'Middle' } }))
    d.apply('u1', buy('u1', at(D), 10))
    expect(d.tagValues('u1')).toStrictEqual({ rfm_score: '3,3,3', rfm_segment: 'Middle', rfm_value_segment: 'general_win_back' })
    d.apply('u2', buy('u2', at(D + 1), 20))
    d.apply('u2', buy('u2', at(D + 1, 1), 20))
    expect(d.tagValues('u2')).toStrictEqual({ rfm_score: '5,5,5', rfm_segment: 'Champions', rfm_value_segment: 'important_value' })
    expect(d.view('u1', at(D + 1)).segment).toBe('Lost')
    // Without the schema's defaults (a factory called directly), every cell must be mapped.
    const { segmentMap: _, ...rest } = Value.Default(rfm.configSchema, {}) as RfmConfig
    expect(() => rfm.create('rfm', { ...rest, segmentMap: { '1,1,1': 'x' } }, { timeZone: 'UTC' })).toThrow('no segment for the cell')
  })

  it('stays bounded after 1,000 days of activity', () => {
    const d = createDriver(makeOperator(), { roundTrip: true })
    for (let day = 0; day < 1000; day++) {
      for (let k = 0; k < 1 + (day % 4); k++) d.apply('u1', buy('u1', at(D + day, 8 + k), 1, `e${day}.${k}`))
    }
    const s = d.state('u1')
    expect(s.frequency).toBe(2500)
    expect(s.monetary).toBe(2500)
    expect(s.days.length).toBe(365)
    expect(s.days[0]).toStrictEqual([D + 635, 4, 4])
    // Days 970..999: 77 purchases; 910..999: 227; 635..999: 4 + 364 / 4 * 10 = 914.
    expect(s.windows).toStrictEqual([
      [77, 77],
      [227, 227],
      [914, 914],
    ])
    expect(d.timers()).toStrictEqual([{ userId: 'u1', name: EXPIRE_TIMER, dueMs: at(D + 1000) }])
  })

  it('rejects configs it cannot serve', () => {
    const code = (config: unknown): string | undefined => {
      try {
        createOperator(rfm, 'rfm', config)
      } catch (err) {
        return isTagstreamError(err) ? err.code : 'schema'
      }
      return undefined
    }
    expect(code({ windowsDays: [90, 30] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ windowsDays: [30, 30] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ windowsDays: [0] })).toBe('schema')
    expect(code({ purchaseEventTypes: ['order'], refundEventTypes: ['order'] })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ segmentTag: 'x', valueSegmentTag: 'x' })).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code({ scoreTag: 'bad-id' })).toBe('schema')
    expect(code({ segmentMap: { '6,1,1': 'x' } })).toBe('schema')
    expect(code({ segmentMap: { '1,1,1': '' } })).toBe('schema')
    expect(code({ segments8: { labels: { XYZ: 'x' } } })).toBe('schema')
    expect(code({ minPurchasesToScore: 0 })).toBe('schema')
    expect(code({ purchaseEventTypes: [] })).toBe('schema')
    expect(code({})).toBeUndefined()
  })
})
