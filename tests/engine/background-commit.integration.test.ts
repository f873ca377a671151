import { describe, expect, it } from 'vitest'
import counter from '../../operators/counter.js'
import fact from '../../operators/fact.js'
import lifecycle from '../../operators/lifecycle.js'
import type { TagChange } from '../../src/contracts/tag-change.js'
import type { Engine } from '../../src/engine/engine.js'
import type { TagChangeSink } from '../../src/sinks/sink.js'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { createOperator } from '../operators/harness.js'
import { createFixture, type Fixture } from '../support/engine-fixture.js'

/*
 * The run loop commits in the background: a commit's flush and store write go on while the next
 * batches are applied. These tests make every flush slow (a seeded 0-12 ms), so commits land at
 * arbitrary points of the following batches (between a prefetch and its events, during a timer
 * scan), with a tiny cache (evictions after every landing) and a tiny timer scan limit (a scan per
 * batch). The outcome must be exactly that of an engine whose commits never overlap anything.
 */

const operators = () => [
  createOperator(fact, 'attributes', { attributes: [{ property: 'city' }] }),
  createOperator(counter, 'purchases', { eventTypes: ['purchase'], windowDays: 5, tag: 'purchase_frequency', bands: [{ name: 'occasional', min: 1 }, { name: 'regular', min: 3 }] }),
  createOperator(counter, 'views', { eventTypes: ['view'], windowDays: 2, tag: 'browsing', bands: [{ name: 'browsing', min: 1 }, { name: 'engaged', min: 6 }] }),
  createOperator(lifecycle, 'lifecycle', { purchaseEventTypes: ['purchase'] }),
]

/** A sink whose flush takes a while; counts the events the engine applied while one was pending. */
class SlowSink implements TagChangeSink {
  readonly name = 'slow'
  engine: Engine | undefined
  appliedDuringFlushes = 0
  flushes = 0
  private seed = 12345
  write(_change: TagChange): void {}
  async flush(): Promise<void> {
    this.seed = (this.seed * 1103515245 + 12345) % 2 ** 31
    const before = this.engine?.stats.eventsApplied ?? 0
    this.flushes++
    await new Promise((resolve) => setTimeout(resolve, this.seed % 13))
    this.appliedDuringFlushes += (this.engine?.stats.eventsApplied ?? 0) - before
  }
  async close(): Promise<void> {}
}

async function storedState(f: Fixture, partitions: number): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for (let p = 0; p < partitions; p++) {
    for await (const rec of f.store.iterateUsers(p)) out.set(rec.u, JSON.stringify({ tags: rec.tags, ops: rec.ops, timers: rec.timers, seq: rec.seq }))
  }
  return out
}

const withoutWallTime = (c: TagChange) => JSON.stringify({ ...c, emittedAt: undefined })

describe('background commits', () => {
  it('give exactly the state and the tag changes of commits that hold everything up', async () => {
    const records = [...generateWorkload({ seed: 31, users: 500, events: 12_000, days: 40, invalidRatio: 0 })].map((r) => encodeNdjsonLine(r).subarray(0, -1))

    // Reference: one engine, large cache, a commit every 2,000 events, nothing slow.
    const reference = await createFixture(operators(), { engine: { partitions: 3, batchSize: 500, commitEvents: 2000, commitIntervalMs: 3_600_000 } }, { records })
    await reference.drain()
    const expectedChanges = reference.changes.changes.map(withoutWallTime).sort()
    const expectedState = await storedState(reference, 3)
    await reference.close()

    const slow = new SlowSink()
    // Commits as often as the loop turns, small batches, 40 cached users, a timer scan every batch.
    const f = await createFixture(
      operators(),
      { engine: { partitions: 3, batchSize: 50, commitEvents: 100, commitIntervalMs: 1, cacheMaxUsers: 40 } },
      { records, sinks: [slow], timerScanLimit: 4 },
    )
    slow.engine = f.engine
    await f.drain()
    expect(f.engine.stats.timersFired).toBe(reference.engine.stats.timersFired)
    expect(f.changes.changes.map(withoutWallTime).sort()).toEqual(expectedChanges)
    expect(await storedState(f, 3)).toEqual(expectedState)
    // The commits did overlap the work behind them (with commits that hold everything up: 0).
    expect(slow.flushes).toBeGreaterThan(50)
    expect(slow.appliedDuringFlushes).toBeGreaterThan(100)
    await f.close()
  }, 120_000)

  it('a restart after background commits resumes exactly at the last landed one', async () => {
    const records = [...generateWorkload({ seed: 32, users: 300, events: 6000, days: 20, invalidRatio: 0 })].map((r) => encodeNdjsonLine(r).subarray(0, -1))
    const reference = await createFixture(operators(), { engine: { partitions: 2 } }, { records })
    await reference.drain()
    const expectedIds = reference.changes.changes.map((c) => c.id).sort()
    const expectedState = await storedState(reference, 2)
    await reference.close()

    const slow = new SlowSink()
    let f = await createFixture(operators(), { engine: { partitions: 2, batchSize: 64, commitEvents: 128, commitIntervalMs: 1, cacheMaxUsers: 30 } }, { sinks: [slow], timerScanLimit: 8 })
    slow.engine = f.engine
    const ids: string[] = []
    for (let part = 0; part < 3; part++) {
      f.source.push(...records.slice(part * 2000, (part + 1) * 2000))
      await f.drain()
      ids.push(...f.changes.changes.map((c) => c.id))
      if (part < 2) {
        f = await f.reopen()
        slow.engine = f.engine
      }
    }
    expect(ids.sort()).toEqual(expectedIds)
    expect(await storedState(f, 2)).toEqual(expectedState)
    await f.close()
  }, 120_000)
})
