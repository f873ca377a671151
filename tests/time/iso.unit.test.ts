import { describe, expect, it } from 'vitest'
import { isoString } from '../../src/time/iso.js'

describe('isoString', () => {
  it('equals Date.prototype.toISOString over years 0 to 9999, both sides of the epoch', () => {
    let seed = 12345
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
    const min = -62_167_219_200_000
    const span = 253_402_300_800_000 - min
    for (let i = 0; i < 200_000; i++) {
      const ms = min + Math.floor(rnd() * span)
      expect(isoString(ms)).toBe(new Date(ms).toISOString())
    }
    // Consecutive instants of one day, and across midnight (the day's prefix is cached).
    const base = Date.UTC(2024, 1, 28, 23, 59, 58, 990)
    for (let ms = base; ms < base + 3000; ms += 7) expect(isoString(ms)).toBe(new Date(ms).toISOString())
  })

  it('equals it at the edges: leap days, century rules, the first and last instants it can show', () => {
    const instants = [
      0,
      -1,
      Date.UTC(2000, 1, 29),
      Date.UTC(1900, 1, 28, 23, 59, 59, 999),
      Date.UTC(1900, 2, 1),
      Date.UTC(2100, 1, 28, 12),
      Date.UTC(2024, 11, 31, 23, 59, 59, 999),
      -62_167_219_200_000, // 0000-01-01T00:00:00.000Z
      253_402_300_799_999, // 9999-12-31T23:59:59.999Z
    ]
    for (const ms of instants) expect(isoString(ms)).toBe(new Date(ms).toISOString())
  })

  it('leaves what it does not format to toISOString: other years, fractions, and what throws', () => {
    for (const ms of [-62_167_219_200_001, 253_402_300_800_000, 8.64e15, 1.5, -0.5, 1_700_000_000_000.25]) {
      expect(isoString(ms)).toBe(new Date(ms).toISOString())
    }
    expect(() => isoString(Number.NaN)).toThrow(RangeError)
    expect(() => isoString(8.64e15 + 1)).toThrow(RangeError)
  })
})
