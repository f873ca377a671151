/**
 * Scenario 6: the daily re-scoring sweep over the populated store while events keep arriving:
 * a copy of the store replays follow-up traffic that crosses the sweep instant early, and the
 * engine reports the sweep's wall time (first partition started to last partition done).
 * The limit: reading and decoding every stored user once (a bare scan of the same store).
 */
import { join } from 'node:path'
import { barePath, copyDir, replay, runNodeJson, storeDir, writeEngineConfig } from '../lib/processes.js'
import { populatedStore } from '../lib/populated-store.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'
import { followUpFile } from '../lib/workloads.js'

const PER = 1_000_000

export const scenario: Scenario = {
  name: 'sweep',
  number: 6,
  title: 'Re-scoring sweep per 1,000,000 users while ingesting',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const populated = await populatedStore(ctx)
    const input = await followUpFile(ctx, populated.users, ctx.sizes.sweepEvents)
    // The next day's traffic: its sweep is the daily steady state (the first one re-scores a store
    // whose users were all scored against a growing population, so it changes nearly everybody).
    const nextDay = await followUpFile(ctx, populated.users, ctx.sizes.sweepEvents, 1)
    const dir = join(ctx.workDir, 'sweep')
    const perMillion: number[] = []
    const steadyPerMillion: number[] = []
    const scanPerMillion: number[] = []
    const rates: number[] = []
    let last: Record<string, unknown> = {}
    let steady: Record<string, unknown> = {}
    for (let run = 0; run < ctx.runs; run++) {
      copyDir(join(populated.dir, 'data'), join(dir, 'data'))
      const scan = await runNodeJson<{ users: number; scanMs: number }>([barePath(ctx, 'scan-users'), storeDir(dir), '4'], 'bare user scan')
      scanPerMillion.push((scan.scanMs * PER) / scan.users)
      const config = writeEngineConfig(ctx, dir)
      const summary = await replay(ctx, config, [input])
      if (summary.sweeps < 1 || summary.usersRescored < populated.users) {
        throw new Error(`expected a sweep over ${populated.users} users, got ${summary.sweeps} sweeps re-scoring ${summary.usersRescored}`)
      }
      perMillion.push((summary.lastSweepMs * PER) / summary.usersRescored)
      rates.push(summary.records / summary.seconds)
      last = { sweeps: summary.sweeps, usersRescored: summary.usersRescored, usersRescoredFromProjections: summary.usersRescoredFromProjections, sweepStepMs: summary.sweepStepMs, lastSweepMs: summary.lastSweepMs, records: summary.records, peakRssBytes: summary.peakRssBytes }
      ctx.log(`run ${run + 1}/${ctx.runs}: sweep ${summary.lastSweepMs} ms over ${summary.usersRescored} users, ${summary.usersRescoredFromProjections ?? 0} decided from projections, ${summary.sweepStepMs ?? '?'} ms in sweep steps (bare scan ${scan.scanMs.toFixed(0)} ms)`)
      const next = await replay(ctx, config, [nextDay])
      if (next.sweeps < 1 || next.usersRescored < populated.users) {
        throw new Error(`expected the next day's sweep over ${populated.users} users, got ${next.sweeps} sweeps re-scoring ${next.usersRescored}`)
      }
      steadyPerMillion.push((next.lastSweepMs * PER) / next.usersRescored)
      steady = { sweeps: next.sweeps, usersRescored: next.usersRescored, usersRescoredFromProjections: next.usersRescoredFromProjections, sweepStepMs: next.sweepStepMs, lastSweepMs: next.lastSweepMs, records: next.records, tagChanges: next.tagChanges }
      ctx.log(`run ${run + 1}/${ctx.runs}: next day's sweep ${next.lastSweepMs} ms over ${next.usersRescored} users, ${next.usersRescoredFromProjections ?? 0} decided from projections, ${next.sweepStepMs ?? '?'} ms in sweep steps`)
    }
    return {
      status: 'ok',
      figures: [
        {
          id: 'sweep.msPerMillionUsers',
          title: 'Re-scoring sweep while ingesting, per 1,000,000 users',
          unit: 'ms',
          samples: perMillion,
          better: 'lower',
          limit: { title: 'bare scan: read + msgpack-decode every stored user, per 1,000,000', samples: scanPerMillion },
          target: { kind: 'at-most', value: 5000 },
          details: {
            users: populated.users,
            method: 'engine stats lastSweepMs (first partition sweep started to the last one done, wall) * 1e6 / usersRescored',
            last,
          },
        },
        {
          id: 'sweep.nextDayMsPerMillionUsers',
          title: "The next day's re-scoring sweep while ingesting (steady state), per 1,000,000 users",
          unit: 'ms',
          samples: steadyPerMillion,
          better: 'lower',
          limit: { title: 'bare scan: read + msgpack-decode every stored user, per 1,000,000', samples: scanPerMillion },
          target: { kind: 'at-most', value: 5000 },
          details: {
            users: populated.users,
            method: "the same store replays the next day's follow-up traffic; engine stats lastSweepMs * 1e6 / usersRescored of that replay",
            last: steady,
          },
        },
        {
          id: 'sweep.ingestEventsPerSecond',
          title: 'Ingestion rate of the replay that carries the sweep',
          unit: 'events/s',
          samples: rates,
          better: 'higher',
        },
      ],
    }
  },
}
