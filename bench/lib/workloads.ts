/**
 * Benchmark inputs, generated once and cached under the work dir, keyed by every parameter that
 * shapes them (a cached file is only reused when it was completely written: temp file + rename).
 */
import { existsSync, mkdirSync, renameSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { CATEGORIES, CITIES, MEMBERSHIP_LEVELS, WORKLOAD_DEFAULTS, writeNdjsonFile, type WorkloadOptions } from '../../src/workload/generator.js'
import { Prng } from '../../src/workload/prng.js'
import type { BenchContext } from './scenario.js'

export const SEED = 42
const HOUR_MS = 3_600_000

function inputsDir(ctx: BenchContext): string {
  const dir = join(ctx.workDir, 'inputs')
  mkdirSync(dir, { recursive: true })
  return dir
}

async function cached(ctx: BenchContext, name: string, make: (tmp: string) => Promise<unknown>): Promise<string> {
  const path = join(inputsDir(ctx), name)
  if (existsSync(path)) return path
  const tmp = `${path}.tmp-${process.pid}`
  const t0 = performance.now()
  await make(tmp)
  renameSync(tmp, path)
  ctx.log(`generated ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  return path
}

/** The generator's realistic traffic (sessions, power-law users, duplicates, late and malformed records). */
export function workloadFile(ctx: BenchContext, options: WorkloadOptions): Promise<string> {
  const o = { ...WORKLOAD_DEFAULTS, ...options }
  const name = `workload-s${o.seed}-u${o.users}-e${o.events}-d${o.days}-t${o.startTs}-dup${o.duplicateRatio}-late${o.lateRatio}-inv${o.invalidRatio}.ndjson`
  return cached(ctx, name, (tmp) => writeNdjsonFile(tmp, o))
}

/** Event time the populated store's events start at, and span: before the first daily sweep instant. */
export const POPULATION_START_TS = Date.UTC(2024, 0, 1)
export const POPULATION_SPAN_MS = 20 * HOUR_MS

/**
 * A customer base where every one of `users` users is stored and ranked: each has a profile update
 * and one to three purchases, in time order, ending before the first sweep instant at local
 * midnight in Europe/Berlin (20:00 UTC on POPULATION_START_TS's day). The generator's own traffic
 * is power-law: reaching a million distinct users that way takes far more than ten million events.
 * User ids match the generator's for the same `users` (u + zero-padded index), so the generator's
 * traffic can follow on the same customers.
 *
 * `spanDays` 0 (the default): everything happens in those 20 hours, in rounds (profile updates,
 * then first, second and third purchases, users in one shuffled order). Every customer then last
 * bought on the same day or two: recency is tied across the whole base, so each sweep moves nearly
 * every score, a worst case for re-scoring.
 * `spanDays` > 0: customers were acquired over that many days before, each at a uniform instant,
 * and made their purchases at uniform instants between then and the end: last purchases spread
 * over the span, as a shop's customer base has them. A sweep then moves only the scores of
 * customers near a quintile boundary or a mean.
 */
export function populationFile(ctx: BenchContext, users: number, spanDays = 0): Promise<string> {
  const name = spanDays === 0 ? `population-s${SEED}-u${users}.ndjson` : `population-s${SEED}-u${users}-span${spanDays}d.ndjson`
  return cached(ctx, name, async (tmp) => {
    const prng = new Prng(SEED, 7)
    const width = Math.max(6, String(users - 1).length)
    const id = (u: number) => 'u' + String(u).padStart(width, '0')
    const purchases = new Uint8Array(users)
    for (let u = 0; u < users; u++) purchases[u] = 1 + prng.int(3)
    let total = users
    for (let u = 0; u < users; u++) total += purchases[u] as number
    // Event i: user eventUser[i], round eventRound[i] (0: profile update, 1-3: purchases), at eventTs[i].
    const eventUser = new Uint32Array(total)
    const eventRound = new Uint8Array(total)
    const eventTs = new Float64Array(total)
    const end = POPULATION_START_TS + POPULATION_SPAN_MS
    if (spanDays === 0) {
      const order = new Uint32Array(users)
      for (let i = 0; i < users; i++) order[i] = i
      prng.shuffle(order)
      let k = 0
      for (let round = 0; round < 4; round++) {
        for (let i = 0; i < users; i++) {
          const u = order[i] as number
          if (round > (purchases[u] as number)) continue
          eventUser[k] = u
          eventRound[k] = round
          eventTs[k] = POPULATION_START_TS + Math.floor((k / total) * POPULATION_SPAN_MS)
          k++
        }
      }
    } else {
      const start = end - spanDays * 24 * HOUR_MS
      let k = 0
      for (let u = 0; u < users; u++) {
        const acquired = start + Math.floor(prng.next() * (end - start))
        const times = [acquired]
        for (let j = 0; j < (purchases[u] as number); j++) times.push(acquired + Math.floor(prng.next() * (end - acquired)))
        times.sort((a, b) => a - b)
        for (let round = 0; round < times.length; round++) {
          eventUser[k] = u
          eventRound[k] = round
          eventTs[k] = times[round] as number
          k++
        }
      }
    }
    // Time order; ties by position, so the file is the same on every run.
    const order = new Uint32Array(total)
    for (let i = 0; i < total; i++) order[i] = i
    order.sort((a, b) => (eventTs[a] as number) - (eventTs[b] as number) || a - b)
    const fh = await open(tmp, 'w')
    let lines: string[] = []
    const flush = async () => {
      await fh.write(lines.join(''))
      lines = []
    }
    try {
      for (let seq = 0; seq < total; seq++) {
        const i = order[seq] as number
        const round = eventRound[i] as number
        const eventId = 'b' + seq.toString(36)
        const properties =
          round === 0
            ? { city: CITIES[prng.int(CITIES.length)], membership_level: MEMBERSHIP_LEVELS[prng.int(MEMBERSHIP_LEVELS.length)] }
            : { amount: Math.round(prng.logNormal(40, 0.8) * 100) / 100, currency: 'EUR', category: CATEGORIES[prng.int(CATEGORIES.length)], items: 1 + prng.int(3) }
        const event = { eventId, userId: id(eventUser[i] as number), type: round === 0 ? 'profile_update' : 'purchase', ts: eventTs[i], properties }
        lines.push(JSON.stringify(event) + '\n')
        if (lines.length >= 10_000) await flush()
      }
      await flush()
    } finally {
      await fh.close()
    }
  })
}

/**
 * Traffic that follows the populated store: the generator's sessions on the same customers,
 * from 22:30 to 02:30 UTC, crossing the sweep instant (local midnight, 23:00 UTC) an eighth of
 * the way in, so ingestion goes on while the sweep runs. `day` 1: the same a day later (the next sweep).
 */
export function followUpFile(ctx: BenchContext, users: number, events: number, day = 0): Promise<string> {
  return workloadFile(ctx, { seed: SEED + 1 + day, users, events, startTs: POPULATION_START_TS + (22.5 + 24 * day) * HOUR_MS, days: 4 / 24 })
}

/**
 * One product view per user of the populated store, every user once, in a shuffled order, from
 * 20:00 to 22:00 UTC (after the population file, before the first sweep instant): every user's
 * state passes through the engine once, so its cache fills to its bound and evicts.
 */
export function touchEveryUserFile(ctx: BenchContext, users: number): Promise<string> {
  return cached(ctx, `touch-s${SEED}-u${users}.ndjson`, async (tmp) => {
    const prng = new Prng(SEED, 11)
    const width = Math.max(6, String(users - 1).length)
    const order = new Uint32Array(users)
    for (let i = 0; i < users; i++) order[i] = i
    prng.shuffle(order)
    const start = POPULATION_START_TS + 20 * HOUR_MS
    const fh = await open(tmp, 'w')
    try {
      let lines: string[] = []
      for (let i = 0; i < users; i++) {
        const userId = 'u' + String(order[i]).padStart(width, '0')
        const ts = start + Math.floor((i / users) * 2 * HOUR_MS)
        lines.push(JSON.stringify({ eventId: 't' + i.toString(36), userId, type: 'view', ts, properties: { category: CATEGORIES[prng.int(CATEGORIES.length)] } }) + '\n')
        if (lines.length >= 10_000) {
          await fh.write(lines.join(''))
          lines = []
        }
      }
      await fh.write(lines.join(''))
    } finally {
      await fh.close()
    }
  })
}
