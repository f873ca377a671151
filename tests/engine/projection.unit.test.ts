import { describe, expect, it } from 'vitest'
import type { Operator, ViewSchema } from '../../src/operator-api.js'
import { ProjectionLayout, ProjectionReader, decodeProjection, isoMs, projectedViewBuilder } from '../../src/engine/projection.js'
import { newUserRecord, type UserRecord } from '../../src/engine/user-record.js'
import { compileRule, isRuleErrors, ruleViewBuilder, ruleViewPlan, type CompiledRule, type RuleSchema } from '../../src/tags/rules.js'

/** Values of every cell kind and at every size boundary of the flat layout. */
const VALUES: readonly unknown[] = [
  0, 1, 127, 128, 255, 256, -1, -128, -129, 32767, 32768, -32768, -32769, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1,
  2 ** 53, -(2 ** 53), -0, 0.1, 175.39000000000001, -2.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY,
  Number.MIN_VALUE, Number.MAX_VALUE, '', 'a', 'x'.repeat(21), 'x'.repeat(22), 'ü'.repeat(21), 'ü'.repeat(22), 'ü'.repeat(31),
  'ü'.repeat(32), 'x'.repeat(63), 'x'.repeat(64), 'x'.repeat(85), 'x'.repeat(86), 'é'.repeat(127), 'é'.repeat(128), 'y'.repeat(300),
  '🙂 grinning', 'nul\u0000inside', '2024-01-01T07:37:02.741Z', '2024-02-29T00:00:00.000Z', '2023-02-29T00:00:00.000Z',
  '0999-01-01T00:00:00.000Z', '1000-01-01T00:00:00.000Z', '9999-12-31T23:59:59.999Z', '2024-13-01T00:00:00.000Z',
  '2024-01-01T24:00:00.000Z', '2024-01-01T00:00:00.000z', '2024-01-01 00:00:00.000Z', '+2024-01-01T00:00:00.000Z',
  true, false, null, ['books', 'toys'], { nested: [1, 'two'] },
]

const FIELDS = VALUES.map((_, i) => `f${i}`)

/** An operator whose view is its state (no clock fields: every field projected). */
function plainOperator(name: string, fields: readonly string[], extra: Partial<Operator> = {}): Operator {
  return {
    name,
    tags: [],
    initialState: () => ({}),
    onEvent: (s) => s,
    deriveTags: () => ({}),
    viewSchema: Object.fromEntries(fields.map((f) => [f, 'string'])) as ViewSchema,
    viewClockFields: [],
    ...extra,
  }
}

function record(ops: Record<string, unknown>, extra: Partial<UserRecord> = {}): UserRecord {
  return { ...newUserRecord('u1', 0), ops, ...extra }
}

const asView = (_op: Operator, state: unknown): Readonly<Record<string, unknown>> => state as Record<string, unknown>

describe('flat binary projections', () => {
  it('keep every value exactly, at every cell size boundary', () => {
    const layout = new ProjectionLayout([plainOperator('all', FIELDS)])
    const state = Object.fromEntries(VALUES.map((v, i) => [`f${i}`, v]))
    const buf = layout.project(record({ all: state }), 1000, asView)
    const [, , , , , , views] = layout.decode(buf)
    const decoded = views[0] as unknown[]
    expect(decoded).toHaveLength(VALUES.length)
    // Every value kept as it is: -0 and NaN included (Object.is), lists and objects through msgpack.
    const same = (got: unknown, v: unknown): boolean => Object.is(got, v) || (typeof v === 'object' && v !== null && JSON.stringify(got) === JSON.stringify(v))
    expect(VALUES.filter((v, i) => !same(decoded[i], v))).toEqual([])
    const reader = new ProjectionReader(layout).load(buf)
    const start = reader.sectionCells(layout.viewSection(0))
    expect(VALUES.filter((v, i) => !same(reader.cell(start, i), v))).toEqual([])
  })

  it('hold the header, tags, testing values and population values as the record has them', () => {
    const rescoring = plainOperator('rfm', ['monetary'], {
      rescore: true,
      population: ['r', 'f', 'm'],
      scoredValues: (s) => ({ r: -19723, f: (s as { f: number }).f, m: 175.39 }),
      rescoreTagValues: () => ({}),
    })
    const layout = new ProjectionLayout([rescoring, plainOperator('empty', [])])
    const rec = record(
      { rfm: { monetary: 12.5, f: 3 }, empty: {} },
      {
        tags: { rfm_segment: ['Loyal', 10, 2], vip: [true, 11, 1], score: [4.5, 12, 3, 1] },
        tt: { big_quarter: true },
        timers: { 'rfm\u0000expire': 5000, 'rfm\u0000other': 4000 },
        rs: 900,
      },
    )
    const buf = layout.project(rec, 1000, asView)
    expect(layout.decode(buf)).toEqual([
      1000,
      4000,
      900,
      { rfm_segment: ['Loyal', 2], vip: [true, 1], score: [4.5, 3] },
      { big_quarter: true },
      [[-19723, 3, 175.39]],
      [[12.5], []],
    ])
    const r = new ProjectionReader(layout).load(buf)
    expect([r.clock, r.validUntil, r.rs]).toEqual([1000, 4000, 900])
    expect([r.holdsAt(999), r.holdsAt(1000), r.holdsAt(3999), r.holdsAt(4000)]).toEqual([false, true, true, false])
    expect([r.tagValue('rfm_segment'), r.tagValue('vip'), r.tagValue('score'), r.tagValue('rfm_score')]).toEqual(['Loyal', true, 4.5, undefined])
    expect([r.tagHolds('rfm_segment', 'Loyal', 2), r.tagHolds('rfm_segment', 'Loyal', 1), r.tagHolds('rfm_segment', 'Champions', 2)]).toEqual([true, false, false])
    expect([r.tagHolds('rfm_score', undefined, 1), r.tagHolds('vip', undefined, 1)]).toEqual([true, false])
    expect([r.testingValue('big_quarter'), r.testingValue('other')]).toEqual([true, null])
    expect(r.allTags()).toEqual({ rfm_segment: 'Loyal', vip: true, score: 4.5 })
    expect(r.scoredOf(0)).toEqual({ r: -19723, f: 3, m: 175.39 })
    expect(r.operatorView('rfm')).toEqual({ monetary: 12.5 })
    expect(r.operatorView('empty')).toEqual({})

    // No state: empty sections. No clock: never holds, no views.
    const none = layout.project(record({}, { tags: {} }), Number.NaN, asView)
    expect(layout.decode(none)).toEqual([null, null, null, {}, null, [null], [null, null]])
    const n = new ProjectionReader(layout).load(none)
    expect([n.holdsAt(0), n.scoredOf(0), n.operatorView('rfm')]).toEqual([false, undefined, {}])
    expect(layout.decode(layout.unheld(rec))).toEqual([null, null, 900, { rfm_segment: ['Loyal', 2], vip: [true, 1], score: [4.5, 3] }, { big_quarter: true }, [null], [null, null]])
  })

  it('copy an unchanged operator view as bytes, recompute it when its own next timer moves, and keep views when only tags change', () => {
    const calls: string[] = []
    const counted = (name: string): Operator['view'] => (state) => {
      calls.push(name)
      return state as Record<string, unknown>
    }
    const layout = new ProjectionLayout([plainOperator('a', ['x'], { view: counted('a') }), plainOperator('b', ['y'], { view: counted('b') })])
    const view = (op: Operator, state: unknown): Readonly<Record<string, unknown>> => (op.view as NonNullable<Operator['view']>)(state, undefined as never)
    const a = { x: 'first' }
    const rec = record({ a, b: { y: 1 } }, { timers: { 'a\u0000t': 5000 } })
    const first = layout.project(rec, 1000, view)
    rec.ops = { a, b: { y: 2 } }
    const second = layout.project(rec, 2000, view)
    expect(calls).toEqual(['a', 'b', 'b'])
    expect(layout.decode(second)).toEqual([2000, 5000, null, {}, null, [], [['first'], [2]]])
    // The operator's own next timer moved: its view is computed again; the other's is not.
    rec.timers = { 'a\u0000t': 6000 }
    layout.project(rec, 3000, view)
    expect(calls).toEqual(['a', 'b', 'b', 'a'])
    // Another operator's timer does not matter to a view; a timer of its own does.
    rec.timers = { 'a\u0000t': 6000, 'b\u0000u': 7000 }
    layout.project(rec, 3000, view)
    expect(calls).toEqual(['a', 'b', 'b', 'a', 'b'])
    // Nor an earlier clock, or one that reached the timer (not fired yet): computed again.
    layout.project(rec, 2000, view)
    layout.project(rec, 6000, view)
    expect(calls).toEqual(['a', 'b', 'b', 'a', 'b', 'a', 'b', 'a'])

    const ops = { ...rec.ops }
    rec.tags = { t: ['on', 3000, 4] }
    rec.rs = 2500
    expect(layout.sameViews(rec, ops, first)).toBe(false) // next timer moved since
    const stored = layout.project(rec, 3000, view)
    expect(layout.sameViews(rec, ops, stored)).toBe(true)
    rec.tags = { t: ['off', 3500, 4], u: ['x'.repeat(40), 3500, 1] }
    rec.rs = 3500
    expect(layout.decode(layout.withTags(rec, stored))).toEqual([3000, 6000, 3500, { t: ['off', 4], u: ['x'.repeat(40), 1] }, null, [], [['first'], [2]]])
  })

  it('switch to wide section offsets when a value passes 64 KiB', () => {
    const layout = new ProjectionLayout([plainOperator('big', ['text', 'n'])])
    const text = 'z'.repeat(70_000)
    const buf = layout.project(record({ big: { text, n: 7 } }, { tags: { t: ['v', 1, 1] } }), 10, asView)
    expect(buf.length).toBeGreaterThan(70_000)
    expect(layout.decode(buf)).toEqual([10, null, null, { t: ['v', 1] }, null, [], [[text, 7]]])
    const r = new ProjectionReader(layout).load(buf)
    expect([r.tagValue('t'), r.cell(r.sectionCells(layout.viewSection(0)), 1)]).toEqual(['v', 7])
    expect(decodeProjection(buf)[5]).toEqual([[text, 7]])
  })

  it('read ISO-8601 timestamps in the exact form toISOString gives, and nothing else', () => {
    for (const ms of [0, 1, -1, 1704093422741, 253402300799999, -30610224000000, 951782400000]) {
      expect(isoMs(new Date(ms).toISOString())).toBe(ms)
    }
    for (const s of ['2023-02-29T00:00:00.000Z', '1900-02-29T00:00:00.000Z', '2024-04-31T00:00:00.000Z', '2024-01-01T00:60:00.000Z', '2024-01-01T00:00:00.00Z', '2024-01-0aT00:00:00.000Z']) {
      expect(isoMs(s)).toBeNaN()
    }
    expect(isoMs('2000-02-29T12:00:00.000Z')).toBe(Date.UTC(2000, 1, 29, 12))
  })

  it('build the rule views ruleViewBuilder builds from the same values, reusing one view for strict rules', () => {
    const schema: RuleSchema = {
      rfm: { monetary: 'double', frequency: 'int', lastPurchaseAt: 'timestamp' },
      lifecycle: { stage: { type: 'string', optional: true } },
      tags: { rfm_segment: { type: 'string', optional: true }, vip: { type: 'bool', optional: true } },
    }
    const layout = new ProjectionLayout([plainOperator('rfm', ['monetary', 'frequency', 'lastPurchaseAt']), plainOperator('lifecycle', ['stage'])])
    const users = [
      record({ rfm: { monetary: 150.5, frequency: 3, lastPurchaseAt: '2024-01-01T18:05:49.955Z' }, lifecycle: { stage: 'active' } }, { tags: { rfm_segment: ['Loyal', 1, 1], vip: [true, 1, 1] } }),
      record({ rfm: { monetary: 20, frequency: 1, lastPurchaseAt: null }, lifecycle: { stage: 'new' } }, { tags: { rfm_segment: ['About to Sleep', 1, 1] } }),
      record({ rfm: { monetary: 0.5, frequency: 0 } }, {}),
      record({}, {}),
    ]
    const rules = [
      'rfm.monetary >= 100.0 && lifecycle.stage in ["new", "active", "reactivated"]',
      'rfm.frequency >= 2 && tags.rfm_segment == "Loyal"',
      'rfm.monetary > 1.0',
      'has(tags.vip) || rfm.monetary > 10.0',
      'tags.vip && rfm.lastPurchaseAt < timestamp("2024-06-01T00:00:00Z")',
      'lifecycle.stage',
    ]
    for (const expression of rules) {
      const rule = compileRule(expression, schema)
      if (isRuleErrors(rule)) throw new Error(`${expression}: ${rule[0]?.message}`)
      const fromRecord = ruleViewBuilder(rule as CompiledRule, schema)
      const fromProjection = projectedViewBuilder(ruleViewPlan(rule as CompiledRule, schema), layout)
      const reader = new ProjectionReader(layout)
      for (const rec of users) {
        const expected = fromRecord({
          operatorView: (v) => rec.ops[v] as Record<string, unknown> | undefined,
          tagValue: (id) => rec.tags[id]?.[0],
          allTags: () => Object.fromEntries(Object.entries(rec.tags).map(([id, t]) => [id, t[0]])),
        })
        const got = fromProjection(reader.load(layout.project(rec, 1000, asView)))
        // A copy: a strict rule's view object is reused for the next user.
        expect(got === undefined ? undefined : JSON.parse(JSON.stringify(got, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)))).toEqual(
          expected === undefined ? undefined : JSON.parse(JSON.stringify(expected, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))),
        )
        if (got !== undefined) expect((rule as CompiledRule).evaluate(got)).toEqual((rule as CompiledRule).evaluate(expected as NonNullable<typeof expected>))
      }
    }
  })
})
