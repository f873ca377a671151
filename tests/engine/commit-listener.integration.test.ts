import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../src/config/load.js'
import { Engine } from '../../src/engine/engine.js'
import type { DerivedTags, Operator } from '../../src/operator-api.js'
import { Store } from '../../src/store/store.js'
import { CaptureSink, createFixture } from '../support/engine-fixture.js'
import { ScriptedPartitions } from '../support/scripted-partitions.js'

const T0 = Date.UTC(2024, 0, 1)
const partitionOf = (event: object): number => Number((event as { userId: string }).userId.slice(1)) % 2

const visits: Operator<{ n: number }> = {
  name: 'visits',
  tags: [{ id: 'regular', description: 'three visits or more', category: ['test'], valueType: 'boolean' }],
  initialState: () => ({ n: 0 }),
  onEvent: (s) => ({ n: s.n + 1 }),
  deriveTags: (s): DerivedTags => (s.n >= 3 ? { regular: { value: true, evidence: { visits: s.n } } } : {}),
}

function events(count: number): object[] {
  // Many users per batch: most events wait for their user's record to be read from the store.
  return Array.from({ length: count }, (_, i) => ({ eventId: `e${i}`, userId: `u${(i * 7919) % 400}`, type: 'view', ts: T0 + i * 1000, properties: {} }))
}

describe('commit listeners', () => {
  it('get the partition offsets a commit holds, never ahead of the records the engine has handled', async () => {
    const store = await Store.open(join(mkdtempSync(join(tmpdir(), 'ts-commits-')), 'store'))
    const { config } = validateConfig({ engine: { partitions: 2, commitEvents: 40, batchSize: 16, cacheMaxUsers: 50 } })
    const source = new ScriptedPartitions(partitionOf)
    const engine = new Engine({ config: config!, store, operators: [visits as Operator], sources: [source], sinks: [new CaptureSink()], deadLetters: new CaptureSink() })
    await engine.open()
    const input = events(2000)
    source.assign([0, 1]).push(input)
    // Offsets of each partition's records, in order (the scripted source numbers records across partitions).
    const offsetsOf = new Map<number, number[]>([[0, []], [1, []]])
    input.forEach((e, offset) => offsetsOf.get(partitionOf(e))?.push(offset))

    const landings: { held: number; handled: number }[] = []
    engine.onCommitted((_positions, partitionOffsets) => {
      if (partitionOffsets === undefined) return
      let held = 0
      for (const [p, byTopic] of partitionOffsets) {
        const next = byTopic.get('events') ?? 0
        held += (offsetsOf.get(p) ?? []).filter((o) => o < next).length
      }
      const s = engine.stats
      landings.push({ held, handled: s.eventsApplied + s.duplicates + Object.values(s.invalid).reduce((a, b) => a + b, 0) })
    })
    await engine.run({ untilEnd: true })
    await engine.close()
    await store.close()

    // Most commits here land while a batch waits for its users' records (read, not yet handled).
    expect(landings.length).toBeGreaterThan(10)
    for (const l of landings) expect(l.held).toBeLessThanOrEqual(l.handled)
    // The last commit holds every record.
    expect(landings[landings.length - 1]?.held).toBe(2000)
    expect(engine.stats.eventsApplied).toBe(2000)
  })

  it('come as soon as the engine has read everything its sources have, not at the interval', async () => {
    // An interval far beyond the test: only a caught-up engine's commit can land in time.
    const fx = await createFixture([visits as Operator], { engine: { commitIntervalMs: 600_000 } })
    const landed: number[] = []
    let onLanding: (() => void) | undefined
    fx.engine.onCommitted(() => {
      landed.push(fx.engine.stats.eventsApplied)
      onLanding?.()
    })
    const nextCommit = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no commit within 5 s (commits so far after ${landed.join(', ')} events)`)), 5000)
        onLanding = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    const running = fx.engine.run({ untilEnd: false })
    const visit = (i: number) => ({ eventId: `q${i}`, userId: 'u1', type: 'view', ts: T0 + i * 1000, properties: {} })

    let commit = nextCommit()
    fx.source.push(visit(1), visit(2), visit(3))
    await commit
    // The change is in the sinks (flushed by the commit) and the state holds all three visits.
    expect(landed).toEqual([3])
    expect(fx.changes.changes.map((c) => [c.tag, c.op, c.to])).toEqual([['regular', 'entered', true]])
    expect((await fx.engine.profile('u1'))?.state.visits).toEqual({ n: 3 })

    // Quiet again: nothing new to commit, so no commit either.
    await new Promise((r) => setTimeout(r, 300))
    expect(landed).toEqual([3])

    commit = nextCommit()
    fx.source.push(visit(4))
    await commit
    expect(landed).toEqual([3, 4])

    await fx.engine.stop()
    await running
    await fx.close()
  })
})
