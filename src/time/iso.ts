/**
 * `new Date(ms).toISOString()`, the same string, several times faster: about 1.3 µs per call here
 * against a few hundred ns. Operators put ISO instants in their views and evidence, so a sweep or a
 * replay formats several per user; V8's version builds a Date and goes through its date cache.
 *
 * Years 0 to 9999 (what `YYYY-MM-DDTHH:mm:ss.sssZ` can show) are formatted here from the civil date
 * of the day number (Howard Hinnant's `civil_from_days`); anything else (other years, a fraction of a
 * millisecond, NaN) goes to `toISOString`, which also throws the same RangeError for what it cannot
 * show.
 */
const DAY_MS = 86_400_000
/** 0000-01-01T00:00:00.000Z and 10000-01-01T00:00:00.000Z. */
const MIN_MS = -62_167_219_200_000
const END_MS = 253_402_300_800_000

const PAD2: readonly string[] = Array.from({ length: 100 }, (_, i) => (i < 10 ? `0${i}` : `${i}`))
const PAD3: readonly string[] = Array.from({ length: 1000 }, (_, i) => (i < 10 ? `00${i}` : i < 100 ? `0${i}` : `${i}`))

/** The last day formatted and its `YYYY-MM-DDT`: instants of one day share it. */
let cachedDay = Number.NaN
let cachedDate = ''

function datePart(day: number): string {
  // civil_from_days: the proleptic Gregorian date of a day number (days since 1970-01-01).
  const z = day + 719_468
  const era = Math.floor(z / 146_097)
  const doe = z - era * 146_097
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365)
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100))
  const mp = Math.floor((5 * doy + 2) / 153)
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1
  const m = mp < 10 ? mp + 3 : mp - 9
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0)
  return `${PAD2[Math.floor(y / 100)]}${PAD2[y % 100]}-${PAD2[m]}-${PAD2[d]}T`
}

export function isoString(ms: number): string {
  if (!Number.isInteger(ms) || ms < MIN_MS || ms >= END_MS) return new Date(ms).toISOString()
  const day = Math.floor(ms / DAY_MS)
  if (day !== cachedDay) {
    cachedDate = datePart(day)
    cachedDay = day
  }
  let rest = ms - day * DAY_MS
  const millis = rest % 1000
  rest = (rest - millis) / 1000
  const seconds = rest % 60
  rest = (rest - seconds) / 60
  const minutes = rest % 60
  const hours = (rest - minutes) / 60
  return `${cachedDate}${PAD2[hours]}:${PAD2[minutes]}:${PAD2[seconds]}.${PAD3[millis]}Z`
}
