import { describe, expect, it } from 'vitest'
import counter from '../../operators/counter.js'
import fact from '../../operators/fact.js'
import type { TagValue } from '../../src/contracts/tag-change.js'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { createOperator } from '../operators/harness.js'
import { createFixture, type Fixture } from '../support/engine-fixture.js'

const operators = () => [
  createOperator(fact, 'attributes', { attributes: [{ property: 'city' }, { property: 'membership_level' }] }),
  createOperator(counter, 'purchases', { eventTypes: ['purchase'], windowDays: 7, tag: 'purchase_frequency', bands: [{ name: 'occasional', min: 1 }, { name: 'regular', min: 3 }] }),
]

/** Every (tag, value) -> users, straight from the stored user records. */
async function scan(f: Fixture, partitions: number): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>()
  for (let p = 0; p < partitions; p++) {
    for await (const rec of f.store.iterateUsers(p)) {
      for (const [tag, [value]] of Object.entries(rec.tags)) {
        const k = `${tag}=${JSON.stringify(value)}`
        if (!out.has(k)) out.set(k, new Set())
        out.get(k)!.add(rec.u)
      }
    }
  }
  return out
}

async function allPages(f: Fixture, tag: string, value?: TagValue): Promise<string[]> {
  const users: string[] = []
  let cursor: string | undefined
  do {
    const page = await f.engine.members(tag, { ...(value !== undefined ? { value } : {}), ...(cursor ? { cursor } : {}), limit: 7 })
    users.push(...page.users.map((u) => u.userId))
    cursor = page.cursor
  } while (cursor !== undefined)
  return users
}

describe('segment membership index', () => {
  it('equals a full scan of the stored tags after a random workload with restarts', async () => {
    const records = [...generateWorkload({ seed: 8, users: 400, events: 12_000, days: 30, invalidRatio: 0 })].map((r) => encodeNdjsonLine(r).subarray(0, -1))
    let f = await createFixture(operators(), { engine: { partitions: 3, commitEvents: 700 } })
    // Restart four times along the way: the index and counts must survive each one.
    for (let part = 0; part < 5; part++) {
      f.source.push(...records.slice(part * 2400, (part + 1) * 2400))
      await f.drain()
      if (part < 4) f = await f.reopen()
    }
    const truth = await scan(f, 3)
    expect(truth.size).toBeGreaterThan(10)
    for (const tag of ['city', 'membership_level', 'purchase_frequency']) {
      const values = [...truth.keys()].filter((k) => k.startsWith(`${tag}=`))
      const coverage = f.engine.coverage(tag)
      expect(coverage.map((c) => `${tag}=${JSON.stringify(c.value)}:${c.users}`).sort()).toEqual(values.map((k) => `${k}:${truth.get(k)!.size}`).sort())
      let all = 0
      for (const k of values) {
        const value = JSON.parse(k.slice(tag.length + 1)) as TagValue
        const members = await allPages(f, tag, value)
        expect(new Set(members).size).toBe(members.length)
        expect([...members].sort()).toEqual([...truth.get(k)!].sort())
        all += members.length
      }
      expect((await allPages(f, tag)).length).toBe(all)
    }
    await f.close()
  })

  it('keeps values with ! and % apart from the user id, and 1 apart from "1"', async () => {
    const f = await createFixture([createOperator(fact, 'attributes', { attributes: [{ property: 'code' }, { property: 'n', valueType: 'number' }] })])
    const ev = (id: string, user: string, props: Record<string, unknown>) => ({ eventId: id, userId: user, type: 'x', ts: Date.UTC(2024, 0, 1), properties: props })
    f.source.push(ev('1', 'a!b', { code: 'x!%21y', n: 1 }), ev('2', 'c', { code: '1' }), ev('3', 'd', { code: 'x!%21y' }))
    await f.drain()
    expect((await f.engine.members('code', { value: 'x!%21y' })).users.map((u) => u.userId).sort()).toEqual(['a!b', 'd'])
    expect((await f.engine.members('code', { value: '1' })).users).toEqual([{ userId: 'c', value: '1' }])
    expect((await f.engine.members('n', { value: 1 })).users).toEqual([{ userId: 'a!b', value: 1 }])
    expect(f.engine.coverage('code')).toEqual([{ value: 'x!%21y', users: 2 }, { value: '1', users: 1 }])
    await f.close()
  })
})
