import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import counter from '../../operators/counter.js'
import fact from '../../operators/fact.js'
import { buildServer, type TagstreamServer } from '../../src/http/server.js'
import { DAY_MS } from '../../src/operator-api.js'
import { createOperator } from '../operators/harness.js'
import { createFixture, type Fixture } from '../support/engine-fixture.js'
import { httpConfig, openIngest, READ_TOKEN } from './fake-engine.js'

const MANAGE_TOKEN = 'manage-token-0123456789abcdef'
const T0 = Date.UTC(2024, 0, 1)

const operators = () => [
  createOperator(fact, 'attributes', { attributes: [{ property: 'city' }] }),
  createOperator(counter, 'purchases', { eventTypes: ['purchase'], windowDays: 30, tag: 'purchase_frequency', bands: [{ name: 'occasional', min: 1 }] }),
]

const definition = {
  name: 'Big buyer',
  description: 'Two purchases or more',
  owner: 'growth',
  category: ['value', 'customer', 'rules'],
  kind: 'strategy',
  valueType: 'boolean',
  rule: 'purchases.total >= 2',
}

let app: TagstreamServer | undefined
let fixture: Fixture | undefined
afterEach(async () => {
  await app?.close()
  await fixture?.close()
  app = undefined
  fixture = undefined
})

async function setup(tokens: { manageToken?: string; readToken?: string } = {}) {
  let n = 0
  const f = await createFixture(operators(), { engine: { partitions: 2 } }, { tags: [] })
  for (const [user, purchases] of [['a', 3], ['b', 2], ['c', 1]] as const) {
    for (let i = 0; i < purchases; i++) f.source.push({ eventId: `e${++n}`, userId: user, type: 'purchase', ts: T0 + n * DAY_MS, properties: {} })
  }
  await f.drain()
  fixture = f
  app = buildServer({ engine: f.engine, ingest: await openIngest(), registry: new Registry(), catalog: f.catalog!, config: httpConfig(tokens) })
  await app.ready()
  return { app, f }
}

const manage = { authorization: `Bearer ${MANAGE_TOKEN}` }

describe('tag management routes', () => {
  it('define, test, publish with announce, read coverage, retire: the whole lifecycle over HTTP', async () => {
    const { app, f } = await setup()
    const created = await app.inject({ method: 'PUT', url: '/v1/tags/big_buyer', payload: definition })
    expect(created.statusCode).toBe(201)
    expect(created.json().tag).toMatchObject({ id: 'big_buyer', version: 1, status: 'draft' })

    const tested = await app.inject({ method: 'POST', url: '/v1/tags/big_buyer/transition', payload: { version: 1, to: 'testing' } })
    expect(tested.statusCode).toBe(200)
    await f.drain()
    expect((await app.inject({ url: '/v1/tags/big_buyer' })).json().testingCoverage).toEqual({ users: 2, values: [{ value: true, users: 2 }] })

    const published = await app.inject({ method: 'POST', url: '/v1/tags/big_buyer/publish', payload: { version: 1, mode: 'announce', by: 'ana' } })
    expect(published.statusCode).toBe(200)
    expect(published.json().tag).toMatchObject({ status: 'online', publishedBy: 'ana' })
    await f.drain()
    const detail = (await app.inject({ url: '/v1/tags/big_buyer' })).json()
    expect(detail.coverage).toEqual({ users: 2, values: [{ value: true, users: 2 }] })
    expect(detail.versions.map((v: { version: number; status: string }) => [v.version, v.status])).toEqual([[1, 'online']])
    expect(detail.passes).toEqual([])
    expect(f.changes.changes.filter((c) => c.tag === 'big_buyer').map((c) => [c.userId, c.op, c.cause.kind]).sort()).toEqual([
      ['a', 'entered', 'definition'],
      ['b', 'entered', 'definition'],
    ])
    const members = (await app.inject({ url: '/v1/tags/big_buyer/users' })).json()
    expect(members.users.map((u: { userId: string }) => u.userId).sort()).toEqual(['a', 'b'])

    const list = (await app.inject({ url: '/v1/tags?category=value/customer' })).json()
    expect(list.tags.map((t: { id: string; users: number }) => [t.id, t.users])).toEqual([['big_buyer', 2]])
    expect(list.tree[0]).toMatchObject({ name: 'value', count: 1 })

    const retired = await app.inject({ method: 'POST', url: '/v1/tags/big_buyer/retire', payload: { mode: 'silent' } })
    expect(retired.statusCode).toBe(200)
    await f.drain()
    expect((await app.inject({ url: '/v1/tags/big_buyer' })).json().coverage).toEqual({ users: 0, values: [] })
  })

  it('refuses a rule that does not compile with its position, and a bad transition with 409', async () => {
    const { app } = await setup()
    const bad = await app.inject({ method: 'PUT', url: '/v1/tags/broken', payload: { ...definition, rule: 'purchases.total >= "2"' } })
    expect(bad.statusCode).toBe(400)
    const body = bad.json()
    expect(body.error.code).toBe('TS_ERR_TAG_INVALID')
    expect(body.error.details.issues[0]).toMatchObject({ key: 'rule', position: { line: 1, column: 1 } })
    const unknown = await app.inject({ method: 'PUT', url: '/v1/tags/broken', payload: { ...definition, rule: 'purchases.totl >= 2' } })
    expect(unknown.json().error.details.issues[0]).toMatchObject({ key: 'rule', position: { line: 1, column: 11 } })

    await app.inject({ method: 'PUT', url: '/v1/tags/big_buyer', payload: definition })
    const early = await app.inject({ method: 'POST', url: '/v1/tags/big_buyer/publish', payload: { version: 1, mode: 'announce' } })
    expect(early.statusCode).toBe(409)
    expect(early.json().error.code).toBe('TS_ERR_TAG_TRANSITION')
    const stale = await app.inject({ method: 'PUT', url: '/v1/tags/big_buyer', payload: { ...definition, description: 'edited', version: 7 } })
    expect(stale.statusCode).toBe(409)
    expect(stale.json().error.code).toBe('TS_ERR_TAG_VERSION_CONFLICT')
    const missing = await app.inject({ url: '/v1/tags/nope' })
    expect(missing.statusCode).toBe(404)
    expect(missing.json().error.code).toBe('TS_ERR_TAG_NOT_FOUND')
  })

  it('previews a candidate rule without changing anything', async () => {
    const { app, f } = await setup()
    const res = await app.inject({ method: 'POST', url: '/v1/tags/preview', payload: { rule: 'purchases.total', sample: 10 } })
    expect(res.statusCode).toBe(200)
    const body = res.json()
    expect(body).toMatchObject({ resultType: 'int', users: 3, matched: 3, errors: {} })
    expect(body.values).toEqual([
      { value: 1, users: 1 },
      { value: 2, users: 1 },
      { value: 3, users: 1 },
    ])
    expect(body.sample.sort()).toEqual(['a', 'b', 'c'])
    const bad = await app.inject({ method: 'POST', url: '/v1/tags/preview', payload: { rule: 'purchases.total >' } })
    expect(bad.statusCode).toBe(400)
    expect(bad.json().error.code).toBe('TS_ERR_TAG_INVALID')
    expect(f.engine.stats.tagChanges).toBe(3) // purchase_frequency of a, b, c only
  })

  it('management needs the manage token; reads the read token', async () => {
    const { app } = await setup({ manageToken: MANAGE_TOKEN, readToken: READ_TOKEN })
    const refused = await app.inject({ method: 'PUT', url: '/v1/tags/big_buyer', payload: definition })
    expect(refused.statusCode).toBe(401)
    expect(refused.json().error.code).toBe('TS_ERR_UNAUTHORIZED')
    const wrong = await app.inject({ method: 'PUT', url: '/v1/tags/big_buyer', payload: definition, headers: { authorization: `Bearer ${READ_TOKEN}` } })
    expect(wrong.statusCode).toBe(401)
    expect((await app.inject({ method: 'PUT', url: '/v1/tags/big_buyer', payload: definition, headers: manage })).statusCode).toBe(201)
    expect((await app.inject({ url: '/v1/tags' })).statusCode).toBe(401)
    expect((await app.inject({ url: '/v1/tags', headers: { authorization: `Bearer ${READ_TOKEN}` } })).statusCode).toBe(200)
    expect((await app.inject({ method: 'POST', url: '/v1/tags/preview', payload: { rule: 'true' } })).statusCode).toBe(401)
  })

  it('is in the OpenAPI document', async () => {
    const { app } = await setup()
    const doc = (await app.inject({ url: '/openapi.json' })).json()
    for (const [path, method] of [
      ['/v1/tags', 'get'],
      ['/v1/tags/{tagId}', 'get'],
      ['/v1/tags/{tagId}', 'put'],
      ['/v1/tags/{tagId}/publish', 'post'],
      ['/v1/tags/{tagId}/retire', 'post'],
      ['/v1/tags/{tagId}/transition', 'post'],
      ['/v1/tags/preview', 'post'],
    ] as const) {
      expect(doc.paths[path]?.[method], `${method} ${path}`).toBeDefined()
    }
  })
})
