/**
 * Scenario 4: peak RSS of the engine while it builds a store of `storeUsers` customers (all ranked
 * by RFM, so population statistics cover every one) with the default cache bound; and store bytes
 * per user. The limit is the bare loop holding one small Map entry per user of the same input.
 */
import { barePath, runNodeJson } from '../lib/processes.js'
import { buildPopulatedStore } from '../lib/populated-store.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'
import { populationFile } from '../lib/workloads.js'

const GIB = 1024 ** 3

export const scenario: Scenario = {
  name: 'memory',
  number: 4,
  title: 'Memory at 1,000,000 users, default cache bound',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const users = ctx.sizes.storeUsers
    const input = await populationFile(ctx, users)
    const rss: number[] = []
    const bareRss: number[] = []
    const bytesPerUser: number[] = []
    const rates: number[] = []
    for (let run = 0; run < ctx.runs; run++) {
      const bare = await runNodeJson<{ peakRssBytes: number }>([barePath(ctx, 'replay-loop'), input], 'bare loop')
      bareRss.push(bare.peakRssBytes)
      const store = await buildPopulatedStore(ctx)
      rss.push(store.build.peakRssBytes)
      bytesPerUser.push(store.storeBytes / users)
      rates.push(store.build.records / store.build.seconds)
      ctx.log(`run ${run + 1}/${ctx.runs}: peak RSS ${(store.build.peakRssBytes / 2 ** 20).toFixed(0)} MiB, store ${(store.storeBytes / users).toFixed(0)} B/user, build ${Math.round(store.build.records / store.build.seconds)} ev/s`)
    }
    const scale = 1_000_000 / users
    return {
      status: 'ok',
      figures: [
        {
          id: 'memory.peakRssBytes',
          title: `Peak RSS building ${users.toLocaleString('en')} users`,
          unit: 'bytes',
          samples: rss,
          better: 'lower',
          limit: { title: 'bare loop holding one Map entry per user of the same input', samples: bareRss },
          ...(users === 1_000_000 ? { target: { kind: 'at-most', value: GIB } as const } : {}),
          details: {
            users,
            method: 'getrusage maxRSS of `tagstream replay` over a population file (profile update + 1-3 purchases per user), cacheMaxUsers default',
            ...(users !== 1_000_000 ? { note: `target (< 1 GiB) applies at 1,000,000 users; this run has ${users}` } : {}),
          },
        },
        {
          id: 'memory.storeBytesPerUser',
          title: 'Store bytes per user (LevelDB files on disk / users)',
          unit: 'bytes',
          samples: bytesPerUser,
          better: 'lower',
          details: { users, scaleTo1M: scale },
        },
        {
          id: 'memory.buildEventsPerSecond',
          title: 'Replay rate while building the store (all users new)',
          unit: 'events/s',
          samples: rates,
          better: 'higher',
        },
      ],
    }
  },
}
