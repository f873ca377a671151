import { describe, expect, it } from 'vitest'
import type { Profile } from '../../src/contracts/profile.js'
import { compileRule, isRuleErrors, ruleViewBuilder, ruleViewFromProfile, type CompiledRule, type RuleSchema, type RuleViewSource } from '../../src/tags/rules.js'

const schema: RuleSchema = {
  rfm: {
    monetary: 'double',
    monetary90d: 'double',
    frequency: 'int',
    recencyDays: 'int',
    lastPurchaseAt: { type: 'timestamp', optional: true },
  },
  lifecycle: { stage: { type: 'string', optional: true }, daysInStage: { type: 'int', optional: true } },
  tags: {
    city: { type: 'string', optional: true },
    vip: { type: 'bool', optional: true },
    interests: { type: 'list<string>', optional: true },
  },
}

function compiled(expr: string): CompiledRule {
  const r = compileRule(expr, schema)
  if (isRuleErrors(r)) throw new Error(`unexpected errors: ${JSON.stringify(r)}`)
  return r
}

function profile(p: { monetary90d?: number; frequency?: number; stage?: string | null; city?: string; lastPurchaseAt?: string }): Profile {
  const tag = (value: string) => ({ value, since: '2024-01-01T00:00:00.000Z', version: 1 })
  return {
    userId: 'u1',
    tags: p.city === undefined ? {} : { city: tag(p.city) },
    state: {
      rfm: {
        monetary: 5000,
        monetary90d: p.monetary90d ?? 0,
        frequency: p.frequency ?? 0,
        recencyDays: 3,
        lastPurchaseAt: p.lastPurchaseAt ?? null,
      },
      lifecycle: { stage: p.stage ?? null, daysInStage: null },
    },
  }
}

const view = (p: Parameters<typeof profile>[0]) => ruleViewFromProfile(profile(p), schema)

describe('compileRule: typical rules', () => {
  const atRisk = 'rfm.monetary90d >= 1000.0 && lifecycle.stage == "at_risk"'
  it('threshold && stage', () => {
    const r = compiled(atRisk)
    expect(r.resultType).toBe('bool')
    expect(r.evaluate(view({ monetary90d: 1500, stage: 'at_risk' }))).toEqual({ ok: true, value: true })
    expect(r.evaluate(view({ monetary90d: 999.99, stage: 'at_risk' }))).toEqual({ ok: true, value: false })
    expect(r.evaluate(view({ monetary90d: 1000, stage: 'active' }))).toEqual({ ok: true, value: false })
  })

  it('in-list && int comparison (int field from a JS number)', () => {
    const r = compiled('tags.city in ["Berlin", "Paris"] && rfm.frequency > 3')
    expect(r.evaluate(view({ city: 'Paris', frequency: 4 }))).toEqual({ ok: true, value: true })
    expect(r.evaluate(view({ city: 'Paris', frequency: 3 }))).toEqual({ ok: true, value: false })
    expect(r.evaluate(view({ city: 'Rome', frequency: 9 }))).toEqual({ ok: true, value: false })
  })

  it('string functions and non-bool results', () => {
    expect(compiled('lifecycle.stage.startsWith("at_") && lifecycle.stage.contains("risk")').evaluate(view({ stage: 'at_risk' }))).toEqual({
      ok: true,
      value: true,
    })
    expect(compiled('lifecycle.stage.matches("^(new|active)$")').evaluate(view({ stage: 'active' }))).toEqual({ ok: true, value: true })
    expect(compiled('rfm.frequency * 2').evaluate(view({ frequency: 21 }))).toEqual({ ok: true, value: 42 })
    expect(compiled('rfm.monetary90d / 4.0').evaluate(view({ monetary90d: 10 }))).toEqual({ ok: true, value: 2.5 })
    expect(compiled('rfm.frequency > 3 ? "high" : "low"').evaluate(view({ frequency: 1 }))).toEqual({ ok: true, value: 'low' })
  })

  it('timestamps from ISO strings', () => {
    const r = compiled('rfm.lastPurchaseAt > timestamp("2024-01-01T00:00:00Z")')
    expect(r.evaluate(view({ lastPurchaseAt: '2024-03-01T00:00:00.000Z' }))).toEqual({ ok: true, value: true })
    expect(r.evaluate(view({ lastPurchaseAt: '2023-03-01T00:00:00.000Z' }))).toEqual({ ok: true, value: false })
  })
})

describe('compileRule: definition-time errors with positions', () => {
  it('unknown field', () => {
    expect(compileRule('rfm.monetary91d > 1.0', schema)).toEqual([
      { code: 'unknown_field', message: 'No such key: monetary91d', position: { line: 1, column: 5, offset: 4 }, detail: 'no_such_key' },
    ])
  })

  it('unknown field on a later line', () => {
    expect(compileRule('rfm.frequency > 1 &&\n  lifecycle.stag == "new"', schema)).toEqual([
      { code: 'unknown_field', message: 'No such key: stag', position: { line: 2, column: 13, offset: 33 }, detail: 'no_such_key' },
    ])
  })

  it('unknown variable', () => {
    expect(compileRule('loyalty.tier == "gold"', schema)).toEqual([
      { code: 'unknown_variable', message: 'Unknown variable: loyalty', position: { line: 1, column: 1, offset: 0 }, detail: 'unknown_variable' },
    ])
  })

  it('syntax error', () => {
    expect(compileRule('rfm.monetary90d >= ', schema)).toEqual([
      { code: 'syntax_error', message: 'Unexpected token: EOF', position: { line: 1, column: 20, offset: 19 }, detail: 'unexpected_token' },
    ])
  })

  it('wrong type: double == string', () => {
    expect(compileRule('rfm.monetary90d == "x"', schema)).toEqual([
      { code: 'type_error', message: 'no such overload: double == string', position: { line: 1, column: 1, offset: 0 }, detail: 'no_such_overload' },
    ])
  })

  it('wrong type: int + double', () => {
    const r = compileRule('rfm.frequency + rfm.monetary > 3.0', schema)
    expect(isRuleErrors(r) && r.map((e) => [e.code, e.message])).toEqual([['type_error', 'no such overload: int + double']])
  })

  it('division by a literal zero', () => {
    expect(compileRule('rfm.frequency / 0 > 1', schema)).toEqual([
      { code: 'division_by_zero', message: 'division by zero: the divisor is the literal 0', position: { line: 1, column: 17, offset: 16 } },
    ])
  })

  it('result that is not a scalar', () => {
    expect(compileRule('[rfm.frequency]', schema)).toEqual([
      {
        code: 'invalid_result_type',
        message: 'a rule must produce bool, int, double or string, not list<int>',
        position: { line: 1, column: 1, offset: 0 },
      },
    ])
  })
})

describe('evaluate: run-time errors are results', () => {
  it('division by zero at run time does not throw', () => {
    const r = compiled('rfm.frequency / (rfm.recencyDays - 3) > 1')
    expect(r.evaluate(view({ frequency: 5 }))).toEqual({ ok: false, code: 'division_by_zero', message: 'division by zero' })
  })

  it('int overflow', () => {
    const r = compiled('rfm.frequency * 9223372036854775807 > 0')
    expect(r.evaluate(view({ frequency: 2 }))).toMatchObject({ ok: false, code: 'overflow' })
  })

  it('a value of the wrong type in the view is a type_error', () => {
    const r = compiled('rfm.frequency > 3')
    expect(r.evaluate({ rfm: { frequency: 4.5 }, lifecycle: {}, tags: {} })).toMatchObject({ ok: false, code: 'type_error' })
  })

  it('optional fields: has() is false when absent; direct access is no_such_field', () => {
    const has = compiled('has(tags.city) && tags.city == "Berlin"')
    expect(has.evaluate(view({}))).toEqual({ ok: true, value: false })
    expect(has.evaluate(view({ city: 'Berlin' }))).toEqual({ ok: true, value: true })
    expect(compiled('has(lifecycle.stage)').evaluate(view({ stage: null }))).toEqual({ ok: true, value: false })
    expect(compiled('tags.city == "Berlin"').evaluate(view({}))).toEqual({ ok: false, code: 'no_such_field', message: 'No such key: city' })
    // `||` absorbs the error of the other side, as in the CEL spec.
    expect(compiled('tags.city == "Berlin" || rfm.frequency > 1').evaluate(view({ frequency: 2 }))).toEqual({ ok: true, value: true })
  })
})

describe('ruleViewFromProfile', () => {
  it('converts per schema: int -> bigint, timestamp -> Date, tags by id, nulls left out, undeclared fields dropped', () => {
    const v = view({ monetary90d: 12.5, frequency: 4, city: 'Paris', lastPurchaseAt: '2024-03-01T00:00:00.000Z' })
    expect(v).toEqual({
      rfm: { monetary: 5000, monetary90d: 12.5, frequency: 4n, recencyDays: 3n, lastPurchaseAt: new Date('2024-03-01T00:00:00.000Z') },
      lifecycle: {},
      tags: { city: 'Paris' },
    })
  })

  it('an operator without state is an empty object', () => {
    expect(ruleViewFromProfile({ userId: 'u', tags: {}, state: {} }, schema)).toEqual({ rfm: {}, lifecycle: {}, tags: {} })
  })
})

describe('determinism', () => {
  it('100k views evaluate to the same results twice, matching a JS reference', () => {
    const r = compiled('tags.city in ["Berlin", "Paris"] && rfm.frequency > 3 || rfm.monetary90d >= 1000.0 && lifecycle.stage == "at_risk"')
    const cities = ['Berlin', 'Paris', 'Rome']
    const stages = ['new', 'at_risk']
    const views = Array.from({ length: 100_000 }, (_, i) =>
      view({ city: cities[i % 3] as string, frequency: i % 7, monetary90d: (i * 37) % 2000, stage: stages[i % 2] as string }),
    )
    const run = () => views.map((v) => r.evaluate(v))
    const a = run()
    const b = run()
    expect(b).toEqual(a)
    let trues = 0
    for (let i = 0; i < views.length; i++) {
      const want = (i % 3 !== 2 && i % 7 > 3) || ((i * 37) % 2000 >= 1000 && i % 2 === 1)
      const got = a[i]
      if (got === undefined || !got.ok || got.value !== want) throw new Error(`view ${i}: ${JSON.stringify(got)} != ${want}`)
      if (want) trues++
    }
    expect(trues).toBeGreaterThan(0)
  })
})

describe('what a rule reads, and views built for it', () => {
  const source = (ops: Record<string, Record<string, unknown>>, tags: Record<string, unknown> = {}): RuleViewSource => ({
    operatorView: (v) => ops[v],
    tagValue: (id) => tags[id],
    allTags: () => tags,
  })

  it('names the variables and fields it reads, without comprehension variables', () => {
    const r = compiled('rfm.monetary90d >= 10.0 && tags.interests.exists(i, i == "shoes") && tags.city == "Berlin"')
    expect(r.variables).toEqual(['rfm', 'tags'])
    expect(r.wholeVariables).toEqual([])
    expect(r.tagRefs).toEqual(['city', 'interests'])
    expect(r.fields).toEqual([
      ['rfm', 'monetary90d'],
      ['tags', 'city'],
      ['tags', 'interests'],
    ])
  })

  it('is strict on missing fields only when nothing in it can absorb an error', () => {
    expect(compiled('rfm.monetary90d >= 10.0 && lifecycle.stage == "silent"').strictOnMissing).toBe(true)
    expect(compiled('!(lifecycle.stage == "silent")').strictOnMissing).toBe(true)
    for (const absorbing of [
      'rfm.monetary90d >= 10.0 || lifecycle.stage == "silent"',
      'has(lifecycle.stage) ? lifecycle.stage == "silent" : true',
      '!has(tags.city)',
      'tags.interests.exists(i, i == "a")',
    ]) {
      expect(compiled(absorbing).strictOnMissing, absorbing).toBe(false)
    }
  })

  it('builds only the fields read, converted; a missing field of a strict rule gives no view', () => {
    const strict = compiled('rfm.frequency >= 2 && lifecycle.stage == "active"')
    const build = ruleViewBuilder(strict, schema)
    const view = build(source({ rfm: { frequency: 3, monetary: 10.5, recencyDays: 4 }, lifecycle: { stage: 'active', daysInStage: 3 } }))
    expect(view).toEqual({ rfm: { frequency: 3n }, lifecycle: { stage: 'active' } })
    expect(strict.evaluate(view!)).toEqual({ ok: true, value: true })
    expect(build(source({ rfm: { frequency: 3 }, lifecycle: { stage: null } }))).toBeUndefined()
    expect(build(source({ rfm: { frequency: 3 } }))).toBeUndefined()
  })

  it('builds views of objects the rule library takes as they are, which evaluate as plain objects do', () => {
    // Plain objects are converted by the library at every evaluation (half of its time); built views are not.
    const sources = [
      source({ rfm: { frequency: 3, monetary90d: 120.5, recencyDays: 4, lastPurchaseAt: '2024-03-01T10:00:00.000Z' }, lifecycle: { stage: 'active' } }, { city: 'Berlin', interests: ['shoes'] }),
      source({ rfm: { frequency: 0, monetary90d: 0, recencyDays: 400 } }, { vip: true }),
      source({}, {}),
    ]
    const plain = (view: Record<string, Record<string, unknown>>): Record<string, Record<string, unknown>> => Object.fromEntries(Object.entries(view).map(([k, v]) => [k, { ...v }]))
    for (const expr of [
      'rfm.frequency >= 2 && lifecycle.stage == "active"',
      'rfm.monetary90d / double(rfm.frequency) > 10.0',
      '!has(tags.city) || tags.city == "Berlin"',
      'has(lifecycle.stage) ? lifecycle.stage : "none"',
      'tags.interests.exists(i, i == "shoes") || tags.vip',
      'rfm.lastPurchaseAt > timestamp("2024-02-01T00:00:00Z")',
      'rfm.recencyDays * 2 + rfm.frequency',
    ]) {
      const rule = compiled(expr)
      const build = ruleViewBuilder(rule, schema)
      for (const src of sources) {
        const view = build(src)
        if (view === undefined) continue
        for (const v of Object.values(view)) expect(Object.getPrototypeOf(v), expr).not.toBe(Object.prototype)
        expect(rule.evaluate(view), expr).toEqual(rule.evaluate(plain(view)))
      }
    }
    const fromProfile = ruleViewFromProfile(profile({ monetary90d: 250, frequency: 4, stage: 'active', city: 'Paris' }), schema)
    const rule = compiled('rfm.monetary90d >= 200.0 && lifecycle.stage == "active" && tags.city == "Paris"')
    expect(rule.evaluate(fromProfile)).toEqual({ ok: true, value: true })
    expect(rule.evaluate(plain(fromProfile))).toEqual({ ok: true, value: true })
  })

  it('an absorbing rule is evaluated with the field absent, and may give a value', () => {
    const rule = compiled('!has(tags.city) || tags.city == "Berlin"')
    const build = ruleViewBuilder(rule, schema)
    expect(rule.evaluate(build(source({}, {}))!)).toEqual({ ok: true, value: true })
    expect(rule.evaluate(build(source({}, { city: 'Paris' }))!)).toEqual({ ok: true, value: false })
  })
})
