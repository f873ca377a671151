import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, expect } from 'vitest'
import { DEFAULT_FIELD_NAMES } from '../../src/contracts/input-event.js'
import { createEventDecoder, parseIsoTimestamp } from '../../src/contracts/validate-event.js'
import {
  CATEGORIES,
  CITIES,
  INVALID_KINDS,
  INVALID_KIND_REJECT_REASON,
  MEMBERSHIP_LEVELS,
  createLiveWorkload,
  encodeMsgpackRecord,
  encodeNdjsonLine,
  generateWorkload,
  readMsgpackFrames,
  writeMsgpackFile,
  writeNdjsonFile,
  type GeneratedRecord,
  type InvalidKind,
  type WorkloadOptions,
} from '../../src/workload/generator.js'
import { CdfSampler, Prng, zipfSampler } from '../../src/workload/prng.js'

const DAY_MS = 86_400_000
const START = Date.UTC(2024, 0, 1)

/**
 * Collects failed checks in hot loops (one vitest expect per record is too slow for 100,000 records);
 * assert `problems.list` is empty afterwards.
 */
function checker(): { check: (ok: boolean, what: string) => void; list: string[] } {
  const list: string[] = []
  return {
    list,
    check(ok, what) {
      if (!ok && list.length < 20) list.push(what)
    },
  }
}

function collect(options: WorkloadOptions): GeneratedRecord[] {
  return [...generateWorkload(options)]
}

function digest(options: WorkloadOptions): string {
  const h = createHash('sha256')
  for (const r of generateWorkload(options)) h.update(encodeNdjsonLine(r))
  return h.digest('hex')
}

const BASE: WorkloadOptions = {
  seed: 7,
  users: 2_000,
  events: 100_000,
  startTs: START,
  days: 30,
  duplicateRatio: 0.01,
  lateRatio: 0.02,
  invalidRatio: 0.01,
}

// One shared stream for the read-only checks below.
const stream = collect(BASE)
const valid = stream.flatMap((r) => (r.kind === 'event' ? [r] : []))
const originals = valid.filter((r) => !r.duplicate).map((r) => r.event)

describe('prng', () => {
  it('is deterministic per seed and stream, and differs across them', () => {
    const draw = (seed: number, s = 0): number[] => {
      const p = new Prng(seed, s)
      return Array.from({ length: 8 }, () => p.nextU32())
    }
    expect(draw(1)).toEqual(draw(1))
    expect(draw(1)).not.toEqual(draw(2))
    expect(draw(1, 0)).not.toEqual(draw(1, 1))
    expect(draw(2 ** 40)).not.toEqual(draw(0))
  })

  it('gives uniform floats in [0, 1) and bounded ints', () => {
    const p = new Prng(3)
    let sum = 0
    let outOfRange = 0
    for (let i = 0; i < 100_000; i++) {
      const x = p.next()
      if (!(x >= 0 && x < 1)) outOfRange++
      sum += x
      const k = p.range(5, 9)
      if (!(k >= 5 && k <= 9 && Number.isInteger(k))) outOfRange++
    }
    expect(outOfRange).toBe(0)
    expect(sum / 100_000).toBeGreaterThan(0.49)
    expect(sum / 100_000).toBeLessThan(0.51)
  })

  it('samples a CDF in proportion to its weights, and zipf favours low ranks', () => {
    const p = new Prng(11)
    const s = new CdfSampler([1, 0, 3])
    const counts = [0, 0, 0]
    for (let i = 0; i < 40_000; i++) counts[s.sample(p)]!++
    expect(counts[1]).toBe(0)
    expect(counts[2]! / counts[0]!).toBeGreaterThan(2.7)
    expect(counts[2]! / counts[0]!).toBeLessThan(3.3)
    const z = zipfSampler(1000, 1)
    expect(z.probability(0)).toBeGreaterThan(z.probability(1))
    expect(z.probability(0) / z.probability(9)).toBeCloseTo(10, 6)
  })
})

describe('generateWorkload: determinism and counts', () => {
  it('gives byte-identical output for the same seed', () => {
    const opts = { ...BASE, events: 20_000 }
    expect(digest(opts)).toBe(digest(opts))
  })

  it('gives different output for a different seed', () => {
    const opts = { ...BASE, events: 20_000 }
    expect(digest({ ...opts, seed: 8 })).not.toBe(digest(opts))
  })

  it('produces exactly the requested number of records, invalid and duplicate shares exact', () => {
    for (const [events, invalidRatio, duplicateRatio] of [
      [0, 0.01, 0.01],
      [1, 0, 0],
      [11, 1, 0],
      [1_000, 0, 0],
      [12_345, 0.013, 0.007],
    ] as const) {
      const recs = collect({ seed: 1, users: 50, events, invalidRatio, duplicateRatio })
      expect(recs.length).toBe(events)
      const invalid = recs.filter((r) => r.kind === 'invalid').length
      const dups = recs.filter((r) => r.kind === 'event' && r.duplicate).length
      expect(invalid).toBe(Math.round(events * invalidRatio))
      expect(dups).toBe(Math.round(events * duplicateRatio))
    }
    expect(stream.length).toBe(BASE.events)
    expect(stream.filter((r) => r.kind === 'invalid').length).toBe(1_000)
    expect(valid.filter((r) => r.duplicate).length).toBe(1_000)
  })

  it('rejects nonsensical options', () => {
    expect(() => collect({ seed: 1, users: 0, events: 10 })).toThrow(RangeError)
    expect(() => collect({ seed: 1, users: 10, events: -1 })).toThrow(RangeError)
    expect(() => collect({ seed: 1, users: 10, events: 10, invalidRatio: 1.5 })).toThrow(RangeError)
    expect(() => collect({ seed: Number.NaN, users: 10, events: 10 })).toThrow(RangeError)
  })
})

describe('generateWorkload: events', () => {
  it('gives unique event ids, except duplicates, which re-send an earlier event byte for byte', () => {
    const firstLine = new Map<string, string>()
    const { check, list } = checker()
    let checked = 0
    for (const r of stream) {
      if (r.kind !== 'event') continue
      const line = JSON.stringify(r.event)
      if (r.duplicate) {
        check(firstLine.get(r.event.eventId) === line, `duplicate ${line} does not repeat an earlier event`)
        checked++
      } else {
        check(!firstLine.has(r.event.eventId), `event id ${r.event.eventId} reused`)
        firstLine.set(r.event.eventId, line)
      }
    }
    expect(list).toEqual([])
    expect(checked).toBe(1_000)
  })

  it('follows a power law: the top 1% of users produce well over 1% of the events', () => {
    const perUser = new Map<string, number>()
    for (const e of originals) perUser.set(e.userId, (perUser.get(e.userId) ?? 0) + 1)
    const counts = [...perUser.values()].sort((a, b) => b - a)
    const total = originals.length
    const top1pct = counts.slice(0, BASE.users / 100).reduce((a, b) => a + b, 0) / total
    expect(top1pct).toBeGreaterThan(0.1) // 10x their share of the population (about 20% expected)
    expect(counts[0]! / total).toBeLessThan(0.05) // no single user dominates
    expect(perUser.size).toBeGreaterThan(BASE.users * 0.8) // the long tail is there
    for (const id of perUser.keys()) expect(id).toMatch(/^u\d{6}$/)
  })

  it('shapes each event type as documented', () => {
    const types = new Set<string>()
    const lastPurchase = new Map<string, number>()
    const cities = new Set<string>(CITIES)
    const levels = new Set<string>(MEMBERSHIP_LEVELS)
    const categories = new Set<string>(CATEGORIES)
    const amounts: number[] = []
    const { check, list } = checker()
    const keys = (o: object): string => Object.keys(o).join(',')
    for (const e of originals) {
      types.add(e.type)
      const p = e.properties
      const what = JSON.stringify(e)
      check(/^e[0-9a-z]+$/.test(e.eventId), `event id: ${what}`)
      switch (e.type) {
        case 'view':
          check(keys(p) === 'category,productId', `view keys: ${what}`)
          check(categories.has(p.category as string), `category: ${what}`)
          check(/^p\d{5}$/.test(p.productId as string), `productId: ${what}`)
          break
        case 'add_to_cart':
          check(keys(p) === 'category,productId,price', `add_to_cart keys: ${what}`)
          check(categories.has(p.category as string), `category: ${what}`)
          check(typeof p.price === 'number' && p.price > 0, `price: ${what}`)
          break
        case 'purchase': {
          check(keys(p) === 'amount,currency,category,items', `purchase keys: ${what}`)
          const amount = p.amount as number
          check(typeof amount === 'number' && Math.round(amount * 100) / 100 === amount, `2 decimals: ${what}`)
          check(p.currency === 'EUR', `currency: ${what}`)
          check(categories.has(p.category as string), `category: ${what}`)
          check(Number.isInteger(p.items) && (p.items as number) >= 1, `items: ${what}`)
          lastPurchase.set(e.userId, amount)
          amounts.push(amount)
          break
        }
        case 'refund': {
          check(keys(p) === 'amount', `refund keys: ${what}`)
          const prev = lastPurchase.get(e.userId)
          const amount = p.amount as number
          check(prev !== undefined && amount > 0 && amount <= prev, `refund of a previous purchase: ${what}`)
          lastPurchase.delete(e.userId) // a purchase is refunded at most once
          break
        }
        case 'profile_update':
          check(keys(p) === 'city,membership_level', `profile_update keys: ${what}`)
          check(cities.has(p.city as string), `city: ${what}`)
          check(levels.has(p.membership_level as string), `membership_level: ${what}`)
          break
        default:
          check(false, `unexpected type: ${what}`)
      }
    }
    expect(list).toEqual([])
    expect([...types].sort()).toEqual(['add_to_cart', 'profile_update', 'purchase', 'refund', 'view'])
    amounts.sort((a, b) => a - b)
    const median = amounts[amounts.length >> 1]!
    expect(median).toBeGreaterThan(10)
    expect(median).toBeLessThan(100)
    expect(amounts[Math.floor(amounts.length * 0.05)]!).toBeGreaterThan(1)
    expect(amounts[Math.floor(amounts.length * 0.95)]!).toBeLessThan(600)
  })

  it('gives each user a preferred category and a stable home city', () => {
    const cats = new Map<string, Map<string, number>>()
    const homes = new Map<string, string[]>()
    for (const e of originals) {
      if (e.type === 'view') {
        const m = cats.get(e.userId) ?? new Map<string, number>()
        m.set(e.properties.category as string, (m.get(e.properties.category as string) ?? 0) + 1)
        cats.set(e.userId, m)
      } else if (e.type === 'profile_update') {
        const list = homes.get(e.userId) ?? []
        list.push(e.properties.city as string)
        homes.set(e.userId, list)
      }
    }
    // Users with enough views: the favourite category takes most of them.
    let heavy = 0
    let dominated = 0
    for (const m of cats.values()) {
      const counts = [...m.values()]
      const total = counts.reduce((a, b) => a + b, 0)
      if (total < 50) continue
      heavy++
      if (Math.max(...counts) / total > 0.5) dominated++
    }
    expect(heavy).toBeGreaterThan(50)
    expect(dominated / heavy).toBeGreaterThan(0.8)
    // City changes between consecutive profile updates are rare.
    let pairs = 0
    let moves = 0
    for (const list of homes.values()) {
      for (let i = 1; i < list.length; i++) {
        pairs++
        if (list[i] !== list[i - 1]) moves++
      }
    }
    expect(pairs).toBeGreaterThan(100)
    expect(moves / pairs).toBeLessThan(0.15)
  })

  it('spans the requested days in nondecreasing time, except the late share', () => {
    let maxTs = -Infinity
    let late = 0
    let maxLag = 0
    const { check, list } = checker()
    for (const e of originals) {
      check(Number.isInteger(e.ts) && e.ts >= START && e.ts < START + 30 * DAY_MS, `ts out of range: ${JSON.stringify(e)}`)
      if (e.ts < maxTs) {
        late++
        maxLag = Math.max(maxLag, maxTs - e.ts)
      }
      maxTs = Math.max(maxTs, e.ts)
    }
    expect(list).toEqual([])
    const share = late / originals.length
    expect(share).toBeGreaterThan(0.01)
    expect(share).toBeLessThan(0.03)
    expect(maxLag).toBeLessThanOrEqual(4 * 3_600_000 + 60_000)
    expect(originals[0]!.ts - START).toBeLessThan(DAY_MS)
    expect(START + 30 * DAY_MS - maxTs).toBeLessThan(DAY_MS)

    const inOrder = collect({ ...BASE, events: 5_000, lateRatio: 0, duplicateRatio: 0, invalidRatio: 0 })
    let prev = -Infinity
    let backwards = 0
    for (const r of inOrder) {
      if (r.kind !== 'event') throw new Error('unexpected invalid record')
      if (r.event.ts < prev) backwards++
      prev = r.event.ts
    }
    expect(backwards).toBe(0)
  })

  it('passes the event decoder, every one of them', () => {
    const decode = createEventDecoder({
      fields: DEFAULT_FIELD_NAMES,
      format: 'json',
      maxRecordBytes: 65_536,
      maxIdLength: 256,
      maxFutureMs: DAY_MS,
      timestampUnit: 'ms',
    })
    const wallNow = START + 31 * DAY_MS
    const { check, list } = checker()
    for (const r of valid) {
      const line = encodeNdjsonLine(r)
      const res = decode(line.subarray(0, line.length - 1), wallNow)
      check(res.ok, `${line.toString()} -> ${JSON.stringify(res)}`)
    }
    expect(list).toEqual([])
  })
})

describe('generateWorkload: invalid records', () => {
  const invalid = stream.flatMap((r) => (r.kind === 'invalid' ? [r] : []))
  const utf8 = new TextDecoder('utf-8', { fatal: true })
  const parse = (b: Buffer): unknown => JSON.parse(utf8.decode(b))

  it('covers every kind, evenly', () => {
    const counts = new Map<InvalidKind, number>()
    for (const r of invalid) counts.set(r.invalidKind, (counts.get(r.invalidKind) ?? 0) + 1)
    expect([...counts.keys()].sort()).toEqual([...INVALID_KINDS].sort())
    const values = [...counts.values()]
    expect(Math.max(...values) - Math.min(...values)).toBeLessThanOrEqual(1)
  })

  it('makes each record really invalid in the way its kind says', () => {
    for (const r of invalid) {
      const b = r.bytes
      switch (r.invalidKind) {
        case 'invalid_json':
          expect(() => parse(b)).toThrow()
          expect(b[0]).toBe(0x7b) // a truncated object: starts like one
          break
        case 'binary_garbage':
          expect(() => utf8.decode(b)).toThrow()
          expect(() => JSON.parse(b.toString('latin1'))).toThrow()
          break
        case 'json_array':
          expect(Array.isArray(parse(b))).toBe(true)
          break
        case 'oversized_record': {
          expect(b.length).toBeGreaterThan(70_000)
          const o = parse(b) as Record<string, unknown>
          expect(typeof o.eventId).toBe('string')
          expect(typeof o.userId).toBe('string')
          break
        }
        default: {
          const o = parse(b) as Record<string, unknown>
          expect(typeof o).toBe('object')
          expect(Array.isArray(o)).toBe(false)
          if (r.invalidKind === 'missing_user_id') expect('userId' in o).toBe(false)
          else expect(o.userId).toBeDefined()
          if (r.invalidKind === 'missing_event_id') expect('eventId' in o).toBe(false)
          else expect(typeof o.eventId).toBe('string')
          if (r.invalidKind === 'missing_type') expect('type' in o).toBe(false)
          else expect(typeof o.type).toBe('string')
          if (r.invalidKind === 'numeric_user_id') expect(typeof o.userId).toBe('number')
          if (r.invalidKind === 'non_time_ts') {
            expect(typeof o.ts).toBe('string')
            expect(Number.isNaN(parseIsoTimestamp(o.ts as string))).toBe(true)
            expect(Number.isNaN(Number(o.ts))).toBe(true)
          } else if (r.invalidKind === 'future_ts') {
            expect(o.ts as number).toBeGreaterThanOrEqual(Date.UTC(2400, 0, 1))
          } else {
            expect(typeof o.ts).toBe('number')
          }
          if (r.invalidKind === 'properties_array') expect(Array.isArray(o.properties)).toBe(true)
          else expect(Array.isArray(o.properties)).toBe(false)
        }
      }
    }
  })

  it('is rejected by the event decoder with the documented reason', () => {
    const decode = createEventDecoder({
      fields: DEFAULT_FIELD_NAMES,
      format: 'json',
      maxRecordBytes: 65_536,
      maxIdLength: 256,
      maxFutureMs: DAY_MS,
      timestampUnit: 'ms',
    })
    const wallNow = START + 31 * DAY_MS
    for (const r of invalid) {
      const res = decode(r.bytes, wallNow)
      expect(res.ok, r.invalidKind).toBe(false)
      if (!res.ok) expect(res.rejection.code, r.invalidKind).toBe(INVALID_KIND_REJECT_REASON[r.invalidKind])
    }
  })
})

describe('NDJSON encoding', () => {
  it('never puts a line break inside a record', () => {
    let bad = 0
    for (const r of stream) {
      const line = encodeNdjsonLine(r)
      if (line.indexOf(0x0a) !== line.length - 1 || line.indexOf(0x0d) !== -1) bad++
    }
    expect(bad).toBe(0)
  })

  it('writeNdjsonFile writes 100,000 records, reports matching counts, and equals encodeNdjsonLine', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tagstream-workload-'))
    try {
      const path = join(dir, 'events.ndjson')
      const opts = { ...BASE, seed: 99 }
      const result = await writeNdjsonFile(path, opts)
      const data = await readFile(path)
      expect(result.bytes).toBe(data.length)
      expect((await stat(path)).size).toBe(result.bytes)
      let lines = 0
      for (let i = data.indexOf(0x0a); i !== -1; i = data.indexOf(0x0a, i + 1)) lines++
      expect(data[data.length - 1]).toBe(0x0a)
      expect(lines).toBe(100_000)
      expect(result.events + result.invalid).toBe(lines)
      expect(result.invalid).toBe(1_000)
      expect(result.duplicates).toBe(1_000)
      const expected = createHash('sha256')
      for (const r of generateWorkload(opts)) expected.update(encodeNdjsonLine(r))
      expect(createHash('sha256').update(data).digest('hex')).toBe(expected.digest('hex'))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('msgpack encoding', () => {
  it('writeMsgpackFile writes the same records as writeNdjsonFile, framed, each decoding to what the NDJSON line does', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tagstream-workload-'))
    try {
      const path = join(dir, 'events.msgpack')
      const opts = { ...BASE, events: 20_000, seed: 7 }
      const result = await writeMsgpackFile(path, opts)
      const data = await readFile(path)
      expect(result.bytes).toBe(data.length)
      expect(result.events + result.invalid).toBe(20_000)
      expect(result.invalid).toBe(200)
      const frames = [...readMsgpackFrames(data)]
      expect(frames).toHaveLength(20_000)
      const json = createEventDecoder({ fields: DEFAULT_FIELD_NAMES, format: 'json', maxRecordBytes: 65_536, maxIdLength: 256, maxFutureMs: 86_400_000, timestampUnit: 'ms' })
      const mp = createEventDecoder({ fields: DEFAULT_FIELD_NAMES, format: 'msgpack', maxRecordBytes: 65_536, maxIdLength: 256, maxFutureMs: 86_400_000, timestampUnit: 'ms' })
      const wallNow = START + 31 * DAY_MS
      let i = 0
      let rejected = 0
      for (const r of generateWorkload(opts)) {
        const frame = frames[i++] as Buffer
        expect(frame.equals(encodeMsgpackRecord(r))).toBe(true)
        const fromJson = json(encodeNdjsonLine(r).subarray(0, -1), wallNow)
        const fromMsgpack = mp(frame, wallNow)
        expect(fromMsgpack.ok).toBe(fromJson.ok)
        if (fromJson.ok && fromMsgpack.ok) expect(fromMsgpack.event).toEqual(fromJson.event)
        if (!fromMsgpack.ok) rejected++
      }
      expect(rejected).toBe(200)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('createLiveWorkload', () => {
  const walls = Array.from({ length: 20_000 }, (_, i) => 1_700_000_000_000 + Math.floor(i * 3.7))

  it('is deterministic for a seed and a sequence of wall times', () => {
    const run = (seed: number): string => {
      const live = createLiveWorkload({ seed, users: 500, timeScale: 60, invalidRatio: 0.01 })
      const h = createHash('sha256')
      for (const w of walls) h.update(encodeNdjsonLine(live.next(w)))
      return h.digest('hex')
    }
    expect(run(5)).toBe(run(5))
    expect(run(5)).not.toBe(run(6))
  })

  it('runs event time at timeScale x the wall clock from the first call', () => {
    const timeScale = 3_600
    const live = createLiveWorkload({ seed: 5, users: 500, timeScale, invalidRatio: 0.01, lateRatio: 0.02 })
    const first = walls[0]!
    let onClock = 0
    let late = 0
    let invalid = 0
    let maxTs = -Infinity
    for (const w of walls) {
      const r = live.next(w)
      if (r.kind === 'invalid') {
        invalid++
        continue
      }
      if (r.duplicate) continue
      const expected = first + (w - first) * timeScale
      if (r.event.ts === expected) onClock++
      else {
        expect(r.event.ts).toBeLessThan(expected) // late: moved back
        late++
      }
      maxTs = Math.max(maxTs, r.event.ts)
    }
    expect(late / walls.length).toBeLessThan(0.04)
    expect(onClock).toBeGreaterThan(walls.length * 0.9)
    expect(invalid).toBeGreaterThan(100)
    expect(maxTs).toBe(first + (walls.at(-1)! - first) * timeScale)
  })
})
