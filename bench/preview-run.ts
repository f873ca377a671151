/**
 * Rule preview (dry run) over every user of an existing store: opens the engine of a config (its
 * sources are not read), runs `Engine.preview` `runs` times and prints one JSON line with the
 * timings and the process's RSS around the previews. Scenario 7 of the bench suite runs it on the
 * populated 1,000,000-user store.
 *
 * With `--replay-first FILE...`, the engine first replays those NDJSON files to their end in the same
 * process, as `tagstream replay` does, then previews: scenario 4 runs it with one event per stored
 * user, so the preview threads start while the user cache is full to its bound.
 *
 *   node dist/bench/preview-run.js CONFIG [RULE] [RUNS] [--replay-first FILE...]
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config/load.js'
import { openRuntime } from '../src/runtime.js'

export const DEFAULT_PREVIEW_RULE = 'rfm.monetary >= 100.0 && lifecycle.stage in ["new", "active", "reactivated"]'

/** How often the RSS is sampled while the previews run. */
const RSS_SAMPLE_MS = 10

export interface PreviewMemory {
  /** RSS right before the first preview (in replay-first mode: after the replay's last commit). */
  readonly rssBeforePreviewBytes: number
  /** getrusage maxRSS right before the first preview: the peak of the open (and the replay). */
  readonly peakRssBeforePreviewBytes: number
  /** Highest RSS sampled every RSS_SAMPLE_MS ms while the previews, and the page builds they started, ran: what they add, even when the replay set the peak. */
  readonly sampledPeakRssDuringPreviewBytes: number
  /** RSS after the last preview and the page builds it started, its worker threads still alive (they stop a minute after it). */
  readonly rssAfterPreviewBytes: number
  /** getrusage maxRSS after the last preview: the peak of the whole process. */
  readonly peakRssBytes: number
  /** The RSS before the previews, split (Linux; null elsewhere). */
  readonly splitBeforePreview: RssSplit | null
  /** The split at the highest RSS sampled during the previews. */
  readonly splitAtSampledPeak: RssSplit | null
}

/**
 * The RSS split as /proc/self/status gives it. LevelDB memory-maps the table files it keeps open,
 * so what reads touch of them counts in the RSS as file pages: clean page cache, which the kernel
 * takes back under memory pressure, unlike the anonymous memory of heaps and malloc.
 */
export interface RssSplit {
  readonly anonBytes: number
  readonly fileBytes: number
}

function rssSplit(): RssSplit | null {
  let status: string
  try {
    status = readFileSync('/proc/self/status', 'utf8')
  } catch {
    return null
  }
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  const split = { anonBytes: kib('RssAnon'), fileBytes: kib('RssFile') }
  return Number.isNaN(split.anonBytes) || Number.isNaN(split.fileBytes) ? null : split
}

export interface PreviewRun {
  readonly rule: string
  readonly users: number
  readonly matched: number
  readonly openMs: number
  /** Records the engine replayed before the first preview (0 without --replay-first). */
  readonly replayedRecords: number
  readonly replayMs: number
  /**
   * Before each preview (not timed), how long the projection page builds in flight took to end
   * (engine/projection-pages.ts): a preview of partitions without pages (the first after a start)
   * reads every projection and has their pages built, which the previews after it read. Each
   * preview is timed once the builds are done, as when an operator edits a rule between two.
   */
  readonly pagesWaitMs: readonly number[]
  /** The same wait after the last preview: its RSS is sampled (part of `memory`). */
  readonly pagesAfterMs: number
  /** Projection page builds by the end. */
  readonly pageBuilds: number
  /** `engine.previewThreads` of the config. */
  readonly previewThreads: number
  /** Worker threads the previews ran in: 0 when they ran on the engine thread (fewer than 50,000 stored users). */
  readonly previewThreadsStarted: number
  /** Wall time of each preview, ms. */
  readonly previewMs: readonly number[]
  /**
   * CPU time of the process (every thread: LevelDB's reads run on libuv's pool) during each
   * preview, ms: less dependent than wall time on what else the machine runs.
   */
  readonly previewCpuMs: readonly number[]
  readonly memory: PreviewMemory
  readonly values: readonly { readonly value: unknown; readonly users: number }[]
}

export interface PreviewRunOptions {
  readonly rule?: string
  readonly runs?: number
  /** NDJSON files replayed to their end before the first preview. */
  readonly replayFirst?: readonly string[]
}

const peakRss = (): number => process.resourceUsage().maxRSS * 1024

export async function runPreview(configPath: string, options: PreviewRunOptions = {}): Promise<PreviewRun> {
  const { rule = DEFAULT_PREVIEW_RULE, runs = 3, replayFirst = [] } = options
  if (runs < 1) throw new Error('runs must be at least 1')
  const { config } = loadConfig(configPath)
  const t0 = performance.now()
  // Replay mode: the configured sources are not opened; only `replayFirst` (if any) is ingested.
  const runtime = await openRuntime({ ...config, http: { ...config.http, enabled: false } }, { live: false, replayFiles: replayFirst })
  const openMs = performance.now() - t0
  try {
    const engine = runtime.engine
    const r0 = performance.now()
    if (replayFirst.length > 0) await engine.run({ untilEnd: true })
    const replayMs = performance.now() - r0
    const rssBeforePreviewBytes = process.memoryUsage.rss()
    const peakRssBeforePreviewBytes = peakRss()
    const splitBeforePreview = rssSplit()
    let sampledPeakRssDuringPreviewBytes = rssBeforePreviewBytes
    let splitAtSampledPeak = splitBeforePreview
    const sample = (): void => {
      const rss = process.memoryUsage.rss()
      if (rss <= sampledPeakRssDuringPreviewBytes) return
      sampledPeakRssDuringPreviewBytes = rss
      splitAtSampledPeak = rssSplit()
    }
    const sampler = setInterval(sample, RSS_SAMPLE_MS)
    const scansInThreadsBefore = engine.stats.previewScansInThreads
    const previewMs: number[] = []
    const previewCpuMs: number[] = []
    const pagesWaitMs: number[] = []
    const settlePages = async (): Promise<number> => {
      const w0 = performance.now()
      await engine.pagesSettled()
      return Math.round(performance.now() - w0)
    }
    let pagesAfterMs: number
    let last: Awaited<ReturnType<typeof engine.preview>> | undefined
    try {
      for (let i = 0; i < runs; i++) {
        pagesWaitMs.push(await settlePages())
        const cpu = process.cpuUsage()
        last = await engine.preview(rule, { sample: 10 })
        const used = process.cpuUsage(cpu)
        previewMs.push(last.elapsedMs)
        previewCpuMs.push(Math.round((used.user + used.system) / 1000))
      }
      pagesAfterMs = await settlePages()
    } finally {
      clearInterval(sampler)
    }
    sample()
    const rssAfterPreviewBytes = process.memoryUsage.rss()
    const memory: PreviewMemory = {
      rssBeforePreviewBytes,
      peakRssBeforePreviewBytes,
      sampledPeakRssDuringPreviewBytes: Math.max(sampledPeakRssDuringPreviewBytes, rssAfterPreviewBytes),
      rssAfterPreviewBytes,
      peakRssBytes: peakRss(),
      splitBeforePreview,
      splitAtSampledPeak,
    }
    if (last === undefined) throw new Error('no preview ran')
    const threads = Math.min(config.engine.previewThreads, config.engine.partitions)
    return {
      rule,
      users: last.users,
      matched: last.matched,
      openMs: Math.round(openMs),
      replayedRecords: engine.stats.recordsIn,
      replayMs: Math.round(replayMs),
      pagesWaitMs,
      pagesAfterMs,
      pageBuilds: engine.stats.projectionPageBuilds,
      previewThreads: config.engine.previewThreads,
      previewThreadsStarted: engine.stats.previewScansInThreads > scansInThreadsBefore ? threads : 0,
      previewMs,
      previewCpuMs,
      memory,
      values: last.values,
    }
  } finally {
    await runtime.close()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'replay-first': { type: 'string', multiple: true } } })
  const [configPath, rule, runs] = positionals
  if (configPath === undefined) {
    process.stderr.write('usage: preview-run CONFIG [RULE] [RUNS] [--replay-first FILE...]\n')
    process.exit(2)
  }
  const result = await runPreview(configPath, {
    rule: rule ?? DEFAULT_PREVIEW_RULE,
    runs: runs === undefined ? 3 : Number(runs),
    replayFirst: values['replay-first'] ?? [],
  })
  process.stdout.write(`${JSON.stringify(result)}\n`)
}
