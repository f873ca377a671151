import { describe, expect, it } from 'vitest'
import { DAY_MS, calendarFor } from '../../src/time/calendar.js'

describe('calendar', () => {
  it('counts UTC days as epoch days', () => {
    const utc = calendarFor('UTC')
    expect(utc.dayIndex(Date.UTC(2011, 11, 10))).toBe(Date.UTC(2011, 11, 10) / DAY_MS)
    expect(utc.daysBetween(Date.UTC(2011, 11, 9, 23, 59), Date.UTC(2011, 11, 10))).toBe(1)
  })

  it('puts an instant on its local date in Berlin, across both DST changes of 2024', () => {
    const berlin = calendarFor('Europe/Berlin')
    // 2024-03-30T23:30Z is 00:30 CET on 31 March; 2024-10-26T22:30Z is 00:30 CEST on 27 October.
    expect(berlin.dayIndex(Date.UTC(2024, 2, 30, 23, 30))).toBe(Date.UTC(2024, 2, 31) / DAY_MS)
    expect(berlin.dayIndex(Date.UTC(2024, 9, 26, 22, 30))).toBe(Date.UTC(2024, 9, 27) / DAY_MS)
    expect(berlin.dayIndex(Date.UTC(2024, 9, 26, 21, 59))).toBe(Date.UTC(2024, 9, 26) / DAY_MS)
  })

  it('starts local days at local midnight, with 23- and 25-hour days at the DST changes', () => {
    const berlin = calendarFor('Europe/Berlin')
    const day = (y: number, m: number, d: number) => Date.UTC(y, m, d) / DAY_MS
    expect(berlin.startOfDay(day(2024, 2, 31))).toBe(Date.UTC(2024, 2, 30, 23))
    expect(berlin.startOfDay(day(2024, 3, 1))).toBe(Date.UTC(2024, 2, 31, 22))
    expect(berlin.startOfDay(day(2024, 3, 1)) - berlin.startOfDay(day(2024, 2, 31))).toBe(23 * 3_600_000)
    expect(berlin.startOfDay(day(2024, 9, 28)) - berlin.startOfDay(day(2024, 9, 27))).toBe(25 * 3_600_000)
  })

  it("gives Intl's own offset at every quarter hour of the days around each zone change", () => {
    // Zones with DST at 01:00Z, at local 02:00, by 30 minutes (Lord Howe), a +5:45 zone, and Apia,
    // which skipped 30 December 2011.
    const zones = ['Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe', 'Asia/Kathmandu', 'Pacific/Apia', 'America/Santiago']
    for (const zone of zones) {
      const cal = calendarFor(zone)
      const intl = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' })
      const offsetOf = (at: number): number => {
        const p: Record<string, number> = Object.fromEntries(intl.formatToParts(at).filter((x) => x.type !== 'literal').map((x) => [x.type, Number(x.value)]))
        const part = (name: string): number => p[name] as number
        return Date.UTC(part('year'), part('month') - 1, part('day'), part('hour'), part('minute'), part('second')) - at
      }
      let changes = 0
      // Every quarter hour of 2024 (of mid-2011 to mid-2012 for Apia): each change, and the days on either side.
      const years = zone === 'Pacific/Apia' ? [[Date.UTC(2011, 6, 1), Date.UTC(2012, 6, 1)]] : [[Date.UTC(2024, 0, 1), Date.UTC(2025, 0, 1)]]
      for (const [from, to] of years as [number, number][]) {
        let previous = offsetOf(from)
        for (let at = from; at < to; at += 900_000) {
          const expected = offsetOf(at)
          if (expected !== previous) changes++
          previous = expected
          if (cal.offset(at) !== expected) expect(`${zone} ${new Date(at).toISOString()} ${cal.offset(at)}`).toBe(`${zone} ${new Date(at).toISOString()} ${expected}`)
          // Inside the quarter hour too: the first and last millisecond.
          if (cal.offset(at + 899_999) !== expected) expect(`${zone} ${new Date(at + 899_999).toISOString()}`).toBe(String(expected))
        }
      }
      if (zone !== 'Asia/Kathmandu') expect(changes, zone).toBeGreaterThanOrEqual(2)
    }
  })

  it('handles zones where midnight is skipped and half-hour offsets', () => {
    // Santiago moved clocks from 24:00 to 01:00 on 2024-09-08: that day starts at 01:00 local (04:00Z).
    const santiago = calendarFor('America/Santiago')
    const sep8 = Date.UTC(2024, 8, 8) / DAY_MS
    expect(santiago.startOfDay(sep8)).toBe(Date.UTC(2024, 8, 8, 4))
    expect(santiago.dayIndex(santiago.startOfDay(sep8))).toBe(sep8)
    const kolkata = calendarFor('Asia/Kolkata')
    expect(kolkata.startOfDay(Date.UTC(2024, 0, 1) / DAY_MS)).toBe(Date.UTC(2023, 11, 31, 18, 30))
  })
})
