/**
 * Rule preview (dry run) over every user of an existing store: opens the engine of a config (its
 * sources are not read), runs `Engine.preview` `runs` times and prints one JSON line with the
 * timings. Scenario 7 of the bench suite runs it on the populated 1,000,000-user store.
 *
 *   node dist/bench/preview-run.js CONFIG [RULE] [RUNS]
 */
import { loadConfig } from '../src/config/load.js'
import { openRuntime } from '../src/runtime.js'

export const DEFAULT_PREVIEW_RULE = 'rfm.monetary >= 100.0 && lifecycle.stage in ["new", "active", "reactivated"]'

export interface PreviewRun {
  readonly rule: string
  readonly users: number
  readonly matched: number
  readonly openMs: number
  /** Wall time of each preview, ms. */
  readonly previewMs: readonly number[]
  /**
   * CPU time of the process (every thread: LevelDB's reads run on libuv's pool) during each
   * preview, ms: less dependent than wall time on what else the machine runs.
   */
  readonly previewCpuMs: readonly number[]
  readonly values: readonly { readonly value: unknown; readonly users: number }[]
}

export async function runPreview(configPath: string, rule = DEFAULT_PREVIEW_RULE, runs = 3): Promise<PreviewRun> {
  const { config } = loadConfig(configPath)
  const t0 = performance.now()
  // Replay mode with no files: the configured sources are not opened, nothing is ingested.
  const runtime = await openRuntime({ ...config, http: { ...config.http, enabled: false } }, { live: false, replayFiles: [] })
  const openMs = performance.now() - t0
  try {
    const previewMs: number[] = []
    const previewCpuMs: number[] = []
    let last: Awaited<ReturnType<typeof runtime.engine.preview>> | undefined
    for (let i = 0; i < runs; i++) {
      const cpu = process.cpuUsage()
      last = await runtime.engine.preview(rule, { sample: 10 })
      const used = process.cpuUsage(cpu)
      previewMs.push(last.elapsedMs)
      previewCpuMs.push(Math.round((used.user + used.system) / 1000))
    }
    if (last === undefined) throw new Error('runs must be at least 1')
    return { rule, users: last.users, matched: last.matched, openMs: Math.round(openMs), previewMs, previewCpuMs, values: last.values }
  } finally {
    await runtime.close()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [configPath, rule, runs] = process.argv.slice(2)
  if (configPath === undefined) {
    process.stderr.write('usage: preview-run CONFIG [RULE] [RUNS]\n')
    process.exit(2)
  }
  const result = await runPreview(configPath, rule ?? DEFAULT_PREVIEW_RULE, runs === undefined ? 3 : Number(runs))
  process.stdout.write(`${JSON.stringify(result)}\n`)
}
