import { join, resolve } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_PREVIEW_RULE, type PreviewRun } from '../../bench/preview-run.js'
import { copyDir, replay, runNodeJson, storeDir, writeEngineConfig } from '../../bench/lib/processes.js'
import { populationFile, touchEveryUserFile } from '../../bench/lib/workloads.js'
import { quickBenchContext } from '../support/bench-context.js'
import { assertBuilt } from '../support/cli.js'

const ROOT = resolve(import.meta.dirname, '../..')
const PREVIEW_RUN = join(ROOT, 'dist/bench/preview-run.js')
const USERS = 2000

// No timed assertions: checks that the replay-first mode (bench scenario 4's second figure) replays
// the input in the process that previews, and previews what a separate replay would leave.
describe('bench/preview-run --replay-first', () => {
  beforeAll(() => assertBuilt())

  it('replays every record first, then previews the same users and counts as a preview after `tagstream replay`', async () => {
    const ctx = quickBenchContext('ts-bench-preview-', USERS)
    const work = ctx.workDir
    const populated = join(work, 'populated')
    const built = await replay(ctx, writeEngineConfig(ctx, populated), [await populationFile(ctx, USERS)])
    expect(built.users).toBe(USERS)
    const touch = await touchEveryUserFile(ctx, USERS)

    const inProcess = join(work, 'in-process')
    copyDir(storeDir(populated), storeDir(inProcess))
    const withReplay = await runNodeJson<PreviewRun>([PREVIEW_RUN, writeEngineConfig(ctx, inProcess), DEFAULT_PREVIEW_RULE, '1', '--replay-first', touch], 'replay-first preview')

    const separate = join(work, 'separate')
    copyDir(storeDir(populated), storeDir(separate))
    const separateConfig = writeEngineConfig(ctx, separate)
    const pass = await replay(ctx, separateConfig, [touch])
    expect(pass.records).toBe(USERS)
    const afterReplay = await runNodeJson<PreviewRun>([PREVIEW_RUN, separateConfig, DEFAULT_PREVIEW_RULE, '1'], 'preview')

    expect(withReplay.replayedRecords).toBe(USERS)
    expect(afterReplay.replayedRecords).toBe(0)
    expect(withReplay.users).toBe(USERS)
    expect(withReplay.previewMs).toHaveLength(1)
    expect(withReplay.matched).toBeGreaterThan(0)
    expect(withReplay.matched).toBeLessThan(USERS)
    expect(withReplay.matched).toBe(afterReplay.matched)
    expect(withReplay.values).toEqual(afterReplay.values)
    // Below 50,000 stored users the preview runs on the engine thread.
    expect(withReplay.previewThreads).toBe(2)
    expect(withReplay.previewThreadsStarted).toBe(0)
    // Too few users for projection pages (50,000 per partition): none built, nothing waited for.
    expect([withReplay.pageBuilds, afterReplay.pageBuilds]).toEqual([0, 0])
    expect(withReplay.pagesWaitMs).toHaveLength(1)
    expect(Math.max(...withReplay.pagesWaitMs, withReplay.pagesAfterMs)).toBeLessThan(1000)
    const m = withReplay.memory
    expect(m.peakRssBeforePreviewBytes).toBeGreaterThanOrEqual(m.rssBeforePreviewBytes)
    expect(m.sampledPeakRssDuringPreviewBytes).toBeGreaterThanOrEqual(m.rssBeforePreviewBytes)
    expect(m.sampledPeakRssDuringPreviewBytes).toBeGreaterThanOrEqual(m.rssAfterPreviewBytes)
    expect(m.peakRssBytes).toBeGreaterThanOrEqual(Math.max(m.peakRssBeforePreviewBytes, m.sampledPeakRssDuringPreviewBytes))
    // These machines run Linux: the split is read from /proc/self/status, and RSS is about its sum
    // (the shared-memory part, and the moments between readings, make up the rest).
    for (const [split, rss] of [
      [m.splitBeforePreview, m.rssBeforePreviewBytes],
      [m.splitAtSampledPeak, m.sampledPeakRssDuringPreviewBytes],
    ] as const) {
      expect(split).not.toBeNull()
      expect(split?.anonBytes).toBeGreaterThan(0)
      expect(split?.fileBytes).toBeGreaterThan(0)
      expect(Math.abs((split?.anonBytes ?? 0) + (split?.fileBytes ?? 0) - rss)).toBeLessThan(rss / 10)
    }
  }, 120_000)
})
