import { spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../src/config/load.js'
import type { Config } from '../../src/config/schema.js'
import { Engine } from '../../src/engine/engine.js'
import { buildServer, type ServiceEngine } from '../../src/http/server.js'
import { createMetrics, type EngineLike } from '../../src/metrics/metrics.js'
import type { Operator } from '../../src/operator-api.js'
import { HttpIngestSource } from '../../src/sources/http-ingest-source.js'
import { Store } from '../../src/store/store.js'
import { CaptureSink } from '../support/engine-fixture.js'
import { INGEST_TOKEN, READ_TOKEN, T, decode, event, httpConfig } from './fake-engine.js'

// The real Engine satisfies the structural interfaces the HTTP surface and the metrics use.
const asService: (e: Engine) => ServiceEngine = (e) => e
const asMetricsEngine: (e: Engine) => EngineLike = (e) => e
void asService
void asMetricsEngine

const counter: Operator<{ n: number }> = {
  name: 'visits',
  tags: [{ id: 'visits', description: 'events seen', category: ['test', 'activity'], valueType: 'number' }],
  initialState: () => ({ n: 0 }),
  onEvent: (state) => ({ n: state.n + 1 }),
  deriveTags: (state) => ({ visits: { value: state.n } }),
}

async function startEngine(dir: string) {
  const { config } = validateConfig({ engine: { partitions: 2, commitIntervalMs: 20, syncWrites: false } })
  if (config === undefined) throw new Error('config')
  const store = await Store.open(join(dir, 'store'))
  const ingest = new HttpIngestSource({ name: 'http', decode, capacity: 1000 })
  const sink = new CaptureSink()
  const engine = new Engine({ config: config as Config, store, operators: [counter], sources: [ingest], sinks: [sink], deadLetters: new CaptureSink() })
  await engine.open()
  return { engine, store, ingest, sink }
}

const promtool = spawnSync('promtool', ['--version']).status === 0

describe('HTTP over a real socket, with the real engine', () => {
  it('ingests with wait=committed, serves the profile and the metrics, and keeps the position across restarts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-http-'))
    const { engine, store, ingest, sink } = await startEngine(dir)
    const registry = new Registry()
    createMetrics(engine, registry, { ingest })
    const app = buildServer({ engine, ingest, registry, config: httpConfig({ ingestToken: INGEST_TOKEN, readToken: READ_TOKEN }) })
    await app.listen({ host: '127.0.0.1', port: 0 })
    const address = app.server.address()
    if (address === null || typeof address === 'string') throw new Error('no address')
    const base = `http://127.0.0.1:${address.port}`
    const running = engine.run({ untilEnd: false })
    try {
      const body = [event('e1'), event('e2'), { eventId: 'e3' }, event('e4', 'bob')].map((e) => JSON.stringify(e)).join('\n')
      const res = await fetch(`${base}/v1/events?wait=committed`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson', authorization: `Bearer ${INGEST_TOKEN}` },
        body,
      })
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({ accepted: 3, rejected: 1, committed: true })
      // Committed means the sinks were flushed first.
      expect(sink.changes.filter((c) => c.userId === 'alice').map((c) => c.to)).toEqual([1, 2])

      const profile = await fetch(`${base}/v1/users/alice?asOf=2025-01-02`, { headers: { authorization: `Bearer ${READ_TOKEN}` } })
      expect(profile.status).toBe(200)
      expect(await profile.json()).toMatchObject({ userId: 'alice', tags: { visits: { value: 2, since: new Date(T).toISOString(), version: 1 } } })

      const unauthorized = await fetch(`${base}/v1/users/alice`)
      expect(unauthorized.status).toBe(401)

      const metrics = await fetch(`${base}/metrics`)
      const text = await metrics.text()
      expect(metrics.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8')
      expect(text).toContain('tagstream_events_received_total 3\n')
      expect(text).toContain('tagstream_http_ingest_records_total{result="accepted"} 3\n')
      expect(text).toContain('tagstream_http_ingest_invalid_total{reason="missing_field"} 1\n')
      expect(text).toContain('tagstream_ready 1\n')
      expect(text).toMatch(/tagstream_watermark_timestamp_seconds\{partition="\d"\} 1735689600\n/)
      if (promtool) {
        const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
        expect(check.stdout + check.stderr).toBe('')
        expect(check.status).toBe(0)
      }
    } finally {
      // Shutdown order: stop intake, let the engine read what was accepted, stop (commits), close.
      await app.close()
      await ingest.drained()
      await engine.stop()
      await running
      await engine.close()
      await store.close()
    }

    const again = await startEngine(dir)
    expect(again.ingest.nextPosition).toBe(3)
    expect(again.ingest.committedPosition).toBe(3)
    await again.engine.close()
    await again.store.close()
  })
})
