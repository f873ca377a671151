import { describe, expect, it } from 'vitest'
import { Populations, RankedMultiset, sharedPopulationViews } from '../../src/engine/population.js'

/** The reference definition: min rank among all values, 1-based. */
function naiveRank(values: number[], v: number): number {
  return 1 + values.filter((x) => x < v).length
}

describe('RankedMultiset', () => {
  it('ranks exactly like a full sort with min ties, through thousands of inserts and removals', () => {
    const set = new RankedMultiset()
    const values: number[] = []
    let seed = 99
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
    for (let i = 0; i < 6000; i++) {
      if (values.length > 0 && rnd() < 0.35) {
        const idx = Math.floor(rnd() * values.length)
        const [v] = values.splice(idx, 1)
        expect(set.remove(v as number)).toBe(true)
      } else {
        const v = Math.round(rnd() * 300) / 4 // many ties
        values.push(v)
        set.add(v)
      }
      if (i % 500 === 0) {
        for (const probe of [-1, 0, 10.25, 37.5, 74.75, 100]) expect(set.rank(probe)).toBe(naiveRank(values, probe))
      }
    }
    expect(set.count).toBe(values.length)
    expect(set.maxRank()).toBe(naiveRank(values, Math.max(...values)))
    expect(set.mean()).toBeCloseTo(values.reduce((a, b) => a + b, 0) / values.length, 9)
    expect(set.remove(12345.5)).toBe(false)
  })

  it('is empty-safe', () => {
    const set = new RankedMultiset()
    expect(set.maxRank()).toBe(0)
    expect(set.rank(5)).toBe(1)
    expect(set.mean()).toBeNaN()
  })

  it('keeps a snapshot frozen while the live set changes', () => {
    const pops = new Populations()
    pops.update('rfm', undefined, { monetary: 10, frequency: 1 })
    pops.update('rfm', undefined, { monetary: 20, frequency: 2 })
    const snap = pops.snapshot()
    pops.update('rfm', { monetary: 10, frequency: 1 }, { monetary: 30, frequency: 1 })
    expect(snap.get('rfm', 'monetary').rank(25)).toBe(3)
    expect(pops.get('rfm', 'monetary').rank(25)).toBe(2)
    expect(pops.get('rfm', 'frequency').count).toBe(2)
  })
})

describe('Populations.update', () => {
  it('moves nothing when a new value is not finite', () => {
    const pops = new Populations()
    pops.update('rfm', undefined, { monetary: 1 })
    expect(() => pops.update('rfm', { monetary: 1 }, { monetary: Infinity })).toThrow(RangeError)
    expect(pops.get('rfm', 'monetary').count).toBe(1)
    expect(pops.get('rfm', 'monetary').rank(2)).toBe(2)
  })
})

describe('RankedMultiset bulk changes (a partition joining or leaving)', () => {
  it('adds and removes many values at once, as one by one would', () => {
    const set = new RankedMultiset()
    for (const v of [5, 1, 3, 3, 9]) set.add(v)
    set.addAll(Float64Array.from([3, 7, 0.5]))
    expect(Array.from(set.values())).toEqual([0.5, 1, 3, 3, 3, 5, 7, 9])
    expect(set.rank(3)).toBe(3)
    expect(set.maxRank()).toBe(8)
    // One occurrence each; a value not there (42) is skipped, as remove() does.
    set.removeAll(Float64Array.from([1, 3, 9, 42]))
    expect(Array.from(set.values())).toEqual([0.5, 3, 3, 5, 7])
    expect(set.count).toBe(5)
    expect(set.mean()).toBe(18.5 / 5)
    set.removeAll(set.values())
    expect(set.count).toBe(0)
    expect(set.mean()).toBeNaN()
  })
})

describe('Populations.update journal', () => {
  it('reports exactly the values it moves', () => {
    const pops = new Populations()
    const moved: [string, string, number, number][] = []
    const journal = { moved: (op: string, dim: string, v: number, n: 1 | -1) => void moved.push([op, dim, v, n]) }
    pops.update('rfm', undefined, { monetary: 10, frequency: 1 }, journal)
    // frequency unchanged: not moved.
    pops.update('rfm', { monetary: 10, frequency: 1 }, { monetary: 12, frequency: 1 }, journal)
    pops.update('rfm', { monetary: 12, frequency: 1 }, {}, journal)
    expect(() => pops.update('rfm', {}, { monetary: NaN }, journal)).toThrow(RangeError)
    expect(moved).toEqual([
      ['rfm', 'monetary', 10, 1],
      ['rfm', 'frequency', 1, 1],
      ['rfm', 'monetary', 10, -1],
      ['rfm', 'monetary', 12, 1],
      ['rfm', 'monetary', 12, -1],
      ['rfm', 'frequency', 1, -1],
    ])
  })
})

describe('populations shared with worker threads', () => {
  it('answer every query as the sets they were taken from, from one shared array', () => {
    const populations = new Populations()
    let seed = 7
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
    const kept: { monetary: number; frequency: number }[] = []
    // Inserts and removals (the running sum then differs from a sum of the sorted values in its last bits).
    for (let i = 0; i < 5000; i++) {
      const user = { monetary: Math.round(rnd() * 2000) / 7, frequency: Math.floor(rnd() * 20) }
      populations.update('rfm', undefined, user)
      kept.push(user)
      if (rnd() < 0.3) populations.update('rfm', kept.shift(), undefined)
    }
    populations.update('loyalty', undefined, { points: 5 })
    const shared = populations.toShared()
    expect(shared.values.buffer).toBeInstanceOf(SharedArrayBuffer)
    const views = sharedPopulationViews(structuredClone(shared))
    for (const [op, dim] of [['rfm', 'monetary'], ['rfm', 'frequency'], ['loyalty', 'points'], ['rfm', 'absent']] as const) {
      const set = populations.get(op, dim)
      const view = views(op, dim)
      expect(view.count).toBe(set.count)
      expect(view.maxRank()).toBe(set.maxRank())
      expect(Object.is(view.mean(), set.mean())).toBe(true)
      for (let i = 0; i < 400; i++) {
        const v = i % 2 === 0 ? Math.round(rnd() * 2100) / 7 : rnd() * 300 - 10
        expect(view.rank(v)).toBe(set.rank(v))
      }
    }
  })
})
