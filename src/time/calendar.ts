/**
 * Calendar days in an IANA time zone, DST-correct. Operators count "days" with these so that a
 * 30-day window or "a purchase in the last 90 days" means calendar days where the customers are,
 * as the nightly batch systems they replace compute them.
 *
 * A local day index is the number of days from 1970-01-01 to the local calendar date, so in UTC it
 * is `floor(ts / DAY_MS)`. Offsets come from Intl and are memoized per UTC day, or per quarter hour
 * on the days the zone's offset changes.
 */
export const DAY_MS = 86_400_000
const QUARTER_HOUR_MS = 900_000

export interface Calendar {
  readonly timeZone: string
  /** Local calendar day index of an instant. */
  dayIndex(ts: number): number
  /** The instant the local day `day` starts (its first existing minute where midnight is skipped). */
  startOfDay(day: number): number
  /** The zone's offset from UTC at an instant, ms (positive east of Greenwich). */
  offset(ts: number): number
  /** Whole local calendar days from the day of `fromTs` to the day of `toTs`. */
  daysBetween(fromTs: number, toTs: number): number
  /** The instant of local wall time `minutes` after midnight on local day `day` (DST-correct). */
  instantOf(day: number, minutes: number): number
}

const calendars = new Map<string, Calendar>()

export function calendarFor(timeZone: string): Calendar {
  let cal = calendars.get(timeZone)
  if (cal === undefined) {
    cal = timeZone === 'UTC' || timeZone === 'Etc/UTC' ? utcCalendar(timeZone) : zonedCalendar(timeZone)
    calendars.set(timeZone, cal)
  }
  return cal
}

function utcCalendar(timeZone: string): Calendar {
  return {
    timeZone,
    dayIndex: (ts) => Math.floor(ts / DAY_MS),
    startOfDay: (day) => day * DAY_MS,
    offset: () => 0,
    daysBetween: (a, b) => Math.floor(b / DAY_MS) - Math.floor(a / DAY_MS),
    instantOf: (day, minutes) => day * DAY_MS + minutes * 60_000,
  }
}

function zonedCalendar(timeZone: string): Calendar {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  })
  function offsetAt(at: number): number {
    const p: Record<string, number> = {}
    for (const part of format.formatToParts(at)) if (part.type !== 'literal') p[part.type] = Number(part.value)
    const local = Date.UTC(p.year as number, (p.month as number) - 1, p.day as number, p.hour as number, p.minute as number, p.second as number)
    return local - at
  }
  // An Intl call costs about 15 µs. Zones change offset on a few days a year, at whole quarter
  // hours: a UTC day whose first and last quarter hours have one offset has it throughout (two
  // changes that cancel within one day are not in the tz database). Other days: per quarter hour.
  const byDay = new Map<number, number>()
  const byQuarterHour = new Map<number, number>()
  function offset(ts: number): number {
    const day = Math.floor(ts / DAY_MS)
    let off = byDay.get(day)
    if (off === undefined) {
      const first = offsetAt(day * DAY_MS)
      off = first === offsetAt((day + 1) * DAY_MS - QUARTER_HOUR_MS) ? first : Number.NaN
      if (byDay.size > 100_000) byDay.clear()
      byDay.set(day, off)
    }
    if (!Number.isNaN(off)) return off
    const bucket = Math.floor(ts / QUARTER_HOUR_MS)
    off = byQuarterHour.get(bucket)
    if (off === undefined) {
      off = offsetAt(bucket * QUARTER_HOUR_MS)
      if (byQuarterHour.size > 100_000) byQuarterHour.clear()
      byQuarterHour.set(bucket, off)
    }
    return off
  }
  const dayIndex = (ts: number) => Math.floor((ts + offset(ts)) / DAY_MS)
  return {
    timeZone,
    offset,
    dayIndex,
    startOfDay(day: number): number {
      const localMidnight = day * DAY_MS
      // Two refinements settle on the instant whose local time is midnight, across a DST change.
      let t = localMidnight - offset(localMidnight)
      t = localMidnight - offset(t)
      if (dayIndex(t) === day) return t
      // Midnight does not exist (a DST change at 00:00): the day starts at the change, found by
      // bisection to the minute (zone changes fall on whole minutes).
      let lo = t
      let hi = t + 6 * 3_600_000
      while (hi - lo > 60_000) {
        const mid = lo + Math.floor((hi - lo) / 120_000) * 60_000
        if (dayIndex(mid) < day) lo = mid
        else hi = mid
      }
      return hi
    },
    daysBetween: (a, b) => dayIndex(b) - dayIndex(a),
    instantOf(day: number, minutes: number): number {
      if (minutes === 0) return this.startOfDay(day)
      const local = day * DAY_MS + minutes * 60_000
      let t = local - offset(local)
      t = local - offset(t)
      return t
    },
  }
}
