import { describe, expect, it } from 'vitest'
import counter from '../../operators/counter.js'
import fact from '../../operators/fact.js'
import type { TagChange, TagValue } from '../../src/contracts/tag-change.js'
import { RuleCompileError } from '../../src/engine/engine.js'
import { DAY_MS } from '../../src/operator-api.js'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { createOperator } from '../operators/harness.js'
import { createFixture, type Fixture } from '../support/engine-fixture.js'

const T0 = Date.UTC(2024, 0, 1)

const operators = () => [
  createOperator(fact, 'attributes', { attributes: [{ property: 'city' }, { property: 'status' }] }),
  createOperator(counter, 'purchases', { eventTypes: ['purchase'], windowDays: 30, tag: 'purchase_frequency', bands: [{ name: 'occasional', min: 1 }, { name: 'regular', min: 3 }] }),
]

/** A strategy tag definition as a tags-file entry. */
const strategy = (id: string, rule: string, extra: Record<string, unknown> = {}) => ({
  id,
  name: id,
  description: `test tag ${id}`,
  owner: 'tests',
  category: ['test', 'rules'],
  kind: 'strategy',
  valueType: 'boolean',
  rule,
  status: 'online',
  ...extra,
})

let n = 0
const ev = (user: string, day: number, type: string, properties: Record<string, unknown> = {}) => ({
  eventId: `e${++n}`,
  userId: user,
  type,
  ts: T0 + day * DAY_MS,
  properties,
})

const summary = (changes: readonly TagChange[], tag: string) =>
  changes.filter((c) => c.tag === tag).map((c) => [c.userId, c.op, c.from, c.to, c.cause.kind === 'event' ? 'event' : c.cause.kind === 'definition' ? `definition v${c.cause.version}` : c.cause.kind])

/** tag -> user -> value, from the stored user records. */
async function storedTags(f: Fixture, partitions: number, tag: string): Promise<Map<string, TagValue>> {
  const out = new Map<string, TagValue>()
  for (let p = 0; p < partitions; p++) {
    for await (const rec of f.store.iterateUsers(p)) {
      const t = rec.tags[tag]
      if (t !== undefined) out.set(rec.u, t[0])
    }
  }
  return out
}

describe('strategy tags (CEL rules over the profile view)', () => {
  it('enter and leave with the event as cause and the inputs as evidence; rules read other tags', async () => {
    // No sweeps here: they re-evaluate every rule daily, and this test counts evaluations.
    const f = await createFixture(operators(), { engine: { partitions: 1 }, rescore: { schedule: 'off' } }, {
      tags: [strategy('big_buyer', 'purchases.total >= 2'), strategy('berlin_big_buyer', 'tags.big_buyer && attributes.city == "Berlin"')],
    })
    f.source.push(
      ev('alice', 0, 'profile_update', { city: 'Berlin' }),
      ev('alice', 1, 'purchase', { amount: 10 }),
      ev('alice', 2, 'purchase', { amount: 10 }),
      ev('bob', 2, 'purchase', { amount: 5 }),
      ev('alice', 3, 'profile_update', { city: 'Paris' }),
    )
    await f.drain()
    expect(summary(f.changes.changes, 'big_buyer')).toEqual([['alice', 'entered', null, true, 'event']])
    expect(summary(f.changes.changes, 'berlin_big_buyer')).toEqual([
      ['alice', 'entered', null, true, 'event'],
      ['alice', 'left', true, null, 'event'],
    ])
    const entered = f.changes.changes.find((c) => c.tag === 'big_buyer')!
    expect(entered.evidence).toEqual({ 'purchases.total': 2 })
    expect(entered.tagVersion).toBe(1)
    expect(f.changes.changes.find((c) => c.tag === 'berlin_big_buyer')!.evidence).toEqual({ 'attributes.city': 'Berlin', 'tags.big_buyer': true })
    // Only what changed a rule's inputs evaluates it: big_buyer reads purchases (3 purchases);
    // berlin_big_buyer reads attributes (2 profile updates, and bob's first event, which creates his
    // attributes state) and big_buyer (changed once).
    expect(f.engine.stats.ruleEvaluations).toBe(3 + 3 + 1)
    expect((await f.engine.profile('alice'))?.tags.big_buyer?.value).toBe(true)
    await f.close()
  })

  it('counts a run-time evaluation error per tag and keeps the previous value', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 1 } }, {
      tags: [strategy('spread', '100 / (purchases.total - 2)', { valueType: 'number' })],
    })
    f.source.push(ev('u', 0, 'purchase'), ev('u', 1, 'purchase'), ev('u', 2, 'purchase'))
    await f.drain()
    // total 1: 100 / -1; total 2: division by zero (kept); total 3: 100 / 1. `purchases.total` does
    // not depend on the clock, so the daily sweeps do not evaluate the rule again.
    expect(summary(f.changes.changes, 'spread')).toEqual([
      ['u', 'entered', null, -100, 'event'],
      ['u', 'changed', -100, 100, 'event'],
    ])
    expect(f.engine.stats.ruleErrorsByTag).toEqual({ spread: 1 })
    await f.close()
  })

  it('daily sweeps re-evaluate rules that read the clock, and only those', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 1 } }, {
      tags: [strategy('recent_buyer', 'purchases.countInWindow >= 1'), strategy('ever_bought', 'purchases.total >= 1')],
    })
    f.source.push(ev('a', 0, 'purchase'), ev('b', 40, 'view'))
    await f.drain()
    // a's purchase leaves the 30-day window as the clock passes day 30: the sweep of that day sees it.
    expect(summary(f.changes.changes, 'recent_buyer')).toEqual([
      ['a', 'entered', null, true, 'event'],
      ['a', 'left', true, null, 'rescore'],
    ])
    expect(summary(f.changes.changes, 'ever_bought')).toEqual([['a', 'entered', null, true, 'event']])
    // The sweep of the last day evaluates recent_buyer for both users, ever_bought for nobody.
    const evaluations = f.engine.stats.ruleEvaluations
    f.source.push(ev('b', 41, 'view'))
    await f.drain()
    expect(f.engine.stats.ruleEvaluations - evaluations).toBe(2)
    await f.close()
  })

  it('a testing version is evaluated and counted, never emitted or stored as a tag', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 2 } }, { tags: [strategy('big_buyer', 'purchases.total >= 2', { status: 'testing' })] })
    f.source.push(ev('a', 0, 'purchase'), ev('a', 1, 'purchase'), ev('b', 1, 'purchase'), ev('b', 2, 'purchase'), ev('c', 2, 'purchase'))
    await f.drain()
    expect(f.changes.changes.filter((c) => c.tag === 'big_buyer')).toEqual([])
    expect(f.engine.coverage('big_buyer')).toEqual([])
    expect(f.engine.testingCoverage('big_buyer')).toEqual([{ value: true, users: 2 }])
    expect(f.engine.stats.testingChangesByTag.big_buyer).toEqual({ entered: 2, left: 0, changed: 0 })
    expect((await storedTags(f, 2, 'big_buyer')).size).toBe(0)
    await f.close()
  })
})

describe('publishing and retiring', () => {
  const tagsFile = [strategy('big_buyer', 'purchases.total >= 2', { status: 'testing' })]
  const history = () => [
    ev('a', 0, 'purchase'),
    ev('a', 1, 'purchase'),
    ev('b', 1, 'purchase'),
    ev('b', 2, 'purchase'),
    ev('b', 2, 'purchase'),
    ev('c', 2, 'purchase'),
  ]

  it('announce: members at publication enter with cause definition; retiring announces their leaving', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 2 }, rescore: { chunkUsers: 1 } }, { tags: tagsFile })
    f.source.push(...history())
    await f.drain()
    await f.catalog!.publish('big_buyer', 1, 'announce', 'tests')
    f.source.push(ev('c', 3, 'purchase'))
    await f.drain()
    const published = summary(f.changes.changes, 'big_buyer').sort()
    expect(published).toEqual([
      ['a', 'entered', null, true, 'definition v1'],
      ['b', 'entered', null, true, 'definition v1'],
      // c qualifies with its own event after the publication.
      ['c', 'entered', null, true, 'event'],
    ])
    expect(f.engine.coverage('big_buyer')).toEqual([{ value: true, users: 3 }])
    expect(f.engine.testingCoverage('big_buyer')).toEqual([])
    expect(f.engine.stats.definitionPassesCompleted).toBe(2) // the online lane and the testing lane
    await f.catalog!.retire('big_buyer', 'announce', 'tests')
    f.source.push(ev('d', 4, 'purchase'))
    await f.drain()
    expect(
      summary(f.changes.changes, 'big_buyer')
        .slice(3)
        .sort(),
    ).toEqual([
      ['a', 'left', true, null, 'definition v1'],
      ['b', 'left', true, null, 'definition v1'],
      ['c', 'left', true, null, 'definition v1'],
    ])
    expect(f.engine.coverage('big_buyer')).toEqual([])
    expect((await f.engine.history('a')).filter((c) => c.tag === 'big_buyer').map((c) => [c.op, c.cause])).toEqual([
      ['left', { kind: 'definition', version: 1 }],
      ['entered', { kind: 'definition', version: 1 }],
    ])
    await f.close()
  })

  it('silent: members are enrolled and dropped without events; the index follows', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 2 } }, { tags: tagsFile })
    f.source.push(...history())
    await f.drain()
    await f.catalog!.publish('big_buyer', 1, 'silent')
    f.source.push(ev('c', 3, 'purchase'))
    await f.drain()
    expect(summary(f.changes.changes, 'big_buyer')).toEqual([['c', 'entered', null, true, 'event']])
    expect(f.engine.coverage('big_buyer')).toEqual([{ value: true, users: 3 }])
    expect([...(await storedTags(f, 2, 'big_buyer')).keys()].sort()).toEqual(['a', 'b', 'c'])
    await f.catalog!.retire('big_buyer', 'silent')
    f.source.push(ev('a', 4, 'purchase'))
    await f.drain()
    expect(summary(f.changes.changes, 'big_buyer')).toHaveLength(1)
    expect(f.engine.coverage('big_buyer')).toEqual([])
    expect((await storedTags(f, 2, 'big_buyer')).size).toBe(0)
    await f.close()
  })

  it('tells the lifecycle hooks when a pass starts and when the passes are done (progress, logs)', async () => {
    const events: string[] = []
    const f = await createFixture(operators(), { engine: { partitions: 2 } }, {
      tags: tagsFile,
      lifecycle: {
        definitionPassStarted: (p) => events.push(`started ${p.lane} v${p.version} ${p.mode}`),
        definitionPassesFinished: () => events.push(`finished, ${f.engine.stats.usersReevaluated} users`),
      },
    })
    f.source.push(...history())
    await f.drain()
    await f.catalog!.publish('big_buyer', 1, 'silent')
    await f.drain()
    expect(events).toEqual(['started big_buyer v1 silent', 'started big_buyer~testing vnull silent', 'finished, 6 users'])
    expect(f.engine.definitionPasses()).toEqual([])
    await f.close()
  })

  it('a new version that gives members the same value changes no tag, only the version their profile shows', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 2 } }, { tags: [strategy('big_buyer', 'purchases.total >= 2')] })
    f.source.push(...history())
    await f.drain()
    const before = f.changes.changes.length
    const v1 = f.catalog!.get('big_buyer')
    await f.catalog!.define({ ...strategy('big_buyer', 'purchases.total > 1'), status: undefined, version: v1.version })
    await f.catalog!.transition('big_buyer', 2, 'testing')
    await f.catalog!.publish('big_buyer', 2, 'announce')
    await f.drain()
    expect(f.changes.changes.slice(before).filter((c) => c.tag === 'big_buyer')).toEqual([])
    expect((await f.engine.profile('a'))?.tags.big_buyer).toMatchObject({ value: true, version: 2 })
    expect((await f.engine.profile('b'))?.tags.big_buyer).toMatchObject({ value: true, version: 2 })
    await f.close()
  })

  it('a publication the engine had not applied when it stopped is applied at the next start', async () => {
    let f = await createFixture(operators(), { engine: { partitions: 2 } }, { tags: tagsFile })
    f.source.push(...history())
    await f.drain()
    await f.catalog!.publish('big_buyer', 1, 'announce')
    f = await f.reopen() // the catalog holds v1 online; the engine's stored definitions do not yet
    await f.drain()
    expect(summary(f.changes.changes, 'big_buyer').sort()).toEqual([
      ['a', 'entered', null, true, 'definition v1'],
      ['b', 'entered', null, true, 'definition v1'],
    ])
    await f.close()
  })

  it('a new version published while events stream in gives the tags of a replay with it from the start', async () => {
    const records = [...generateWorkload({ seed: 5, users: 300, events: 9000, days: 40, invalidRatio: 0 })].map((r) => encodeNdjsonLine(r).subarray(0, -1))
    const v1 = strategy('loyal_local', 'purchases.total >= 2')
    const v2Rule = 'purchases.total >= 3 && attributes.city in ["Berlin", "Hamburg", "Munich"]'
    const small = { engine: { partitions: 3, batchSize: 150, commitEvents: 600 }, rescore: { chunkUsers: 20 } }

    const live = await createFixture(operators(), small, { tags: [v1] })
    live.source.push(...records.slice(0, 5000))
    await live.drain()
    const { tag: v2 } = await live.catalog!.define({ ...v1, rule: v2Rule, status: undefined, version: 1 })
    expect(v2.version).toBe(2)
    await live.catalog!.transition('loyal_local', 2, 'testing')
    await live.catalog!.publish('loyal_local', 2, 'announce')
    // The rest streams in while the pass walks the stored users, 20 at a time between batches.
    live.source.push(...records.slice(5000))
    await live.drain()
    // define, test and publish came in between two batches: one change of the online lane, one pass.
    expect(live.engine.stats.definitionPassesStarted).toBe(1)
    expect(live.engine.publishing).toBe(false)

    const fresh = await createFixture(operators(), small, { tags: [{ ...v1, rule: v2Rule }] })
    fresh.source.push(...records)
    await fresh.drain()

    const got = await storedTags(live, 3, 'loyal_local')
    const want = await storedTags(fresh, 3, 'loyal_local')
    expect(want.size).toBeGreaterThan(5)
    expect([...got].sort()).toEqual([...want].sort())
    expect(live.engine.coverage('loyal_local')).toEqual(fresh.engine.coverage('loyal_local'))
    // Users caught up by their own events before the pass reached them were announced once, not twice.
    const announced = live.changes.changes.filter((c) => c.tag === 'loyal_local' && c.cause.kind === 'definition')
    expect(new Set(announced.map((c) => c.userId)).size).toBe(announced.length)
    await live.close()
    await fresh.close()
  })
})

describe('journey re-entry policy', () => {
  const statusRule = 'attributes.status == "active"'
  const flips = (user: string, days: number[]) => days.map((d, i) => ev(user, d, 'profile_update', { status: i % 2 === 0 ? 'active' : 'idle' }))

  it('once: a user who leaves and qualifies again stays quiet, and so does its leaving', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 1 } }, { tags: [strategy('active', statusRule, { reentry: { policy: 'once' } })] })
    f.source.push(...flips('u', [0, 1, 2, 3, 40]))
    await f.drain()
    expect(summary(f.changes.changes, 'active')).toEqual([
      ['u', 'entered', null, true, 'event'],
      ['u', 'left', true, null, 'event'],
    ])
    // The membership is true all the same: segments and profiles tell the truth.
    expect(f.engine.coverage('active')).toEqual([{ value: true, users: 1 }])
    expect(f.engine.stats.reentrySuppressed).toEqual({ active: 2 })
    await f.close()
  })

  it('cooldown: a new entered only once the days since the last leaving have passed', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 1 } }, { tags: [strategy('active', statusRule, { reentry: { policy: 'cooldown', days: 10 } })] })
    // enter d0, leave d1, back d5 (quiet: 4 days), leave d6 (quiet), back d20 (14 days after d6: announced)
    f.source.push(...flips('u', [0, 1, 5, 6, 20]))
    await f.drain()
    expect(f.changes.changes.filter((c) => c.tag === 'active').map((c) => [c.op, c.at.slice(0, 10)])).toEqual([
      ['entered', '2024-01-01'],
      ['left', '2024-01-02'],
      ['entered', '2024-01-21'],
    ])
    await f.close()
  })

  it('always: every entry is announced', async () => {
    const f = await createFixture(operators(), { engine: { partitions: 1 } }, { tags: [strategy('active', statusRule)] })
    f.source.push(...flips('u', [0, 1, 2]))
    await f.drain()
    expect(summary(f.changes.changes, 'active').map((c) => c[1])).toEqual(['entered', 'left', 'entered'])
    await f.close()
  })
})

describe('rule preview (dry run)', () => {
  it('counts matches, samples ids and shows the distribution without changing anything', async () => {
    const records = [...generateWorkload({ seed: 9, users: 200, events: 4000, days: 20, invalidRatio: 0 })].map((r) => encodeNdjsonLine(r).subarray(0, -1))
    const f = await createFixture(operators(), { engine: { partitions: 2 } }, { tags: [] })
    f.source.push(...records)
    await f.drain()
    // The truth, from the stored records.
    const totals = new Map<string, number>()
    let stored = 0
    for (let p = 0; p < 2; p++) {
      for await (const rec of f.store.iterateUsers(p)) {
        stored++
        const s = rec.ops.purchases as { total: number } | undefined
        if (s !== undefined) totals.set(rec.u, s.total)
      }
    }
    const matching = [...totals].filter(([, t]) => t >= 3).map(([u]) => u)
    const writesBefore = f.engine.stats.tagChanges
    const preview = await f.engine.preview('purchases.total >= 3', { sample: 5 })
    expect(preview.users).toBe(stored)
    expect(preview.matched).toBe(matching.length)
    expect(preview.sample).toHaveLength(Math.min(5, matching.length))
    for (const u of preview.sample) expect(matching).toContain(u)
    expect(preview.values).toEqual(
      [
        { value: true, users: matching.length },
        { value: false, users: totals.size - matching.length },
      ].sort((a, b) => b.users - a.users),
    )
    expect(preview.errors).toEqual({})
    expect(f.engine.stats.tagChanges).toBe(writesBefore)

    const byCity = await f.engine.preview('attributes.city')
    const cities = await storedTags(f, 2, 'city')
    expect(byCity.matched).toBe(cities.size)
    const top = byCity.values[0]!
    expect(top.users).toBe([...cities.values()].filter((c) => c === top.value).length)

    const err = await f.engine.preview('purchases.totl > 1').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(RuleCompileError)
    expect((err as RuleCompileError).details).toMatchObject({ issues: [{ key: 'rule', code: 'unknown_field', position: { line: 1, column: 11 } }] })
    await f.close()
  })
})
