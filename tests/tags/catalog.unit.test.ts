import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { afterEach, describe, expect, it } from 'vitest'
import { isTagstreamError } from '../../src/errors.js'
import type { RuleValidator, TagDefinitionInput } from '../../src/tags/catalog-schema.js'
import {
  CATALOG_RANGE,
  LevelCatalogStorage,
  MemoryCatalogStorage,
  TAG_TRANSITIONS,
  TagCatalog,
  TagErrorCodes,
  catalogKey,
  type CatalogChange,
  type TagCatalogOptions,
} from '../../src/tags/catalog.js'

const T0 = Date.parse('2024-05-01T10:00:00.000Z')
const iso = (n: number) => new Date(T0 + n * 1000).toISOString()

/** A clock that moves one second per reading: every timestamp is distinct and predictable. */
function ticking(): () => number {
  let n = 0
  return () => T0 + n++ * 1000
}

function def(over: Partial<TagDefinitionInput> = {}): TagDefinitionInput {
  return {
    id: 'high_value_at_risk',
    name: 'High value at risk',
    description: 'Spent a lot, gone silent',
    owner: 'retention',
    category: ['value', 'customer', 'retention'],
    kind: 'strategy',
    valueType: 'boolean',
    rule: 'rfm.monetary90d >= 1000.0 && lifecycle.stage == "silent"',
    ...over,
  }
}

async function given(options: TagCatalogOptions = {}): Promise<TagCatalog> {
  return TagCatalog.open(new MemoryCatalogStorage(), { now: ticking(), ...options })
}

/** The refusal an operation ends with, as JSON (code, message, details). */
async function refusal(p: Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await p
  } catch (err) {
    expect(isTagstreamError(err)).toBe(true)
    return (err as { toJSON(): Record<string, unknown> }).toJSON()
  }
  throw new Error('expected a refusal')
}

/** Given a catalog with version 1 of the tag in `status`. */
async function withStatus(status: 'draft' | 'testing' | 'online' | 'offline'): Promise<TagCatalog> {
  const c = await given()
  await c.define(def())
  if (status === 'draft') return c
  await c.transition('high_value_at_risk', 1, 'testing')
  if (status === 'testing') return c
  await c.publish('high_value_at_risk', 1, 'announce')
  if (status === 'online') return c
  await c.retire('high_value_at_risk', 'silent')
  return c
}

describe('define', () => {
  it('creates version 1 as a draft with timestamps and the default re-entry policy', async () => {
    const c = await given()
    const r = await c.define(def())
    expect(r.outcome).toBe('created')
    expect(r.tag).toEqual({
      ...def(),
      reentry: { policy: 'always' },
      version: 1,
      status: 'draft',
      createdAt: iso(0),
      updatedAt: iso(0),
      transitions: [],
    })
    expect(c.get('high_value_at_risk')).toEqual(r.tag)
  })

  it('edits a draft in place, keeping createdAt', async () => {
    const c = await given()
    await c.define(def())
    const r = await c.define(def({ description: 'Whales gone quiet' }))
    expect(r.outcome).toBe('updated')
    expect(r.tag.version).toBe(1)
    expect(r.tag.description).toBe('Whales gone quiet')
    expect([r.tag.createdAt, r.tag.updatedAt]).toEqual([iso(0), iso(1)])
    expect(c.versions('high_value_at_risk')).toHaveLength(1)
  })

  it('makes a changed definition of a non-draft version into version + 1 and keeps every version', async () => {
    const c = await withStatus('online')
    const r = await c.define(def({ rule: 'rfm.monetary90d >= 2000.0' }))
    expect(r.outcome).toBe('versioned')
    expect([r.tag.version, r.tag.status]).toEqual([2, 'draft'])
    expect(c.versions('high_value_at_risk').map((v) => [v.version, v.status, v.rule])).toEqual([
      [1, 'online', 'rfm.monetary90d >= 1000.0 && lifecycle.stage == "silent"'],
      [2, 'draft', 'rfm.monetary90d >= 2000.0'],
    ])
    // The current version is the online one; the draft is reachable by number.
    expect(c.get('high_value_at_risk').version).toBe(1)
    expect(c.get('high_value_at_risk', 2).rule).toBe('rfm.monetary90d >= 2000.0')
  })

  it('leaves an unchanged definition alone', async () => {
    const c = await withStatus('online')
    const r = await c.define(def())
    expect([r.outcome, r.tag.version]).toEqual(['unchanged', 1])
    expect(c.versions('high_value_at_risk')).toHaveLength(1)
  })

  it('refuses an edit based on a version that is not the latest', async () => {
    const c = await withStatus('online')
    await c.define(def({ rule: 'true' }))
    const e = await refusal(c.define(def({ version: 1, rule: 'false' })))
    expect(e.code).toBe(TagErrorCodes.TAG_VERSION_CONFLICT)
    expect([e.id, e.expected, e.latest]).toEqual(['high_value_at_risk', 1, 2])
    expect((await c.define(def({ version: 2, rule: 'false' }))).outcome).toBe('updated')
  })

  it('refuses a version for a tag that does not exist', async () => {
    const c = await given()
    const e = await refusal(c.define(def({ version: 3 })))
    expect([e.code, e.latest]).toEqual([TagErrorCodes.TAG_VERSION_CONFLICT, null])
  })

  it('refuses invalid definitions with issues that point at the field', async () => {
    const c = await given()
    const cases: [unknown, { key: string; message: string }[]][] = [
      [def({ id: '9lives' }), [{ key: 'id', message: "Expected string to match '^[A-Za-z][A-Za-z0-9_]*$'" }]],
      [def({ category: ['value'] }), [{ key: 'category', message: 'Expected array length to be greater or equal to 2' }]],
      [def({ category: ['value', 'customer', 'a', 'b'] }), [{ key: 'category', message: 'Expected array length to be less or equal to 3' }]],
      [def({ category: ['value', 'has/slash'] }), [{ key: 'category[1]', message: "Expected string to match '^[A-Za-z0-9][A-Za-z0-9_-]*$'" }]],
      [def({ rule: undefined }), [{ key: 'rule', message: 'a strategy tag needs a rule' }]],
      [def({ kind: 'model' }), [{ key: 'rule', message: 'a model tag is derived by an operator and takes no rule' }]],
      [def({ status: 'online' }), [{ key: 'status', message: 'status changes through transition, publish and retire' }]],
      [{ ...def(), colour: 'red' }, [{ key: 'colour', message: 'Unexpected property' }]],
    ]
    for (const [input, issues] of cases) {
      const e = await refusal(c.define(input))
      expect(e.code).toBe(TagErrorCodes.TAG_INVALID)
      expect(e.issues).toEqual(issues)
    }
    expect(c.has('high_value_at_risk')).toBe(false)
  })

  it('refuses a change of kind between versions', async () => {
    const c = await withStatus('online')
    const e = await refusal(c.define(def({ kind: 'fact', rule: undefined })))
    expect(e.issues).toEqual([{ key: 'kind', message: 'the kind of a tag cannot change (it is strategy)' }])
  })

  it('reports rule errors at their position in the expression', async () => {
    const validateRule: RuleValidator = (rule) => {
      const offset = rule.indexOf('&&&')
      return offset < 0 ? [] : [{ line: 1, column: offset + 1, offset, message: "unexpected token '&'" }]
    }
    const c = await given({ validateRule })
    const e = await refusal(c.define(def({ rule: 'a >= 1 &&& b' })))
    expect(e.issues).toEqual([{ key: 'rule', message: "unexpected token '&' (line 1, column 8)", position: { line: 1, column: 8, offset: 7 } }])
    expect((await c.define(def({ rule: 'a >= 1 && b' }))).outcome).toBe('created')
  })
})

describe('re-entry policy', () => {
  it('accepts always, a cool-down in days, and once', async () => {
    const c = await given()
    expect((await c.define(def({ id: 'a', reentry: { policy: 'always' } }))).tag.reentry).toEqual({ policy: 'always' })
    expect((await c.define(def({ id: 'b', reentry: { policy: 'cooldown', days: 30 } }))).tag.reentry).toEqual({ policy: 'cooldown', days: 30 })
    expect((await c.define(def({ id: 'c', reentry: { policy: 'once' } }))).tag.reentry).toEqual({ policy: 'once' })
  })

  it('refuses a cool-down without days or with days out of range, days on other policies, and unknown policies', async () => {
    const c = await given()
    const issuesOf = async (reentry: unknown) => (await refusal(c.define({ ...def(), reentry }))).issues
    expect(await issuesOf({ policy: 'cooldown' })).toEqual([{ key: 'reentry.days', message: 'Expected required property' }, { key: 'reentry.days', message: 'Expected integer' }])
    expect(await issuesOf({ policy: 'cooldown', days: 0 })).toEqual([{ key: 'reentry.days', message: 'Expected integer to be greater or equal to 1' }])
    expect(await issuesOf({ policy: 'once', days: 3 })).toEqual([{ key: 'reentry.days', message: 'Unexpected property' }])
    expect(await issuesOf({ policy: 'sometimes' })).toEqual([{ key: 'reentry', message: 'unknown policy "sometimes" (always, cooldown or once)' }])
  })

  it('makes a changed policy a new version of a published tag', async () => {
    const c = await withStatus('online')
    const r = await c.define(def({ reentry: { policy: 'once' } }))
    expect([r.outcome, r.tag.version, r.tag.reentry]).toEqual(['versioned', 2, { policy: 'once' }])
  })
})

describe('lifecycle', () => {
  it('allows exactly the documented transitions', () => {
    expect(TAG_TRANSITIONS).toEqual({
      draft: ['testing'],
      testing: ['draft', 'online', 'offline'],
      online: ['offline'],
      offline: ['online'],
    })
  })

  it('draft -> testing -> draft -> testing -> online -> offline -> online, each recorded', async () => {
    const c = await given()
    await c.define(def()) // t0
    await c.transition('high_value_at_risk', 1, 'testing', { by: 'ann' }) // t1
    await c.transition('high_value_at_risk', 1, 'draft') // t2
    await c.transition('high_value_at_risk', 1, 'testing') // t3
    await c.publish('high_value_at_risk', 1, 'announce', 'bob') // t4
    await c.retire('high_value_at_risk', 'silent', 'carl') // t5
    const v = await c.transition('high_value_at_risk', 1, 'online', { mode: 'silent' }) // t6
    expect(v.status).toBe('online')
    expect(v.publishedBy).toBe('bob')
    expect(v.transitions).toEqual([
      { from: 'draft', to: 'testing', at: iso(1), by: 'ann' },
      { from: 'testing', to: 'draft', at: iso(2) },
      { from: 'draft', to: 'testing', at: iso(3) },
      { from: 'testing', to: 'online', at: iso(4), by: 'bob', mode: 'announce' },
      { from: 'online', to: 'offline', at: iso(5), by: 'carl', mode: 'silent' },
      { from: 'offline', to: 'online', at: iso(6), mode: 'silent' },
    ])
    expect(v.updatedAt).toBe(iso(6))
  })

  it('testing -> offline abandons a version without publishing it', async () => {
    const c = await withStatus('testing')
    expect((await c.transition('high_value_at_risk', 1, 'offline')).status).toBe('offline')
  })

  const refused: ['draft' | 'testing' | 'online' | 'offline', 'draft' | 'testing' | 'online' | 'offline'][] = [
    ['draft', 'online'],
    ['draft', 'offline'],
    ['draft', 'draft'],
    ['testing', 'testing'],
    ['online', 'testing'],
    ['online', 'draft'],
    ['online', 'online'],
    ['offline', 'draft'],
    ['offline', 'testing'],
    ['offline', 'offline'],
  ]
  for (const [from, to] of refused) {
    it(`refuses ${from} -> ${to}`, async () => {
      const c = await withStatus(from)
      const e = await refusal(c.transition('high_value_at_risk', 1, to, { mode: 'silent' }))
      expect(e.code).toBe(TagErrorCodes.TAG_TRANSITION)
      expect([e.id, e.version, e.from, e.to, e.allowed]).toEqual(['high_value_at_risk', 1, from, to, TAG_TRANSITIONS[from]])
      expect(c.get('high_value_at_risk', 1).status).toBe(from)
    })
  }

  it('refuses going online or offline from online without a mode', async () => {
    const testing = await withStatus('testing')
    const e1 = await refusal(testing.transition('high_value_at_risk', 1, 'online'))
    expect([e1.code, e1.issues]).toEqual([TagErrorCodes.TAG_INVALID, [{ key: 'mode', message: 'announce (members get events with cause definition) or silent' }]])
    const online = await withStatus('online')
    const e2 = await refusal(online.transition('high_value_at_risk', 1, 'offline'))
    expect(e2.code).toBe(TagErrorCodes.TAG_INVALID)
  })

  it('refuses testing -> draft of a version with a newer one', async () => {
    const c = await withStatus('online')
    await c.define(def({ rule: 'true' })) // v2 draft
    await c.transition('high_value_at_risk', 2, 'testing')
    await c.define(def({ rule: 'false' })) // v3 draft
    const e = await refusal(c.transition('high_value_at_risk', 2, 'draft'))
    expect([e.code, e.latest]).toEqual([TagErrorCodes.TAG_TRANSITION, 3])
  })

  it('refuses unknown tags and versions', async () => {
    const c = await withStatus('draft')
    const e1 = await refusal(c.transition('nope', 1, 'testing'))
    expect([e1.code, e1.id]).toEqual([TagErrorCodes.TAG_NOT_FOUND, 'nope'])
    const e2 = await refusal(c.publish('high_value_at_risk', 7, 'announce'))
    expect([e2.code, e2.version]).toEqual([TagErrorCodes.TAG_NOT_FOUND, 7])
    expect(() => c.get('nope')).toThrowError(/no tag "nope"/)
    expect(() => c.versions('nope')).toThrowError(/no tag "nope"/)
    const e3 = await refusal(c.retire('nope', 'silent'))
    expect(e3.code).toBe(TagErrorCodes.TAG_NOT_FOUND)
  })

  it('refuses to retire a tag with no online version', async () => {
    const c = await withStatus('testing')
    const e = await refusal(c.retire('high_value_at_risk', 'announce'))
    expect([e.code, e.message]).toEqual([TagErrorCodes.TAG_TRANSITION, 'tag "high_value_at_risk" has no online version to retire'])
  })

  it('publishing a version takes the version online before it offline, superseded', async () => {
    const c = await withStatus('online')
    await c.define(def({ rule: 'true' }))
    await c.transition('high_value_at_risk', 2, 'testing')
    await c.publish('high_value_at_risk', 2, 'silent', 'dora')
    const [v1, v2] = c.versions('high_value_at_risk')
    expect(v1?.status).toBe('offline')
    expect(v1?.transitions.at(-1)).toEqual({ from: 'online', to: 'offline', at: v2?.updatedAt, supersededBy: 2, by: 'dora', mode: 'silent' })
    expect([v2?.status, v2?.publishedBy]).toEqual(['online', 'dora'])
    expect(c.evaluated().online.map((v) => v.version)).toEqual([2])
    // Roll back: version 1 again.
    await c.publish('high_value_at_risk', 1, 'announce')
    expect(c.versions('high_value_at_risk').map((v) => v.status)).toEqual(['online', 'offline'])
  })

  it('re-checks the rule when a version starts being evaluated', async () => {
    let strict = false
    const c = await given({ validateRule: () => (strict ? [{ line: 1, column: 1, offset: 0, message: 'unknown field rfm' }] : []) })
    await c.define(def())
    strict = true
    const e = await refusal(c.transition('high_value_at_risk', 1, 'testing'))
    expect(e.issues).toEqual([{ key: 'rule', message: 'unknown field rfm (line 1, column 1)', position: { line: 1, column: 1, offset: 0 } }])
  })
})

describe('change listener', () => {
  it('is told of every stored change, with the publication mode and the superseded version', async () => {
    const c = await given()
    const seen: string[] = []
    const off = c.onChange((ch: CatalogChange) => {
      if (ch.type === 'defined') seen.push(`defined ${ch.tag.id}@${ch.tag.version}${ch.previous ? ' (edit)' : ''}`)
      else if (ch.type === 'status') seen.push(`${ch.tag.id}@${ch.tag.version} ${ch.from}->${ch.to} ${ch.mode ?? '-'} ${ch.supersedes ? `supersedes @${ch.supersedes.version}` : ''}`.trim())
      else seen.push(`loaded ${ch.tags.length}`)
    })
    await c.define(def())
    await c.define(def({ description: 'edited' }))
    await c.define(def({ description: 'edited' })) // unchanged: no event
    await c.transition('high_value_at_risk', 1, 'testing')
    await c.publish('high_value_at_risk', 1, 'announce')
    await c.define(def({ rule: 'true' }))
    await c.transition('high_value_at_risk', 2, 'testing')
    await c.publish('high_value_at_risk', 2, 'silent')
    await c.retire('high_value_at_risk', 'announce')
    await refusal(c.retire('high_value_at_risk', 'announce')) // refused: no event
    off()
    await c.define(def({ id: 'other' }))
    expect(seen).toEqual([
      'defined high_value_at_risk@1',
      'defined high_value_at_risk@1 (edit)',
      'high_value_at_risk@1 draft->testing -',
      'high_value_at_risk@1 testing->online announce',
      'defined high_value_at_risk@2',
      'high_value_at_risk@2 draft->testing -',
      'high_value_at_risk@2 testing->online silent supersedes @1',
      'high_value_at_risk@2 online->offline announce',
    ])
  })

  it('a failing listener does not undo the stored change', async () => {
    const errors: unknown[] = []
    const c = await given({ onListenerError: (err) => errors.push(err) })
    c.onChange(() => {
      throw new Error('boom')
    })
    await c.define(def())
    expect(c.has('high_value_at_risk')).toBe(true)
    expect(errors.map((e) => (e as Error).message)).toEqual(['boom'])
  })
})

describe('list, tree and lint', () => {
  async function populated(): Promise<TagCatalog> {
    const c = await given()
    await c.define(def({ id: 's1', category: ['value', 'rfm'] }))
    await c.define(def({ id: 'f1', kind: 'fact', rule: undefined, category: ['profile', 'attrs', 'geo'] }))
    await c.define(def({ id: 'f2', kind: 'fact', rule: undefined, category: ['profile', 'attrs', 'geo'] }))
    await c.define(def({ id: 'f3', kind: 'fact', rule: undefined, category: ['profile', 'attrs', 'geo'] }))
    await c.define(def({ id: 'm1', kind: 'model', rule: undefined, category: ['value', 'rfm', 'segment'] }))
    await c.transition('m1', 1, 'testing')
    return c
  }

  it('filters by category prefix, status and kind', async () => {
    const c = await populated()
    expect(c.list().map((t) => t.id)).toEqual(['f1', 'f2', 'f3', 'm1', 's1'])
    expect(c.list({ category: 'value/rfm' }).map((t) => t.id)).toEqual(['m1', 's1'])
    expect(c.list({ category: ['profile', 'attrs', 'geo'] }).map((t) => t.id)).toEqual(['f1', 'f2', 'f3'])
    expect(c.list({ status: 'testing' }).map((t) => t.id)).toEqual(['m1'])
    expect(c.list({ kind: 'fact', category: 'value' })).toEqual([])
    expect(c.evaluated()).toEqual({ online: [], testing: [c.get('m1')] })
  })

  it('builds the category tree with counts and warns about small leaves', async () => {
    const c = await populated()
    expect(c.tree()).toEqual([
      {
        name: 'profile',
        path: ['profile'],
        count: 3,
        tags: [],
        children: [
          { name: 'attrs', path: ['profile', 'attrs'], count: 3, tags: [], children: [{ name: 'geo', path: ['profile', 'attrs', 'geo'], count: 3, tags: ['f1', 'f2', 'f3'], children: [] }] },
        ],
      },
      {
        name: 'value',
        path: ['value'],
        count: 2,
        tags: [],
        children: [
          {
            name: 'rfm',
            path: ['value', 'rfm'],
            count: 2,
            tags: ['s1'],
            children: [{ name: 'segment', path: ['value', 'rfm', 'segment'], count: 1, tags: ['m1'], children: [] }],
          },
        ],
      },
    ])
    expect(c.lint()).toEqual([
      { key: 'category value/rfm', message: 'leaf category has 1 tag; 3 to 20 per leaf keep the tree useful' },
      { key: 'category value/rfm/segment', message: 'leaf category has 1 tag; 3 to 20 per leaf keep the tree useful' },
    ])
  })

  it('warns about leaves with more than 20 tags', async () => {
    const c = await given()
    for (let i = 0; i < 21; i++) await c.define(def({ id: `t${i}`, category: ['big', 'leaf'] }))
    expect(c.lint()).toEqual([{ key: 'category big/leaf', message: 'leaf category has 21 tags; 3 to 20 per leaf keep the tree useful' }])
  })
})

describe('tags file', () => {
  const dirs: string[] = []
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })
  function tmp(): string {
    const d = mkdtempSync(join(tmpdir(), 'tagstream-catalog-'))
    dirs.push(d)
    return d
  }

  it('loads the shipped config/tags.yaml: every default tag, online, in a lint-clean tree', async () => {
    const c = await given()
    const report = await c.loadFile(join(import.meta.dirname, '../../config/tags.yaml'))
    expect(report.warnings).toEqual([])
    expect(report.inserted.map((t) => t.id).sort()).toEqual([
      'browsing_activity',
      'city',
      'high_value_at_risk',
      'lifecycle_stage',
      'loyalty_tier',
      'membership_level',
      'preferred_category',
      'purchase_frequency',
      'rfm_score',
      'rfm_segment',
      'rfm_value_segment',
      'vip_frequent_buyer',
    ])
    expect(c.get('high_value_at_risk')).toMatchObject({
      kind: 'strategy',
      rule: 'rfm.monetary90d >= 1000.0 && lifecycle.stage == "silent"',
      reentry: { policy: 'cooldown', days: 30 },
      status: 'online',
      publishedBy: join(import.meta.dirname, '../../config/tags.yaml'),
    })
    expect(c.list({ kind: 'strategy' }).map((t) => [t.id, t.status])).toEqual([
      ['high_value_at_risk', 'online'],
      ['vip_frequent_buyer', 'testing'],
    ])
    expect(c.tree().map((n) => [n.name, n.count])).toEqual([
      ['behaviour', 3],
      ['profile', 3],
      ['value', 6],
    ])
    expect(c.lint()).toEqual([])
  })

  it('points at the key of every invalid entry and loads nothing', async () => {
    const c = await given()
    const raw = {
      tags: [
        def({ id: 'a' }),
        def({ id: 'b', status: 'online' }),
        def({ id: 'a' }),
        def({ id: 'c', category: ['x'] }),
        { ...def({ id: 'd' }), reentry: { policy: 'cooldown', days: -1 } },
        def({ id: 'e', kind: 'fact' }),
        def({ id: 'b', version: 2, status: 'online' }),
        def({ id: 'b', version: 3, kind: 'model', rule: undefined }),
      ],
    }
    const e = await refusal(c.loadDefinitions(raw, 'tags.yaml'))
    expect(e.code).toBe(TagErrorCodes.TAG_INVALID)
    expect(e.file).toBe('tags.yaml')
    expect(e.issues).toEqual([
      { key: 'tags[2].version', message: 'version 1 of "a" is defined twice' },
      { key: 'tags[3].category', message: 'Expected array length to be greater or equal to 2' },
      { key: 'tags[4].reentry.days', message: 'Expected integer to be greater or equal to 1' },
      { key: 'tags[5].rule', message: 'a fact tag is derived by an operator and takes no rule' },
      { key: 'tags[6].status', message: 'another version of "b" is online in this file' },
      { key: 'tags[7].kind', message: 'the kind of a tag cannot change (it is strategy)' },
    ])
    expect(c.list()).toEqual([])
  })

  it('refuses a file that is not a tags: list, and reports unreadable YAML', async () => {
    const c = await given()
    expect((await refusal(c.loadDefinitions({ tag: [] }))).issues).toEqual([{ key: 'tag', message: 'Unexpected property' }])
    expect((await refusal(c.loadDefinitions({ tags: 'x' }))).issues).toEqual([{ key: 'tags', message: 'Expected array' }])
    const path = join(tmp(), 'tags.yaml')
    writeFileSync(path, 'tags:\n  - id: [unclosed\n')
    const e = await refusal(c.loadFile(path))
    expect(e.code).toBe('TS_ERR_CONFIG_UNREADABLE')
    expect(String(e.message)).toMatch(/tags file .* cannot be read at line \d/)
  })

  it('merges with stored versions: the file wins for drafts, published and newer stored versions are kept', async () => {
    const storage = new MemoryCatalogStorage()
    const c = await TagCatalog.open(storage, { now: ticking() })
    await c.define(def({ id: 'drafty', description: 'stored draft' }))
    await c.define(def({ id: 'pub' }))
    await c.transition('pub', 1, 'testing')
    await c.publish('pub', 1, 'announce')
    await c.define(def({ id: 'pub', rule: 'true' })) // v2 draft, only in the store
    const report = await c.loadDefinitions({
      tags: [
        def({ id: 'drafty', description: 'file draft' }),
        def({ id: 'pub', description: 'file edit of a published version' }),
        def({ id: 'fresh', status: 'testing' }),
      ],
    })
    expect(report.inserted.map((t) => `${t.id}@${t.version} ${t.status}`)).toEqual(['fresh@1 testing'])
    expect(report.replaced.map((t) => `${t.id}@${t.version} ${t.description}`)).toEqual(['drafty@1 file draft'])
    expect(report.warnings).toEqual([{ key: 'tags[1]', message: 'version 1 of "pub" is stored as online and kept; define a new version to change it' }])
    expect(c.versions('pub').map((v) => `${v.version} ${v.status} ${v.description}`)).toEqual(['1 online Spent a lot, gone silent', '2 draft Spent a lot, gone silent'])
    // Reopening from the same storage gives the merged catalog.
    const again = await TagCatalog.open(storage)
    expect(again.list().map((t) => `${t.id}@${t.version} ${t.status}`)).toEqual(['drafty@1 draft', 'fresh@1 testing', 'pub@1 online'])
    expect(again.get('fresh').transitions).toEqual([{ from: 'draft', to: 'testing', at: again.get('fresh').createdAt, by: 'config/tags.yaml' }])
  })

  it('an online version from the file supersedes an older stored online one', async () => {
    const c = await withStatus('online')
    await c.loadDefinitions({ tags: [def({ version: 2, rule: 'true', status: 'online' })] })
    expect(c.versions('high_value_at_risk').map((v) => [v.version, v.status])).toEqual([
      [1, 'offline'],
      [2, 'online'],
    ])
    expect(c.get('high_value_at_risk', 1).transitions.at(-1)).toMatchObject({ from: 'online', to: 'offline', supersededBy: 2, by: 'config/tags.yaml' })
  })
})

describe('LevelDB storage', () => {
  let dir: string | undefined
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
    dir = undefined
  })

  it('round-trips every version under g!cat!<id>!<version 8 digits>', async () => {
    dir = mkdtempSync(join(tmpdir(), 'tagstream-catalog-level-'))
    const db = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' })
    await db.open()
    await db.put('g!meta', Buffer.from('x')) // other keys of the store are not the catalog's
    await db.put('p0000!u!someone', Buffer.from('y'))
    const c = await TagCatalog.open(new LevelCatalogStorage(db), { now: ticking() })
    await c.define(def())
    await c.transition('high_value_at_risk', 1, 'testing')
    await c.publish('high_value_at_risk', 1, 'announce', 'eve')
    await c.define(def({ rule: 'true', reentry: { policy: 'cooldown', days: 7 } }))
    await c.transition('high_value_at_risk', 2, 'testing')
    await c.publish('high_value_at_risk', 2, 'silent') // one batch: v2 online, v1 offline
    await c.define(def({ id: 'a_b', kind: 'fact', rule: undefined }))
    expect(await db.keys({ ...CATALOG_RANGE }).all()).toEqual([catalogKey('a_b', 1), 'g!cat!high_value_at_risk!00000001', 'g!cat!high_value_at_risk!00000002'])
    const before = [...c.versions('high_value_at_risk'), ...c.versions('a_b')]
    await db.close()

    const reopened = new ClassicLevel<string, Buffer>(dir, { keyEncoding: 'utf8', valueEncoding: 'buffer' })
    await reopened.open()
    const again = await TagCatalog.open(new LevelCatalogStorage(reopened))
    expect([...again.versions('high_value_at_risk'), ...again.versions('a_b')]).toEqual(before)
    expect(again.get('high_value_at_risk', 2).reentry).toEqual({ policy: 'cooldown', days: 7 })
    expect(again.get('high_value_at_risk', 1).transitions.map((t) => `${t.from}->${t.to} ${t.mode ?? ''}`.trim())).toEqual([
      'draft->testing',
      'testing->online announce',
      'online->offline silent',
    ])
    expect(again.list().map((t) => t.id)).toEqual(['a_b', 'high_value_at_risk'])
    await reopened.close()
  })
})
