import { describe, expect, it } from 'vitest'
import { HttpIngestSource } from '../../src/sources/http-ingest-source.js'
import { FakeEngine, decode, openIngest } from './fake-engine.js'

const rec = (s: string) => Buffer.from(s)

describe('HttpIngestSource', () => {
  it('numbers records from the stored position on, and continues the count after a restart', async () => {
    const engine = new FakeEngine()
    const first = await openIngest(10, 0)
    first.attach(engine)
    expect(first.offer([rec('a'), rec('b')])).toEqual({ accepted: true, firstPosition: 0, lastPosition: 1 })
    expect(first.offer([rec('c')])).toEqual({ accepted: true, firstPosition: 2, lastPosition: 2 })
    const records = await first.poll(10, 0)
    expect(records?.map((r) => [r.value.toString(), r.offset, r.nextOffset])).toEqual([
      ['a', 0, 1],
      ['b', 1, 2],
      ['c', 2, 3],
    ])
    // The engine stores the last record's nextOffset as the source position; a new process opens there.
    const second = await openIngest(10, 3)
    expect(second.offer([rec('d')])).toEqual({ accepted: true, firstPosition: 3, lastPosition: 3 })
    expect(second.committedPosition).toBe(3)
    await second.waitCommitted(2) // already committed before the restart
  })

  it('takes a whole batch or nothing', async () => {
    const source = await openIngest(3)
    expect(source.offer([rec('a'), rec('b')]).accepted).toBe(true)
    expect(source.offer([rec('c'), rec('d')])).toEqual({ accepted: false, reason: 'full', queued: 2, capacity: 3 })
    expect(source.offer([rec('1'), rec('2'), rec('3'), rec('4')])).toMatchObject({ accepted: false, reason: 'too_large' })
    expect(source.queued).toBe(2)
    expect(source.offer([rec('c')])).toEqual({ accepted: true, firstPosition: 2, lastPosition: 2 })
    expect(source.stats).toMatchObject({ acceptedRecords: 3, refusedRecords: 6 })
  })

  it('poll waits on a promise: wakes when records arrive, answers [] after waitMs', async () => {
    const source = await openIngest()
    const started = Date.now()
    const waiting = source.poll(10, 5_000)
    setTimeout(() => source.offer([rec('a')]), 20)
    const records = await waiting
    expect(records?.map((r) => r.value.toString())).toEqual(['a'])
    expect(Date.now() - started).toBeLessThan(1_000)

    const t0 = Date.now()
    expect(await source.poll(10, 50)).toEqual([])
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45)
    expect(await source.poll(10, 0)).toEqual([])
  })

  it('poll honours max and keeps the order', async () => {
    const source = await openIngest(10_000)
    source.offer(Array.from({ length: 5000 }, (_, i) => rec(String(i))))
    const seen: number[] = []
    for (;;) {
      const batch = await source.poll(1024, 0)
      if (batch === null || batch.length === 0) break
      expect(batch.length).toBeLessThanOrEqual(1024)
      seen.push(...batch.map((r) => r.offset))
    }
    expect(seen).toEqual(Array.from({ length: 5000 }, (_, i) => i))
  })

  it('resolves waitCommitted from the engine commits, in position order, and honours abort signals', async () => {
    const engine = new FakeEngine()
    const source = await openIngest(10, 100)
    source.attach(engine)
    source.attach(engine) // idempotent
    source.offer([rec('a'), rec('b'), rec('c')])
    const done: number[] = []
    const wait = (p: number) => source.waitCommitted(p).then(() => done.push(p))
    const all = Promise.all([wait(102), wait(100), wait(101)])
    const aborter = new AbortController()
    const aborted = source.waitCommitted(102, aborter.signal)
    expect(source.commitWaiters).toBe(4)
    aborter.abort(new Error('gone'))
    await expect(aborted).rejects.toThrow('gone')
    expect(source.commitWaiters).toBe(3)

    engine.commit({ other: 500 })
    engine.commit({ http: 101 }) // nextOffset 101: position 100 is committed
    await Promise.resolve()
    await Promise.resolve()
    expect(done).toEqual([100])
    engine.commit({ http: 103 })
    await all
    expect(done).toEqual([100, 101, 102])
    expect(source.commitWaiters).toBe(0)
  })

  it('end() stops intake and lets the engine drain; close() fails the waiters', async () => {
    const source = await openIngest()
    source.offer([rec('a')])
    const drained = source.drained()
    const polling = source.poll(10, 10_000)
    source.end()
    expect(source.accepting).toBe(false)
    expect(source.offer([rec('b')])).toMatchObject({ accepted: false, reason: 'closed' })
    expect((await polling)?.length).toBe(1)
    await drained
    expect(await source.poll(10, 10_000)).toBeNull()

    const other = await openIngest()
    other.offer([rec('a')])
    const waiting = other.waitCommitted(0)
    const idle = new HttpIngestSource({ name: 'idle', decode, capacity: 1 })
    await idle.open(0)
    const idlePoll = idle.poll(10, 10_000)
    await Promise.all([other.close(), idle.close()])
    await expect(waiting).rejects.toMatchObject({ code: 'TS_ERR_ENGINE_STATE', retriable: true })
    expect(await idlePoll).toBeNull()
  })

  it('refuses offers before open', () => {
    const source = new HttpIngestSource({ name: 'http', decode, capacity: 1 })
    expect(source.offer([rec('a')])).toMatchObject({ accepted: false, reason: 'closed' })
    expect(() => new HttpIngestSource({ name: 'http', decode, capacity: 0 })).toThrow(RangeError)
  })
})
