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
    const dir = join(ctx.workDir, 'sweep')
    const perMillion: number[] = []
    const scanPerMillion: number[] = []
    const rates: number[] = []
    let last: Record<string, unknown> = {}
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
      last = { sweeps: summary.sweeps, usersRescored: summary.usersRescored, usersRescoredFromProjections: summary.usersRescoredFromProjections, lastSweepMs: summary.lastSweepMs, records: summary.records, peakRssBytes: summary.peakRssBytes }
      ctx.log(`run ${run + 1}/${ctx.runs}: sweep ${summary.lastSweepMs} ms over ${summary.usersRescored} users, ${summary.usersRescoredFromProjections ?? 0} decided from projections (bare scan ${scan.scanMs.toFixed(0)} ms)`)
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
