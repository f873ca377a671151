/**
 * Scenario 7: dry run of a typical strategy rule over every user of the populated store
 * (`Engine.preview`, the engine of POST /v1/tags/preview), in a child process that opens the store
 * as `run` does. The first preview reads every projection and has projection pages built, which the
 * later ones read. The limit: reading every user's projection (v! value) once, with nothing done to
 * it, which pages avoid
 * (`bare/scan-projections`, one thread as the preview, once per preview run); the same read
 * split over every core, and the bare record scan of scenario 6, are kept in the details.
 */
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { DEFAULT_PREVIEW_RULE, type PreviewRun } from '../preview-run.js'
import { barePath, copyDir, runNodeJson, storeDir, writeEngineConfig } from '../lib/processes.js'
import { populatedStore } from '../lib/populated-store.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'

const PER = 1_000_000

export const scenario: Scenario = {
  name: 'preview',
  number: 7,
  title: 'Rule preview over 1,000,000 users',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const populated = await populatedStore(ctx)
    const dir = join(ctx.workDir, 'preview')
    copyDir(join(populated.dir, 'data'), join(dir, 'data'))
    const config = writeEngineConfig(ctx, dir)
    const scan = await runNodeJson<{ users: number; scanMs: number }>([barePath(ctx, 'scan-users'), storeDir(dir), '4'], 'bare user scan')
    type ProjectionScan = { users: number; scanMs: number }
    const projectionScan = (threads: number): Promise<ProjectionScan> =>
      runNodeJson<ProjectionScan>([barePath(ctx, 'scan-projections'), storeDir(dir), '4', String(threads)], `bare projection read, ${threads} thread(s)`)
    const projectionReads: ProjectionScan[] = []
    for (let i = 0; i < ctx.runs; i++) projectionReads.push(await projectionScan(1))
    const threads = Math.min(4, availableParallelism())
    const parallelRead = await projectionScan(threads)
    const perMillion = (r: ProjectionScan): number => (r.scanMs * PER) / r.users
    const result = await runNodeJson<PreviewRun>([join(ctx.root, 'dist/bench/preview-run.js'), config, DEFAULT_PREVIEW_RULE, String(ctx.runs)], 'rule preview')
    if (result.users !== populated.users) throw new Error(`preview evaluated ${result.users} users, the store holds ${populated.users}`)
    ctx.log(
      `preview ${result.previewMs.join(' / ')} ms (page builds waited for before each: ${result.pagesWaitMs.join(' / ')} ms) (CPU ${result.previewCpuMs.join(' / ')} ms) over ${result.users} users, ${result.matched} match ` +
        `(projection read ${projectionReads.map((r) => r.scanMs.toFixed(0)).join(' / ')} ms, on ${threads} threads ${parallelRead.scanMs.toFixed(0)} ms; record scan ${scan.scanMs.toFixed(0)} ms)`,
    )
    return {
      status: 'ok',
      figures: [
        {
          id: 'preview.msPerMillionUsers',
          title: 'Rule preview (dry run) per 1,000,000 stored users',
          unit: 'ms',
          samples: result.previewMs.map((ms) => (ms * PER) / result.users),
          better: 'lower',
          limit: { title: 'bare read of every projection (the v! ranges), nothing done with them, one thread, per 1,000,000', samples: projectionReads.map(perMillion) },
          // Judged at a million users only: below 50,000 users per partition previews get no
          // projection pages, so a small store's time per user says little about a large one's.
          ...(result.users >= 1_000_000 ? { target: { kind: 'at-most', value: 2000 } as const } : {}),
          details: {
            ...(result.users < 1_000_000 ? { note: `target (< 2 s) applies at 1,000,000 users; this run has ${result.users}` } : {}),
            users: result.users,
            matched: result.matched,
            rule: result.rule,
            openMs: result.openMs,
            pagesWaitMs: result.pagesWaitMs,
            pagesNote:
              'the first preview after the open reads every projection (v! values) and has the partitions\' projection pages built; the later ones read the pages. Each is timed once the builds in flight are done (pagesWaitMs before each, untimed)',
            projectionReadMsPerMillionUsers: { threads, ms: Math.round(perMillion(parallelRead)), note: 'the same read split over worker threads (store opened with multithreading)' },
            recordScanMsPerMillionUsers: Math.round((scan.scanMs * PER) / scan.users),
            cpuMsPerMillionUsers: result.previewCpuMs.map((ms) => Math.round((ms * PER) / result.users)),
            values: result.values,
          },
        },
      ],
    }
  },
}
