import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../src/config/load.js'
import { Engine } from '../../src/engine/engine.js'
import type { DerivedTags, Operator } from '../../src/operator-api.js'
import { Store } from '../../src/store/store.js'
import { CaptureSink } from '../support/engine-fixture.js'
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
})
