import { describe, expect, it } from 'vitest'
import { murmur2, partitionFor } from '../../src/engine/partitioner.js'
import { TimerHeap } from '../../src/engine/timer-heap.js'

describe('partitioner', () => {
  it("matches Kafka's Java murmur2", () => {
    // Utils.murmur2("anji".getBytes()) in kafka-clients
    expect(murmur2(new TextEncoder().encode('anji'))).toBe(2124191072)
  })

  it('routes every user to one partition, spread evenly', () => {
    const counts = [0, 0, 0, 0]
    for (let i = 0; i < 40_000; i++) {
      const p = partitionFor(`u${i}`, 4)
      expect(partitionFor(`u${i}`, 4)).toBe(p)
      counts[p]!++
    }
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500)
    expect(partitionFor('anyone', 1)).toBe(0)
  })
})

describe('timer heap', () => {
  it('pops in (due, user, timer) order', () => {
    const heap = new TimerHeap()
    const entries = [] as { due: number; userId: string; timer: string }[]
    let seed = 7
    for (let i = 0; i < 500; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      entries.push({ due: seed % 50, userId: `u${seed % 13}`, timer: `t${seed % 3}` })
    }
    for (const e of entries) heap.push(e)
    const popped = []
    while (heap.size > 0) popped.push(heap.pop())
    const sorted = [...entries].sort((a, b) => a.due - b.due || (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0) || (a.timer < b.timer ? -1 : a.timer > b.timer ? 1 : 0))
    expect(popped.map((e) => [e?.due, e?.userId, e?.timer])).toEqual(sorted.map((e) => [e.due, e.userId, e.timer]))
  })
})

describe('timer heap forEachDue', () => {
  it('visits exactly the entries due at or before the bound', () => {
    const heap = new TimerHeap()
    for (let i = 0; i < 300; i++) heap.push({ due: (i * 37) % 101, userId: `u${i}`, timer: 't' })
    const seen: string[] = []
    heap.forEachDue(40, (e) => seen.push(e.userId))
    const expected = [...Array(300).keys()].filter((i) => (i * 37) % 101 <= 40).map((i) => `u${i}`)
    expect(seen.sort()).toEqual(expected.sort())
  })
})
