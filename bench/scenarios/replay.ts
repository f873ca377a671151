/**
 * Scenario 1: replay throughput with every operator of config/tagstream.yaml and durable commits
 * (fsynced store batches and sink files), against the bare loop on the same file in the same
 * invocation. Engine and bare runs alternate, so drift on a shared machine hits both alike.
 */
import { join } from 'node:path'
import { barePath, freshDir, replay, runNodeJson, writeEngineConfig, type ReplaySummary } from '../lib/processes.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'
import { SEED, workloadFile } from '../lib/workloads.js'

interface BareResult {
  records: number
  users: number
  seconds: number
  eventsPerSecond: number
  peakRssBytes: number
}

export const scenario: Scenario = {
  name: 'replay',
  number: 1,
  title: 'Replay throughput, all default operators, durable commits',
  profiled: true,
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const { replayEvents: events, replayUsers: users, replayDays: days } = ctx.sizes
    const input = await workloadFile(ctx, { seed: SEED, users, events, days })
    const engineRates: number[] = []
    const bareRates: number[] = []
    const summaries: ReplaySummary[] = []
    for (let run = 0; run < ctx.runs; run++) {
      const bare = await runNodeJson<BareResult>([barePath(ctx, 'replay-loop'), input], 'bare loop')
      bareRates.push(bare.eventsPerSecond)
      const dir = freshDir(join(ctx.workDir, 'replay'))
      const config = writeEngineConfig(ctx, dir)
      const summary = await replay(ctx, config, [input], ctx.profileDir === undefined ? {} : { cpuProfileDir: ctx.profileDir })
      const rate = summary.records / summary.seconds
      engineRates.push(rate)
      summaries.push(summary)
      ctx.log(`run ${run + 1}/${ctx.runs}: engine ${Math.round(rate)} ev/s, bare ${Math.round(bare.eventsPerSecond)} ev/s (${(rate / bare.eventsPerSecond).toFixed(3)}x)`)
    }
    const last = summaries[summaries.length - 1] as ReplaySummary
    return {
      status: 'ok',
      figures: [
        {
          id: 'replay.eventsPerSecond',
          title: 'Replay, all default operators, durable commits',
          unit: 'events/s',
          samples: engineRates,
          better: 'higher',
          limit: { title: 'bare loop: read + JSON.parse + Map update per user', samples: bareRates },
          target: { kind: 'ratio-to-limit-at-least', ratio: 0.5 },
          details: {
            input: { events, users, days, seed: SEED },
            method: 'records / seconds from `tagstream replay` (store open to last commit); bare loop from its first read to its last line',
            last: {
              usersStored: last.users,
              tagChanges: last.tagChanges,
              timersFired: last.timersFired,
              sweeps: last.sweeps,
              usersRescored: last.usersRescored,
              commits: last.commits,
              duplicates: last.duplicates,
              invalid: last.invalid,
            },
            peakRssBytes: summaries.map((s) => s.peakRssBytes),
            profiled: ctx.profileDir !== undefined,
          },
        },
      ],
    }
  },
}
