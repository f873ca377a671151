import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { buildServer, type TagstreamServer } from '../../src/http/server.js'
import { FakeEngine, READ_TOKEN, httpConfig, openIngest } from './fake-engine.js'

let app: TagstreamServer | undefined
afterEach(async () => {
  await app?.close()
  app = undefined
})

async function setup(readToken?: string): Promise<{ app: TagstreamServer; engine: FakeEngine }> {
  const engine = new FakeEngine()
  engine.memberships.set('loyalty_tier', [
    { userId: 'u1', value: 'gold' },
    { userId: 'u2', value: 'gold' },
    { userId: 'u3', value: 'silver' },
  ])
  engine.memberships.set('orders', [
    { userId: 'u1', value: 3 },
    { userId: 'u4', value: 30 },
  ])
  app = buildServer({ engine, ingest: await openIngest(), registry: new Registry(), config: httpConfig(readToken ? { readToken } : {}) })
  await app.ready()
  return { app, engine }
}

describe('tag and history routes', () => {
  it('GET /v1/tags/:tagId/coverage counts users per value', async () => {
    const { app } = await setup()
    const res = await app.inject({ url: '/v1/tags/loyalty_tier/coverage' })
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ tag: 'loyalty_tier', users: 3, values: [{ value: 'gold', users: 2 }, { value: 'silver', users: 1 }] })
  })

  it('GET /v1/tags/:tagId/users pages with a cursor and resolves typed values from text', async () => {
    const { app } = await setup()
    const first = (await app.inject({ url: '/v1/tags/loyalty_tier/users?limit=2' })).json()
    expect(first).toEqual({ tag: 'loyalty_tier', users: [{ userId: 'u1', value: 'gold' }, { userId: 'u2', value: 'gold' }], cursor: '2' })
    const second = (await app.inject({ url: `/v1/tags/loyalty_tier/users?limit=2&cursor=${first.cursor}` })).json()
    expect(second).toEqual({ tag: 'loyalty_tier', users: [{ userId: 'u3', value: 'silver' }] })
    expect((await app.inject({ url: '/v1/tags/loyalty_tier/users?value=silver' })).json().users).toEqual([{ userId: 'u3', value: 'silver' }])
    // "30" in a query string means the number 30 when the tag holds numbers.
    expect((await app.inject({ url: '/v1/tags/orders/users?value=30' })).json().users).toEqual([{ userId: 'u4', value: 30 }])
    const bad = await app.inject({ url: '/v1/tags/loyalty_tier/users?cursor=abc' })
    expect(bad.statusCode).toBe(400)
    expect(bad.json().error.code).toBe('TS_ERR_BAD_REQUEST')
  })

  it('GET /v1/users/:userId/history returns the stored changes, newest first', async () => {
    const { app, engine } = await setup()
    const change: TagChange = {
      id: 'abc',
      userId: 'u1',
      tag: 'loyalty_tier',
      op: 'changed',
      from: 'silver',
      to: 'gold',
      tagVersion: 1,
      at: '2025-01-01T00:00:00.000Z',
      emittedAt: '2025-01-01T00:00:00.010Z',
      cause: { kind: 'event', eventId: 'e9' },
      evidence: { points: 2100 },
      seq: 7,
    }
    engine.histories.set('u1', [change])
    expect((await app.inject({ url: '/v1/users/u1/history' })).json()).toEqual({ userId: 'u1', changes: [change] })
    expect((await app.inject({ url: '/v1/users/nobody/history' })).json()).toEqual({ userId: 'nobody', changes: [] })
  })

  it('refuses reads without the read token when one is set', async () => {
    const { app } = await setup(READ_TOKEN)
    expect((await app.inject({ url: '/v1/tags/loyalty_tier/coverage' })).statusCode).toBe(401)
    expect((await app.inject({ url: '/v1/users/u1/history', headers: { authorization: `Bearer ${READ_TOKEN}` } })).statusCode).toBe(200)
  })
})
