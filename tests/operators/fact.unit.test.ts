import { RankedMultiset } from '../../src/engine/population.js'
import { describe, expect, it } from 'vitest'
import fact, { type FactState } from '../../operators/fact.js'
import { isTagstreamError } from '../../src/errors.js'
import { operatorContractSuite } from './contract-suite.js'
import { createDriver, createOperator, event } from './harness.js'

const T0 = Date.UTC(2024, 2, 1, 12) // 2024-03-01T12:00:00.000Z
const MIN = 60_000
const iso = (ms: number): string => new Date(ms).toISOString()

const CONFIG = {
  attributes: [
    { property: 'city', eventTypes: ['signup', 'profile_update'], description: 'City the user lives in' },
    { property: 'plan', tag: 'plan_tier' },
    { property: 'age', valueType: 'number', eventTypes: ['profile_update'] },
    { property: 'newsletter', tag: 'newsletter_opt_in', valueType: 'boolean' },
  ],
}

const makeOperator = () => createOperator(fact, 'profile', CONFIG)

operatorContractSuite('fact', makeOperator, () => [
  event('u1', 'signup', T0, { city: 'Paris', plan: 'free', newsletter: true }),
  event('u2', 'signup', T0 + MIN, { city: 'Lyon', age: 40 }),
  event('u1', 'profile_update', T0 + 5 * MIN, { city: 'Berlin', age: 31 }),
  event('u1', 'profile_update', T0 + 3 * MIN, { city: 'Rome' }), // late: loses to Berlin
  event('u2', 'profile_update', T0 + 6 * MIN, { age: 41, plan: { nested: true } }),
  event('u1', 'purchase', T0 + 7 * MIN, { plan: 'pro', newsletter: null }),
  event('u2', 'profile_update', T0 + 8 * MIN, { city: null, plan: 7 }),
  event('u3', 'view', T0 + 9 * MIN, { page: '/home' }),
])

describe('fact operator', () => {
  it('declares one tag per attribute, the tag defaulting to the property', () => {
    const op = makeOperator()
    expect(op.tags).toStrictEqual([
      { id: 'city', description: 'City the user lives in', category: ['profile', 'attributes'], valueType: 'string' },
      { id: 'plan_tier', description: 'Attribute "plan" from events', category: ['profile', 'attributes'], valueType: 'string' },
      { id: 'age', description: 'Attribute "age" from events', category: ['profile', 'attributes'], valueType: 'number' },
      {
        id: 'newsletter_opt_in',
        description: 'Attribute "newsletter" from events',
        category: ['profile', 'attributes'],
        valueType: 'boolean',
      },
    ])
    // An attribute takes any event type: no dispatch filter.
    expect(op.eventTypes).toBeUndefined()
    const narrow = createOperator(fact, 'p', { attributes: [{ property: 'city', eventTypes: ['signup', 'move'] }], category: ['a', 'b', 'c'] })
    expect(narrow.eventTypes).toStrictEqual(['signup', 'move'])
    expect(narrow.tags[0]?.category).toStrictEqual(['a', 'b', 'c'])
  })

  it('records values with their event time and derives tags with evidence', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', event('u1', 'signup', T0, { city: 'Paris', plan: 'free', newsletter: false, age: 30 }, 'e1'))
    expect(d.tags('u1')).toStrictEqual({
      city: { value: 'Paris', evidence: { property: 'city', setAt: iso(T0) } },
      plan_tier: { value: 'free', evidence: { property: 'plan', setAt: iso(T0) } },
      newsletter_opt_in: { value: false, evidence: { property: 'newsletter', setAt: iso(T0) } },
    })
    // `age` is only taken from profile_update events.
    expect(d.state('u1')).toStrictEqual({
      attributes: {
        city: { value: 'Paris', ts: T0 },
        plan_tier: { value: 'free', ts: T0 },
        newsletter_opt_in: { value: false, ts: T0 },
      },
    })
    expect(d.view('u1')).toStrictEqual({ city: 'Paris', plan_tier: 'free', newsletter_opt_in: false })
    expect(d.changes).toStrictEqual([
      {
        userId: 'u1',
        tag: 'city',
        op: 'entered',
        from: null,
        to: 'Paris',
        at: T0,
        cause: { kind: 'event', eventId: 'e1' },
        evidence: { property: 'city', setAt: iso(T0) },
      },
      expect.objectContaining({ tag: 'newsletter_opt_in', op: 'entered', from: null, to: false, at: T0 }),
      expect.objectContaining({ tag: 'plan_tier', op: 'entered', from: null, to: 'free', at: T0 }),
    ])
  })

  it('last write wins by event time: an older event never overwrites a newer value', () => {
    const d = createDriver(makeOperator(), { lateness: 10 * MIN })
    d.apply('u1', event('u1', 'profile_update', T0 + 5 * MIN, { city: 'Berlin' }))
    d.apply('u1', event('u1', 'profile_update', T0 + 2 * MIN, { city: 'Rome' }))
    expect(d.tagValues('u1')).toStrictEqual({ city: 'Berlin' })
    expect(d.state('u1').attributes.city).toStrictEqual({ value: 'Berlin', ts: T0 + 5 * MIN })
    d.apply('u1', event('u1', 'profile_update', T0 + 6 * MIN, { city: 'Madrid' }))
    expect(d.tags('u1').city).toStrictEqual({ value: 'Madrid', evidence: { property: 'city', setAt: iso(T0 + 6 * MIN) } })
    expect(d.changes.map((c) => [c.op, c.from, c.to, c.at])).toStrictEqual([
      ['entered', null, 'Berlin', T0 + 5 * MIN],
      ['changed', 'Berlin', 'Madrid', T0 + 6 * MIN],
    ])
  })

  it('a rewrite of the same value moves its time, so a late older removal does not win', () => {
    const d = createDriver(makeOperator(), { lateness: 60 * MIN })
    d.apply('u1', event('u1', 'signup', T0, { city: 'Paris' }))
    d.apply('u1', event('u1', 'signup', T0 + 10 * MIN, { city: 'Paris' }))
    expect(d.tags('u1').city?.evidence).toStrictEqual({ property: 'city', setAt: iso(T0 + 10 * MIN) })
    d.apply('u1', event('u1', 'profile_update', T0 + 5 * MIN, { city: null }))
    expect(d.tagValues('u1')).toStrictEqual({ city: 'Paris' })
  })

  it('on equal event times the later-applied event wins', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', event('u1', 'signup', T0, { plan: 'free' }))
    d.apply('u1', event('u1', 'upgrade', T0, { plan: 'pro' }))
    expect(d.tagValues('u1')).toStrictEqual({ plan_tier: 'pro' })
  })

  it('null removes the attribute: the user leaves the tag, and older values stay out', () => {
    const d = createDriver(makeOperator(), { lateness: 60 * MIN })
    d.apply('u1', event('u1', 'signup', T0, { city: 'Paris', plan: 'free' }))
    d.apply('u1', event('u1', 'profile_update', T0 + 10 * MIN, { city: null }))
    expect(d.tagValues('u1')).toStrictEqual({ plan_tier: 'free' })
    expect(d.state('u1').attributes.city).toStrictEqual({ value: null, ts: T0 + 10 * MIN })
    expect(d.view('u1')).toStrictEqual({ plan_tier: 'free' })
    expect(d.changes.at(-1)).toStrictEqual(
      expect.objectContaining({ userId: 'u1', tag: 'city', op: 'left', from: 'Paris', to: null, at: T0 + 10 * MIN }),
    )
    // A late event from before the removal does not bring the value back.
    d.apply('u1', event('u1', 'profile_update', T0 + 5 * MIN, { city: 'Rome' }))
    expect(d.tagValues('u1')).toStrictEqual({ plan_tier: 'free' })
    // A newer one does.
    d.apply('u1', event('u1', 'profile_update', T0 + 11 * MIN, { city: 'Rome' }))
    expect(d.tagValues('u1')).toStrictEqual({ city: 'Rome', plan_tier: 'free' })
  })

  it('a removal that arrives before any value still blocks older values', () => {
    const d = createDriver(makeOperator(), { lateness: 60 * MIN })
    d.apply('u1', event('u1', 'profile_update', T0 + 10 * MIN, { city: null }))
    expect(d.tagValues('u1')).toStrictEqual({})
    expect(d.changes).toStrictEqual([])
    d.apply('u1', event('u1', 'signup', T0, { city: 'Paris' }))
    expect(d.tagValues('u1')).toStrictEqual({})
  })

  it('ignores values of other types and events that do not carry the property', () => {
    const op = makeOperator()
    const d = createDriver(op)
    d.apply('u1', event('u1', 'signup', T0, { city: 'Paris', age: 30 }))
    const before = d.state('u1')
    for (const [i, city] of [{ name: 'x' }, ['Paris'], undefined, Number.NaN, Number.POSITIVE_INFINITY].entries()) {
      const e = event('u1', 'profile_update', T0 + (i + 1) * MIN, { city })
      expect(op.onEvent(before, e, { now: e.ts, timeZone: 'UTC', userId: 'u1', setTimer() {}, deleteTimer() {}, timer: () => undefined, population: () => new RankedMultiset() })).toBe(before)
    }
    // No matching property, an event type the attribute does not take, a string for a number.
    d.apply('u1', event('u1', 'view', T0 + MIN, { page: '/' }))
    d.apply('u1', event('u1', 'purchase', T0 + 2 * MIN, { city: 'Rome' }))
    d.apply('u1', event('u1', 'profile_update', T0 + 3 * MIN, { age: '31' }))
    expect(d.state('u1')).toBe(before)
    expect(d.tagValues('u1')).toStrictEqual({ city: 'Paris' })
  })

  it('converts numbers and booleans for string attributes; number and boolean attributes are strict', () => {
    const d = createDriver(makeOperator())
    d.apply('u1', event('u1', 'profile_update', T0, { city: 75001, age: 42.5, newsletter: 'yes', plan: true }))
    expect(d.tagValues('u1')).toStrictEqual({ city: '75001', age: 42.5, plan_tier: 'true' })
    d.apply('u1', event('u1', 'profile_update', T0 + MIN, { age: 43, newsletter: true }))
    expect(d.tagValues('u1')).toStrictEqual({ city: '75001', age: 43, plan_tier: 'true', newsletter_opt_in: true })
  })

  it('does not read inherited properties', () => {
    const op = createOperator(fact, 'p', { attributes: [{ property: 'constructor' }, { property: 'toString' }] })
    const d = createDriver<FactState>(op)
    d.apply('u1', event('u1', 'x', T0, {}))
    expect(d.tagValues('u1')).toStrictEqual({})
    d.apply('u1', event('u1', 'x', T0 + 1, { constructor: 'c' }))
    expect(d.tagValues('u1')).toStrictEqual({ constructor: 'c' })
  })

  it('rejects configs it cannot serve', () => {
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn()
      } catch (err) {
        return isTagstreamError(err) ? err.code : 'other'
      }
      return undefined
    }
    expect(code(() => createOperator(fact, 'p', { attributes: [{ property: 'a' }, { property: 'b', tag: 'a' }] }))).toBe(
      'TS_ERR_OPERATOR_CONFIG_INVALID',
    )
    expect(code(() => createOperator(fact, 'p', { attributes: [{ property: 'shipping-country' }] }))).toBe('TS_ERR_OPERATOR_CONFIG_INVALID')
    expect(code(() => createOperator(fact, 'p', { attributes: [{ property: 'shipping-country', tag: 'country' }] }))).toBeUndefined()
    expect(code(() => createOperator(fact, 'p', { attributes: [] }))).toBe('other')
    expect(code(() => createOperator(fact, 'p', { attributes: [{ property: 'a' }], category: ['one'] }))).toBe('other')
  })
})
