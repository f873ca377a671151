import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { buildServer, type HttpConfig, type TagstreamServer } from '../../src/http/server.js'
import { createMetrics } from '../../src/metrics/metrics.js'
import type { HttpIngestSource } from '../../src/sources/http-ingest-source.js'
import { FakeEngine, INGEST_TOKEN, READ_TOKEN, T, event, httpConfig, openIngest } from './fake-engine.js'

interface Setup {
  app: TagstreamServer
  engine: FakeEngine
  ingest: HttpIngestSource
  registry: Registry
}

let current: Setup | undefined

async function setup(config: Partial<HttpConfig> = {}, options: { capacity?: number; position?: number } = {}): Promise<Setup> {
  const engine = new FakeEngine()
  const ingest = await openIngest(options.capacity ?? 100, options.position ?? 0)
  const registry = new Registry()
  createMetrics(engine, registry, { ingest, defaultMetrics: false })
  const app = buildServer({ engine, ingest, registry, config: httpConfig(config) })
  await app.ready()
  current = { app, engine, ingest, registry }
  return current
}

afterEach(async () => {
  await current?.app.close()
  current = undefined
})

const ndjson = (...items: unknown[]) => items.map((i) => (typeof i === 'string' ? i : JSON.stringify(i))).join('\n') + '\n'
const post = (app: TagstreamServer, payload: string, contentType = 'application/json', query = '', headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: `/v1/events${query}`, payload, headers: { 'content-type': contentType, ...headers } })

describe('GET /healthz, /readyz', () => {
  it('answers liveness always, readiness only once the engine is ready', async () => {
    const { app, engine } = await setup()
    expect((await app.inject({ url: '/healthz' })).json()).toEqual({ status: 'ok' })
    expect((await app.inject({ url: '/readyz' })).statusCode).toBe(200)
    engine.ready = false
    const notReady = await app.inject({ url: '/readyz' })
    expect(notReady.statusCode).toBe(503)
    expect(notReady.json()).toEqual({ error: { code: 'TS_ERR_NOT_READY', message: 'the engine is not ready' } })
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200)
  })
})

describe('GET /v1/users/:userId', () => {
  const profile = { userId: 'alice', tags: { vip: { value: true, since: '2025-01-01T00:00:00.000Z', version: 2 } }, state: { rfm: { recency: 3 } } }

  it('returns the profile, with asOf passed as epoch ms', async () => {
    const { app, engine } = await setup()
    engine.profiles.set('alice', profile)
    const res = await app.inject({ url: '/v1/users/alice?asOf=2025-02-01T00:00:00Z' })
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual(profile)
    expect(engine.profileCalls).toEqual([['alice', Date.UTC(2025, 1, 1)]])
    await app.inject({ url: '/v1/users/alice' })
    expect(engine.profileCalls[1]).toEqual(['alice', undefined])
  })

  it('answers 404 TS_ERR_NOT_FOUND for an unknown user, 400 for a bad asOf, 503 when not ready', async () => {
    const { app, engine } = await setup()
    const missing = await app.inject({ url: '/v1/users/nobody' })
    expect(missing.statusCode).toBe(404)
    expect(missing.json()).toEqual({ error: { code: 'TS_ERR_NOT_FOUND', message: 'no user "nobody"', details: { userId: 'nobody' } } })
    const badAsOf = await app.inject({ url: '/v1/users/alice?asOf=yesterday' })
    expect(badAsOf.statusCode).toBe(400)
    expect(badAsOf.json().error.code).toBe('TS_ERR_BAD_REQUEST')
    engine.ready = false
    expect((await app.inject({ url: '/v1/users/alice' })).json().error.code).toBe('TS_ERR_NOT_READY')
  })

  it('requires the read token when one is configured', async () => {
    const { app, engine } = await setup({ readToken: READ_TOKEN })
    engine.profiles.set('alice', profile)
    const none = await app.inject({ url: '/v1/users/alice' })
    expect(none.statusCode).toBe(401)
    expect(none.headers['www-authenticate']).toBe('Bearer realm="tagstream"')
    expect(none.json().error.code).toBe('TS_ERR_UNAUTHORIZED')
    const wrong = await app.inject({ url: '/v1/users/alice', headers: { authorization: `Bearer ${INGEST_TOKEN}` } })
    expect(wrong.statusCode).toBe(401)
    expect(engine.profileCalls).toEqual([])
    const ok = await app.inject({ url: '/v1/users/alice', headers: { authorization: `bearer ${READ_TOKEN}` } })
    expect(ok.statusCode).toBe(200)
  })
})

describe('POST /v1/events', () => {
  it('takes an NDJSON batch with mixed events: exact per-event results, only the valid ones queued', async () => {
    const { app, ingest } = await setup({}, { position: 40 })
    const body = ndjson(
      event('e1'),
      '',
      { userId: 'bob', type: 'view', ts: T },
      'not json',
      event('e2', 'bob', { ts: '2025-01-01T10:00:00+02:00' }),
      event('e3', 'carol', { ts: 'soon' }),
      event('e4', 'carol', { properties: [1] }),
      '[1,2]',
      event('e5', 'x'.repeat(65)),
    )
    const res = await post(app, body, 'application/x-ndjson')
    expect(res.statusCode).toBe(202)
    expect(res.json()).toEqual({
      accepted: 2,
      rejected: 6,
      committed: false,
      results: [
        { index: 0, ok: true },
        { index: 1, ok: false, code: 'missing_field', message: 'required field "eventId" is missing or empty' },
        { index: 2, ok: false, code: 'invalid_json', message: expect.stringMatching(/^cannot decode json: /) },
        { index: 3, ok: true },
        { index: 4, ok: false, code: 'invalid_timestamp', message: 'field "ts" is not a valid time: "soon"' },
        { index: 5, ok: false, code: 'wrong_type', message: 'field "properties" must be an object, got array' },
        { index: 6, ok: false, code: 'not_an_object', message: 'record must be an object, got array' },
        { index: 7, ok: false, code: 'field_too_long', message: 'field "userId" is longer than 64' },
      ].map((r, i) => ({ ...r, index: i })),
    })
    const queued = await ingest.poll(100, 0)
    expect(queued?.map((r) => JSON.parse(r.value.toString()).eventId)).toEqual(['e1', 'e2'])
    // Positions continue from where the source was opened (the stored position).
    expect(queued?.map((r) => [r.offset, r.nextOffset])).toEqual([
      [40, 41],
      [41, 42],
    ])
    expect(ingest.stats.invalid).toMatchObject({ missing_field: 1, invalid_json: 1, invalid_timestamp: 1, wrong_type: 1, not_an_object: 1, field_too_long: 1 })
  })

  it('takes a JSON array with mixed events, and a single event object', async () => {
    const { app, ingest } = await setup()
    const res = await post(app, JSON.stringify([event('e1'), 42, null, event('e2', 'bob'), { ...event('e3'), userId: 7 }, event('e4', 'dan', { ts: Date.now() + 2 * 86_400_000 })]))
    expect(res.statusCode).toBe(202)
    const { results, accepted, rejected } = res.json()
    expect([accepted, rejected]).toEqual([2, 4])
    expect(results.map((r: { ok: boolean; code?: string }) => r.code ?? 'ok')).toEqual([
      'ok',
      'not_an_object',
      'not_an_object',
      'ok',
      'wrong_type',
      'timestamp_in_future',
    ])
    expect(results.map((r: { index: number }) => r.index)).toEqual([0, 1, 2, 3, 4, 5])

    const single = await post(app, JSON.stringify(event('e9', 'erin')), 'application/json; charset=utf-8')
    expect(single.statusCode).toBe(202)
    expect(single.json()).toEqual({ accepted: 1, rejected: 0, committed: false, results: [{ index: 0, ok: true }] })
    const invalidSingle = await post(app, JSON.stringify({ eventId: 'e10' }))
    expect(invalidSingle.statusCode).toBe(200)
    expect(invalidSingle.json()).toMatchObject({ accepted: 0, rejected: 1, committed: true, results: [{ index: 0, ok: false, code: 'missing_field' }] })

    const queued = await ingest.poll(100, 0)
    expect(queued?.map((r) => JSON.parse(r.value.toString()))).toEqual([event('e1'), event('e2', 'bob'), event('e9', 'erin')])
  })

  it('answers malformed JSON with 400 TS_ERR_MALFORMED_JSON and queues nothing', async () => {
    const { app, ingest } = await setup()
    for (const body of ['[{"eventId": "e1",', '{"eventId": ', '[1, 2,]']) {
      const res = await post(app, body)
      expect(res.statusCode).toBe(400)
      expect(res.json().error.code).toBe('TS_ERR_MALFORMED_JSON')
      expect(res.json().error.message).toMatch(/^the body is not valid JSON/)
    }
    expect(ingest.queued).toBe(0)
  })

  it('answers an empty body with 400 TS_ERR_BAD_REQUEST, another media type with 415', async () => {
    const { app } = await setup()
    for (const [body, type] of [
      ['', 'application/json'],
      ['  \n', 'application/json'],
      ['\n\n', 'application/x-ndjson'],
    ] as const) {
      const res = await post(app, body, type)
      expect(res.statusCode).toBe(400)
      expect(res.json().error.code).toBe('TS_ERR_BAD_REQUEST')
    }
    const text = await post(app, JSON.stringify(event('e1')), 'text/plain')
    expect(text.statusCode).toBe(415)
    expect(text.json().error.code).toBe('TS_ERR_UNSUPPORTED_MEDIA_TYPE')
  })

  it('answers a body over bodyLimitBytes with 413 TS_ERR_PAYLOAD_TOO_LARGE', async () => {
    const { app, ingest } = await setup({ bodyLimitBytes: 2048 })
    const events = Array.from({ length: 40 }, (_, i) => event(`e${i}`))
    const res = await post(app, ndjson(...events), 'application/x-ndjson')
    expect(res.statusCode).toBe(413)
    expect(res.json()).toEqual({
      error: { code: 'TS_ERR_PAYLOAD_TOO_LARGE', message: 'Request body is too large', details: { cause: 'FST_ERR_CTP_BODY_TOO_LARGE' } },
    })
    expect(ingest.queued).toBe(0)
  })

  it('refuses a whole batch with 429 and Retry-After when the queue is full, and one larger than the queue with 413', async () => {
    const { app, ingest, engine } = await setup({ retryAfterSeconds: 2 }, { capacity: 3 })
    expect((await post(app, ndjson(event('e1'), event('e2')), 'application/x-ndjson')).statusCode).toBe(202)
    const full = await post(app, ndjson(event('e3'), event('e4'), { bad: true }), 'application/x-ndjson')
    expect(full.statusCode).toBe(429)
    expect(full.headers['retry-after']).toBe('2')
    expect(full.json()).toEqual({
      error: { code: 'TS_ERR_SATURATED', message: 'the ingest queue is full; retry later', details: { queued: 2, capacity: 3, events: 2 } },
    })
    expect(ingest.queued).toBe(2)
    // Refused batches do not count their invalid records: the client will send them again.
    expect(ingest.stats.invalid.missing_field).toBe(0)
    const tooLarge = await post(app, ndjson(event('a'), event('b'), event('c'), event('d')), 'application/x-ndjson')
    expect(tooLarge.statusCode).toBe(413)
    expect(tooLarge.json().error.code).toBe('TS_ERR_PAYLOAD_TOO_LARGE')
    // Once the engine has read the queue, the batch fits.
    await engine.drainAndCommit(ingest)
    expect((await post(app, ndjson(event('e3'), event('e4')), 'application/x-ndjson')).statusCode).toBe(202)
    expect(ingest.stats).toMatchObject({ acceptedRecords: 4, refusedRecords: 6 })
  })

  it('with wait=committed, answers 200 once a commit covers the batch', async () => {
    const { app, ingest, engine } = await setup({}, { position: 7 })
    let answered = false
    const pending = post(app, ndjson(event('e1'), event('e2')), 'application/x-ndjson', '?wait=committed').then((res) => {
      answered = true
      return res
    })
    await waitFor(() => ingest.commitWaiters === 1)
    // A commit that does not reach the batch's last record does not answer.
    const first = await ingest.poll(1, 0)
    expect(first?.[0]?.offset).toBe(7)
    engine.commit({ [ingest.name]: 8, other: 1000 })
    await new Promise((r) => setTimeout(r, 20))
    expect(answered).toBe(false)
    await engine.drainAndCommit(ingest)
    const res = await pending
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ accepted: 2, rejected: 0, committed: true, results: [{ index: 0, ok: true }, { index: 1, ok: true }] })
    expect(ingest.commitWaiters).toBe(0)
  })

  it('with wait=committed, answers 202 committed: false when no commit comes in time', async () => {
    const { app, ingest } = await setup({ commitWaitTimeoutMs: 50 })
    const res = await post(app, JSON.stringify(event('e1')), 'application/json', '?wait=committed')
    expect(res.statusCode).toBe(202)
    expect(res.json().committed).toBe(false)
    expect(ingest.commitWaiters).toBe(0)
  })

  it('rejects an unknown wait value with 400 TS_ERR_BAD_REQUEST', async () => {
    const { app } = await setup()
    const res = await post(app, JSON.stringify(event('e1')), 'application/json', '?wait=forever')
    expect(res.statusCode).toBe(400)
    expect(res.json().error).toMatchObject({ code: 'TS_ERR_BAD_REQUEST', details: { issues: [{ path: '/wait' }] } })
  })

  it('requires the ingest token, compared before the body is read', async () => {
    const { app, ingest } = await setup({ ingestToken: INGEST_TOKEN })
    const body = JSON.stringify(event('e1'))
    for (const authorization of [undefined, 'Bearer wrong-token', `Basic ${INGEST_TOKEN}`, `Bearer ${READ_TOKEN}`, 'Bearer']) {
      const res = await post(app, body, 'application/json', '', authorization === undefined ? {} : { authorization })
      expect(res.statusCode).toBe(401)
      expect(res.json().error.code).toBe('TS_ERR_UNAUTHORIZED')
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="tagstream-ingest"/)
    }
    // Refused before parsing: a malformed body is still a 401.
    expect((await post(app, '{', 'application/json', '', { authorization: 'Bearer nope' })).statusCode).toBe(401)
    expect(ingest.queued).toBe(0)
    const ok = await post(app, body, 'application/json', '', { authorization: `Bearer ${INGEST_TOKEN}` })
    expect(ok.statusCode).toBe(202)
    expect(ingest.queued).toBe(1)
  })

  it('answers 503 TS_ERR_NOT_READY once intake has ended; closing the server ends it', async () => {
    const { app, ingest } = await setup()
    await post(app, JSON.stringify(event('e1')))
    await app.close()
    expect(ingest.accepting).toBe(false)
    // What was accepted is still handed to the engine, then the source reports its end.
    expect((await ingest.poll(10, 0))?.length).toBe(1)
    expect(await ingest.poll(10, 0)).toBeNull()

    const other = await setup()
    other.ingest.end()
    const res = await post(other.app, JSON.stringify(event('e1')))
    expect(res.statusCode).toBe(503)
    expect(res.json().error.code).toBe('TS_ERR_NOT_READY')
  })
})

describe('GET /metrics, /openapi.json, errors', () => {
  it('serves the injected registry in the text exposition format', async () => {
    const { app, engine, ingest } = await setup()
    engine.stats.recordsIn = 12
    await post(app, JSON.stringify([event('e1'), {}]))
    const res = await app.inject({ url: '/metrics' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8')
    expect(res.body).toContain('tagstream_events_received_total 12\n')
    expect(res.body).toContain('tagstream_ready 1\n')
    expect(res.body).toContain('tagstream_http_ingest_queued_records 1\n')
    expect(res.body).toContain('tagstream_http_ingest_invalid_total{reason="missing_field"} 1\n')
    expect(ingest.queued).toBe(1)
  })

  it('serves an OpenAPI 3.1 document with a schema and the error shape on every route', async () => {
    const { app } = await setup({ ingestToken: INGEST_TOKEN })
    const res = await app.inject({ url: '/openapi.json' })
    expect(res.statusCode).toBe(200)
    const doc = res.json()
    expect(doc.openapi).toBe('3.1.0')
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['Error', 'InputEvent', 'Profile', 'TagChange']))
    const routes = Object.entries(doc.paths as Record<string, Record<string, { responses: Record<string, unknown>; security?: unknown }>>).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => ({ route: `${method.toUpperCase()} ${path}`, op })),
    )
    expect(routes.map((r) => r.route).sort()).toEqual([
      'GET /healthz',
      'GET /metrics',
      'GET /readyz',
      'GET /v1/tags/{tagId}/coverage',
      'GET /v1/tags/{tagId}/users',
      'GET /v1/users/{userId}',
      'GET /v1/users/{userId}/history',
      'POST /v1/events',
    ])
    for (const { op } of routes) {
      expect(op.responses['4XX']).toEqual({ description: 'Client error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } })
    }
    const ingest = routes.find((r) => r.route === 'POST /v1/events')?.op as { security?: unknown; requestBody?: { content: Record<string, unknown> } }
    expect(ingest.security).toEqual([{ bearerAuth: [] }])
    expect(Object.keys(ingest.requestBody?.content ?? {})).toEqual(['application/json', 'application/x-ndjson'])
    expect((await app.inject({ url: '/docs' })).statusCode).toBe(200)
  })

  it('answers unknown routes with the error shape', async () => {
    const { app } = await setup()
    const res = await app.inject({ url: '/v2/nothing?x=1' })
    expect(res.statusCode).toBe(404)
    expect(res.json()).toEqual({ error: { code: 'TS_ERR_NOT_FOUND', message: 'no route GET /v2/nothing' } })
  })

  it('hides internal failures behind TS_ERR_INTERNAL, and passes core error codes through', async () => {
    const { app, engine } = await setup()
    engine.profile = async () => {
      throw new Error('disk on fire')
    }
    const res = await app.inject({ url: '/v1/users/alice' })
    expect(res.statusCode).toBe(500)
    expect(res.json()).toEqual({ error: { code: 'TS_ERR_INTERNAL', message: 'internal error' } })
    const { TagstreamError, ErrorCodes } = await import('../../src/errors.js')
    engine.profile = async () => {
      throw new TagstreamError(ErrorCodes.STORE_UNAVAILABLE, 'store is closed', { retriable: true })
    }
    const core = await app.inject({ url: '/v1/users/alice' })
    expect(core.statusCode).toBe(503)
    expect(core.json()).toEqual({ error: { code: 'TS_ERR_STORE_UNAVAILABLE', message: 'store is closed' } })
  })
})

async function waitFor(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > until) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 5))
  }
}
