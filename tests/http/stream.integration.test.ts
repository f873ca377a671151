import { get, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { buildServer, type TagstreamServer } from '../../src/http/server.js'
import { SseSink } from '../../src/sinks/sse-sink.js'
import { FakeEngine, httpConfig, openIngest } from './fake-engine.js'

const change = (seq: number, tag = 'loyalty_tier'): TagChange => ({
  id: `id-${seq}`,
  userId: `u${seq}`,
  tag,
  op: 'entered',
  from: null,
  to: 'gold',
  tagVersion: 1,
  at: '2025-01-01T00:00:00.000Z',
  emittedAt: '2025-01-01T00:00:00.001Z',
  cause: { kind: 'event', eventId: `e${seq}` },
  evidence: {},
  seq,
})

let app: TagstreamServer | undefined
afterEach(async () => {
  await app?.close()
  app = undefined
})

/** Reads server-sent events until `count` tag-change/gap events arrived; returns them and the response. */
function readEvents(port: number, path: string, count: number, headers: Record<string, string> = {}): Promise<{ events: { id?: string; event: string; data: string }[]; res: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, headers }, (res) => {
      let buffer = ''
      const events: { id?: string; event: string; data: string }[] = []
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        buffer += chunk
        let sep: number
        while ((sep = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, sep)
          buffer = buffer.slice(sep + 2)
          const fields = Object.fromEntries(block.split('\n').filter((l) => !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]))
          if (fields.event !== undefined) events.push(fields as { id?: string; event: string; data: string })
          if (events.length >= count) {
            req.destroy()
            resolve({ events, res })
            return
          }
        }
      })
    })
    req.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err)
    })
  })
}

async function start(replayWindow = 3): Promise<{ port: number; sink: SseSink }> {
  const sink = new SseSink({ replayWindow })
  app = buildServer({ engine: new FakeEngine(), ingest: await openIngest(), registry: new Registry(), config: httpConfig(), stream: sink })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { port: (app.server.address() as AddressInfo).port, sink }
}

const waitFor = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5))
}

describe('GET /v1/tag-changes/stream', () => {
  it('pushes changes at flush, filtered by tag, each with its stream position as id', async () => {
    const { port, sink } = await start()
    const reading = readEvents(port, '/v1/tag-changes/stream?tag=loyalty_tier', 2)
    await waitFor(() => sink.subscriberCount === 1)
    sink.write(change(1))
    sink.write(change(2, 'city'))
    sink.write(change(3))
    expect(sink.subscriberCount).toBe(1)
    await sink.flush()
    const { events, res } = await reading
    expect(res.headers['content-type']).toBe('text/event-stream; charset=utf-8')
    expect(events.map((e) => [e.id, e.event, (JSON.parse(e.data) as TagChange).seq])).toEqual([
      ['1', 'tag-change', 1],
      ['3', 'tag-change', 3],
    ])
  })

  it('replays what a client missed after Last-Event-ID, and says gap when it fell out of the window', async () => {
    const { port, sink } = await start(3)
    for (let i = 1; i <= 5; i++) sink.write(change(i))
    await sink.flush() // the window keeps positions 3, 4, 5
    const resumed = await readEvents(port, '/v1/tag-changes/stream', 2, { 'last-event-id': '3' })
    expect(resumed.events.map((e) => e.id)).toEqual(['4', '5'])
    const gap = await readEvents(port, '/v1/tag-changes/stream', 4, { 'last-event-id': '1' })
    expect(gap.events.map((e) => [e.event, e.id])).toEqual([
      ['gap', undefined],
      ['tag-change', '3'],
      ['tag-change', '4'],
      ['tag-change', '5'],
    ])
  })

  it('does not keep the server from closing', async () => {
    const { port, sink } = await start()
    const req = get({ host: '127.0.0.1', port, path: '/v1/tag-changes/stream' })
    req.on('error', () => {})
    await waitFor(() => sink.subscriberCount === 1)
    const started = Date.now()
    await app?.close()
    app = undefined
    expect(Date.now() - started).toBeLessThan(2000)
    expect(sink.subscriberCount).toBe(0)
  })
})
