/**
 * Scenario 4: memory at `storeUsers` customers with the default cache bound. The engine, with the
 * default settings (cache bound, durable commits), starts on a copy of the populated store (every
 * user ranked by RFM, so population statistics cover every one) and replays one event for every
 * user, each once, in a shuffled order: every user's state passes through memory, the cache fills to
 * its bound and evicts. Figure: peak RSS of that process. Also: store bytes per user, and the build.
 * The limit is the bare loop holding one small Map entry per user of the same input.
 */
import { join } from 'node:path'
import { barePath, copyDir, dirBytes, replay, runNodeJson, storeDir, writeEngineConfig } from '../lib/processes.js'
import { populatedStore } from '../lib/populated-store.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'
import { touchEveryUserFile } from '../lib/workloads.js'

const GIB = 1024 ** 3

export const scenario: Scenario = {
  name: 'memory',
  number: 4,
  title: 'Memory at 1,000,000 users, default cache bound',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const populated = await populatedStore(ctx)
    const users = populated.users
    const input = await touchEveryUserFile(ctx, users)
    const dir = join(ctx.workDir, 'memory')
    const config = writeEngineConfig(ctx, dir)
    const rss: number[] = []
    const bareRss: number[] = []
    const rates: number[] = []
    let touchedStoreBytes = 0
    for (let run = 0; run < ctx.runs; run++) {
      const bare = await runNodeJson<{ peakRssBytes: number }>([barePath(ctx, 'replay-loop'), input], 'bare loop')
      bareRss.push(bare.peakRssBytes)
      copyDir(join(populated.dir, 'data', 'store'), storeDir(dir))
      const pass = await replay(ctx, config, [input])
      if (pass.users !== users) throw new Error(`the engine holds ${pass.users} users after the pass, expected ${users}`)
      rss.push(pass.peakRssBytes)
      rates.push(pass.records / pass.seconds)
      touchedStoreBytes = dirBytes(storeDir(dir))
      ctx.log(`run ${run + 1}/${ctx.runs}: peak RSS ${(pass.peakRssBytes / 2 ** 20).toFixed(0)} MiB (bare ${(bare.peakRssBytes / 2 ** 20).toFixed(0)} MiB), ${Math.round(pass.records / pass.seconds)} ev/s`)
    }
    const build = populated.build
    return {
      status: 'ok',
      figures: [
        {
          id: 'memory.peakRssBytes',
          title: `Peak RSS, ${users.toLocaleString('en')} users each passing through the engine`,
          unit: 'bytes',
          samples: rss,
          better: 'lower',
          limit: { title: 'bare loop holding one Map entry per user of the same input', samples: bareRss },
          ...(users === 1_000_000 ? { target: { kind: 'at-most', value: GIB } as const } : {}),
          details: {
            users,
            method:
              'getrusage maxRSS of `tagstream replay` with the default engine settings (cacheMaxUsers, cacheMaxBytes, durable commits) on a copy of the populated store, over one view event per user in a shuffled order',
            ...(users !== 1_000_000 ? { note: `target (< 1 GiB) applies at 1,000,000 users; this run has ${users}` } : {}),
          },
        },
        {
          id: 'memory.storeBytesPerUser',
          title: 'Store bytes per user (LevelDB files on disk / users)',
          unit: 'bytes',
          samples: [populated.storeBytes / users],
          better: 'lower',
          details: { users, afterThePass: touchedStoreBytes / users, method: 'the populated store as built (2-4 events per user); afterThePass: a copy after one more event per user, before compaction' },
        },
        {
          id: 'memory.touchEventsPerSecond',
          title: 'Replay rate of the pass (every event a different user, most from the store)',
          unit: 'events/s',
          samples: rates,
          better: 'higher',
        },
        {
          id: 'memory.buildEventsPerSecond',
          title: 'Replay rate building the populated store (all users new; build settings)',
          unit: 'events/s',
          samples: [build.records / build.seconds],
          better: 'higher',
          details: { records: build.records, wallSeconds: build.wallMs / 1000, peakRssBytes: build.peakRssBytes, settings: 'bench/lib/populated-store.ts buildEngineSettings' },
        },
      ],
    }
  },
}
