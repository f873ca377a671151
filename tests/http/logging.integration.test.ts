import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { buildServer, type TagstreamServer } from '../../src/http/server.js'
import { createLogger, type LogLevel } from '../../src/log.js'
import { createMetrics } from '../../src/metrics/metrics.js'
import { FakeEngine, READ_TOKEN, httpConfig, openIngest } from './fake-engine.js'

let app: TagstreamServer | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

/** A server logging through the process's logger (a child tagged http), its lines captured. */
async function setup(level: LogLevel): Promise<{ app: TagstreamServer; engine: FakeEngine; lines: Record<string, unknown>[] }> {
  const lines: Record<string, unknown>[] = []
  const logger = createLogger({ level, destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } })
  const engine = new FakeEngine()
  const ingest = await openIngest()
  const registry = new Registry()
  createMetrics(engine, registry, { ingest, defaultMetrics: false })
  app = buildServer({ engine, ingest, registry, config: httpConfig({ readToken: READ_TOKEN }), logger: logger.child({ component: 'http' }) })
  await app.ready()
  return { app, engine, lines }
}

describe('fastify logs through the process logger', () => {
  it('at info: no line per request, refusals included; a server error is logged with its request', async () => {
    const { app, engine, lines } = await setup('info')
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200)
    expect((await app.inject({ url: '/nope' })).statusCode).toBe(404)
    expect((await app.inject({ url: '/v1/users/alice' })).statusCode).toBe(401)
    expect(lines).toEqual([])
    engine.profile = async () => {
      throw new Error('store exploded')
    }
    const res = await app.inject({ url: '/v1/users/alice', headers: { authorization: `Bearer ${READ_TOKEN}` } })
    expect(res.statusCode).toBe(500)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toEqual(
      expect.objectContaining({ level: 'error', component: 'http', method: 'GET', url: '/v1/users/alice', msg: 'request failed' }),
    )
    expect((lines[0] as { err: { message: string } }).err.message).toBe('store exploded')
    // Without request lines, requests share the server's logger: no request id is bound.
    expect(lines[0]).not.toHaveProperty('reqId')
  })

  it('at debug: each request gets its own id, an incoming line and a completed line with status and time', async () => {
    const { app, lines } = await setup('debug')
    await app.inject({ url: '/healthz' })
    await app.inject({ url: '/v1/users/alice' })
    const requests = lines.filter((l) => l.msg === 'incoming request' || l.msg === 'request completed' || l.msg === 'request refused')
    expect(requests.map((l) => [l.level, l.msg])).toEqual([
      ['debug', 'incoming request'],
      ['debug', 'request completed'],
      ['debug', 'incoming request'],
      ['debug', 'request refused'],
      ['debug', 'request completed'],
    ])
    expect(requests.every((l) => l.component === 'http')).toBe(true)
    expect(requests[0]?.reqId).toBe(requests[1]?.reqId)
    expect(requests[2]?.reqId).not.toBe(requests[0]?.reqId)
    expect((requests[1] as { res: { statusCode: number } }).res.statusCode).toBe(200)
    expect(typeof requests[1]?.responseTime).toBe('number')
    expect(requests[3]).toEqual(expect.objectContaining({ statusCode: 401, code: 'TS_ERR_UNAUTHORIZED' }))
  })
})
