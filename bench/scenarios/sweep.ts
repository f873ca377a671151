/**
 * Scenario 6: the daily re-scoring sweep over a populated store while events keep arriving: a copy
 * of the store replays follow-up traffic that crosses the sweep instant early, and the engine
 * reports the sweep's wall time (first partition started to last partition done). Then the same
 * copy replays the next day's traffic: its sweep is the daily steady state.
 *
 * The figure against the target is the steady state on the realistic store (customer histories
 * over a quarter of a year: a day's purchases move the scores of the customers near a quintile
 * boundary or a mean). That store is built without sweeps, so its first sweep catches up (reported
 * too) and the next day's is the one a deployment runs every night.
 * The worst case runs on the one-day store, where every customer last bought on the same day or
 * two: recency is tied across the base, so every sweep moves nearly every score and the sweep is
 * bound by writing every user.
 * The limit: reading and decoding every stored user once (a bare scan of the same store). A sweep
 * that decides users from their projections reads every projection at least: that bare read
 * (`bare/scan-projections`, one thread) is kept in the steady-state figure's details.
 */
import { join } from 'node:path'
import { barePath, copyDir, replay, runNodeJson, storeDir, writeEngineConfig } from '../lib/processes.js'
import { REALISTIC_SPAN_DAYS, populatedStore, type PopulatedStore } from '../lib/populated-store.js'
import type { BenchContext, Figure, Scenario, ScenarioOutcome } from '../lib/scenario.js'
import { followUpFile } from '../lib/workloads.js'

const PER = 1_000_000

interface SweepRuns {
  readonly firstPerMillion: number[]
  readonly nextDayPerMillion: number[]
  /** The next day's time in sweep steps (the sweep's own work, the ingestion between steps left out). */
  readonly nextDayWorkPerMillion: number[]
  readonly scanPerMillion: number[]
  /** Reading every projection of the store once, nothing done with them (one thread). */
  readonly projectionReadPerMillion: number[]
  readonly ingestRates: number[]
  first: Record<string, unknown>
  nextDay: Record<string, unknown>
}

async function sweepRuns(ctx: BenchContext, populated: PopulatedStore, label: string, withNextDay: boolean): Promise<SweepRuns> {
  const input = await followUpFile(ctx, populated.users, ctx.sizes.sweepEvents)
  const nextDayInput = await followUpFile(ctx, populated.users, ctx.sizes.sweepEvents, 1)
  const dir = join(ctx.workDir, `sweep-${label}`)
  const out: SweepRuns = { firstPerMillion: [], nextDayPerMillion: [], nextDayWorkPerMillion: [], scanPerMillion: [], projectionReadPerMillion: [], ingestRates: [], first: {}, nextDay: {} }
  for (let run = 0; run < ctx.runs; run++) {
    copyDir(join(populated.dir, 'data'), join(dir, 'data'))
    const scan = await runNodeJson<{ users: number; scanMs: number }>([barePath(ctx, 'scan-users'), storeDir(dir), '4'], 'bare user scan')
    out.scanPerMillion.push((scan.scanMs * PER) / scan.users)
    const projections = await runNodeJson<{ users: number; scanMs: number }>([barePath(ctx, 'scan-projections'), storeDir(dir), '4', '1'], 'bare projection read')
    out.projectionReadPerMillion.push((projections.scanMs * PER) / projections.users)
    const config = writeEngineConfig(ctx, dir)
    const first = await replay(ctx, config, [input])
    if (first.sweeps < 1 || first.usersRescored < populated.users) {
      throw new Error(`expected a sweep over ${populated.users} users, got ${first.sweeps} sweeps re-scoring ${first.usersRescored}`)
    }
    out.firstPerMillion.push((first.lastSweepMs * PER) / first.usersRescored)
    out.first = { sweeps: first.sweeps, usersRescored: first.usersRescored, usersRescoredFromProjections: first.usersRescoredFromProjections, sweepStepMs: first.sweepStepMs, lastSweepMs: first.lastSweepMs, records: first.records, tagChanges: first.tagChanges, peakRssBytes: first.peakRssBytes }
    ctx.log(`${label} run ${run + 1}/${ctx.runs}: sweep ${first.lastSweepMs} ms over ${first.usersRescored} users, ${first.usersRescoredFromProjections ?? 0} decided from projections, ${first.sweepStepMs ?? '?'} ms in sweep steps, ${first.tagChanges} tag changes (bare scan ${scan.scanMs.toFixed(0)} ms)`)
    if (!withNextDay) continue
    const next = await replay(ctx, config, [nextDayInput])
    if (next.sweeps < 1 || next.usersRescored < populated.users) {
      throw new Error(`expected the next day's sweep over ${populated.users} users, got ${next.sweeps} sweeps re-scoring ${next.usersRescored}`)
    }
    out.nextDayPerMillion.push((next.lastSweepMs * PER) / next.usersRescored)
    out.ingestRates.push(next.records / next.seconds)
    if (next.sweepStepMs !== undefined) out.nextDayWorkPerMillion.push((next.sweepStepMs * PER) / next.usersRescored)
    out.nextDay = { sweeps: next.sweeps, usersRescored: next.usersRescored, usersRescoredFromProjections: next.usersRescoredFromProjections, sweepStepMs: next.sweepStepMs, lastSweepMs: next.lastSweepMs, records: next.records, tagChanges: next.tagChanges }
    ctx.log(`${label} run ${run + 1}/${ctx.runs}: next day's sweep ${next.lastSweepMs} ms over ${next.usersRescored} users, ${next.usersRescoredFromProjections ?? 0} decided from projections, ${next.sweepStepMs ?? '?'} ms in sweep steps, ${next.tagChanges} tag changes`)
  }
  return out
}

const SCAN_LIMIT = 'bare scan: read + msgpack-decode every stored user, per 1,000,000'
const METHOD = 'engine stats lastSweepMs (first partition sweep started to the last one done, wall) * 1e6 / usersRescored'

export const scenario: Scenario = {
  name: 'sweep',
  number: 6,
  title: 'Re-scoring sweep per 1,000,000 users while ingesting',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const realisticStore = await populatedStore(ctx, REALISTIC_SPAN_DAYS)
    const realistic = await sweepRuns(ctx, realisticStore, 'realistic', true)
    const worstStore = await populatedStore(ctx)
    const worst = await sweepRuns(ctx, worstStore, 'worst-case', false)
    const figures: Figure[] = [
      {
        id: 'sweep.msPerMillionUsers',
        title: `Daily re-scoring sweep while ingesting, per 1,000,000 users (steady state, histories over ${REALISTIC_SPAN_DAYS} days)`,
        unit: 'ms',
        samples: realistic.nextDayPerMillion,
        better: 'lower',
        limit: { title: SCAN_LIMIT, samples: realistic.scanPerMillion },
        target: { kind: 'at-most', value: 5000 },
        details: {
          users: realisticStore.users,
          spanDays: realisticStore.spanDays,
          method: "a copy of the store replays a day's follow-up traffic (its sweep catches up), then the next day's: " + METHOD + ' of the second',
          last: realistic.nextDay,
          projectionReadMsPerMillionUsers: realistic.projectionReadPerMillion.map(Math.round),
        },
      },
      {
        id: 'sweep.nextDayWorkMsPerMillionUsers',
        title: "The same sweep's own work: time in sweep steps, the ingestion between them left out, per 1,000,000 users",
        unit: 'ms',
        samples: realistic.nextDayWorkPerMillion,
        better: 'lower',
        limit: { title: SCAN_LIMIT, samples: realistic.scanPerMillion },
        details: { method: 'engine stats sweepStepMs of the next-day replay * 1e6 / usersRescored' },
      },
      {
        id: 'sweep.catchUpMsPerMillionUsers',
        title: 'First sweep on a store built without sweeps (catch-up), per 1,000,000 users',
        unit: 'ms',
        samples: realistic.firstPerMillion,
        better: 'lower',
        limit: { title: SCAN_LIMIT, samples: realistic.scanPerMillion },
        details: { users: realisticStore.users, method: METHOD, last: realistic.first },
      },
      {
        id: 'sweep.worstCaseMsPerMillionUsers',
        title: 'Worst case: every customer last bought the same day, the sweep moves nearly every score, per 1,000,000 users',
        unit: 'ms',
        samples: worst.firstPerMillion,
        better: 'lower',
        limit: { title: SCAN_LIMIT, samples: worst.scanPerMillion },
        details: { users: worstStore.users, spanDays: 0, method: METHOD, last: worst.first },
      },
      {
        id: 'sweep.ingestEventsPerSecond',
        title: "Ingestion rate of the replay that carries the steady-state sweep",
        unit: 'events/s',
        samples: realistic.ingestRates,
        better: 'higher',
      },
    ]
    return { status: 'ok', figures }
  },
}
