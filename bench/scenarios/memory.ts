/**
 * Scenario 4: memory at `storeUsers` customers with the default cache bound. The engine, with the
 * default settings (cache bound, durable commits), starts on a copy of the populated store (every
 * user ranked by RFM, so population statistics cover every one) and replays one event for every
 * user, each once, in a shuffled order: every user's state passes through memory, the cache fills to
 * its bound and evicts. Figure: peak RSS of that process. Also: store bytes per user, and the build.
 * The limit is the bare loop holding one small Map entry per user of the same input.
 */
import { join } from 'node:path'
import { DEFAULT_PREVIEW_RULE, type PreviewMemory, type PreviewRun } from '../preview-run.js'
import { barePath, copyDir, dirBytes, replay, runNodeJson, storeDir, writeEngineConfig } from '../lib/processes.js'
import { populatedStore } from '../lib/populated-store.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'
import { touchEveryUserFile } from '../lib/workloads.js'

const GIB = 1024 ** 3
const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(0)

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
    const previews: PreviewRun[] = []
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
      copyDir(join(populated.dir, 'data', 'store'), storeDir(dir))
      const withPreview = await runNodeJson<PreviewRun>(
        [join(ctx.root, 'dist/bench/preview-run.js'), config, DEFAULT_PREVIEW_RULE, '1', '--replay-first', input],
        'replay, then a rule preview',
      )
      if (withPreview.replayedRecords !== pass.records) throw new Error(`the pass before the preview replayed ${withPreview.replayedRecords} records, expected ${pass.records}`)
      if (withPreview.users !== users) throw new Error(`the preview evaluated ${withPreview.users} users, the store holds ${users}`)
      previews.push(withPreview)
      const m = withPreview.memory
      ctx.log(
        `run ${run + 1}/${ctx.runs} with a preview: peak RSS ${mib(m.peakRssBytes)} MiB; before the preview ${mib(m.rssBeforePreviewBytes)} MiB (peak so far ${mib(m.peakRssBeforePreviewBytes)}), ` +
          `during it up to ${mib(m.sampledPeakRssDuringPreviewBytes)} MiB, after it ${mib(m.rssAfterPreviewBytes)} MiB; ${withPreview.previewThreadsStarted} preview thread(s), ${withPreview.previewMs[0]} ms` +
          (m.splitBeforePreview !== null && m.splitAtSampledPeak !== null
            ? `; anonymous/file-mapped ${mib(m.splitBeforePreview.anonBytes)}/${mib(m.splitBeforePreview.fileBytes)} MiB before, ${mib(m.splitAtSampledPeak.anonBytes)}/${mib(m.splitAtSampledPeak.fileBytes)} at the sampled peak`
            : ''),
      )
    }
    const previewMemory = (key: Exclude<keyof PreviewMemory, 'splitBeforePreview' | 'splitAtSampledPeak'>): number[] => previews.map((p) => p.memory[key])
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
          id: 'memory.peakRssWithPreviewBytes',
          title: `Peak RSS, ${users.toLocaleString('en')} users passing through, then a rule preview (engine.previewThreads)`,
          unit: 'bytes',
          samples: previewMemory('peakRssBytes'),
          better: 'lower',
          limit: { title: 'bare loop holding one Map entry per user of the same input', samples: bareRss },
          ...(users === 1_000_000 ? { target: { kind: 'at-most', value: GIB } as const } : {}),
          details: {
            users,
            rule: DEFAULT_PREVIEW_RULE,
            previewThreads: previews[0]?.previewThreads,
            previewThreadsStarted: previews.map((p) => p.previewThreadsStarted),
            rssBeforePreviewBytes: previewMemory('rssBeforePreviewBytes'),
            peakRssBeforePreviewBytes: previewMemory('peakRssBeforePreviewBytes'),
            sampledPeakRssDuringPreviewBytes: previewMemory('sampledPeakRssDuringPreviewBytes'),
            rssAfterPreviewBytes: previewMemory('rssAfterPreviewBytes'),
            addedByPreviewBytes: previews.map((p) => p.memory.sampledPeakRssDuringPreviewBytes - p.memory.rssBeforePreviewBytes),
            splitBeforePreview: previews.map((p) => p.memory.splitBeforePreview),
            splitAtSampledPeak: previews.map((p) => p.memory.splitAtSampledPeak),
            previewMs: previews.map((p) => p.previewMs[0]),
            matched: previews[0]?.matched,
            method:
              'getrusage maxRSS of one process (bench/preview-run.ts --replay-first) that opens the engine with the default settings on a copy of the populated store, ' +
              'replays the same one-event-per-user input as memory.peakRssBytes to its end, then runs one Engine.preview of the rule with the default engine.previewThreads; ' +
              'rssBeforePreviewBytes: RSS once the replay committed; peakRssBeforePreviewBytes: maxRSS then (the pass alone); sampledPeakRssDuringPreviewBytes: highest RSS sampled every 10 ms during the preview; ' +
              'rssAfterPreviewBytes: RSS after it, the idle threads still alive; addedByPreviewBytes: sampledPeakRssDuringPreviewBytes - rssBeforePreviewBytes; ' +
              'splitBeforePreview, splitAtSampledPeak: RssAnon and RssFile of /proc/self/status (file: pages of the memory-mapped LevelDB tables, page cache the kernel can take back)',
            ...(previews.some((p) => p.previewThreadsStarted === 0)
              ? { threadsNote: 'below 50,000 stored users the preview runs on the engine thread: no preview thread started' }
              : {}),
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
