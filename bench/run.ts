/**
 * The benchmark runner (issue #7): `npm run bench [-- options]`.
 *
 *   --quick             small inputs, 3 runs: the whole suite in under 3 minutes
 *   --only NAME[,NAME]  scenarios by name or number (e.g. `--only replay,5`)
 *   --runs N            runs per figure (default 3)
 *   --events N          scenario 1 input size (and follow-up traffic); --users N: populated store size
 *   --profile           scenarios 1 and 2 only, their engines profiled (V8's sampling profiler) into
 *                       bench/results/profiles/
 *   --reuse-stores      reuse populated stores an earlier invocation built from the same src/,
 *                       operators/ and config/ (committed, unchanged); default: build them again
 *   --work-dir DIR      cached inputs and stores (default bench/.work, gitignored)
 *   --results-dir DIR   where the results JSON goes (default bench/results)
 *
 * Scenarios are the modules in bench/scenarios/ (each exports `scenario`, see lib/scenario.ts);
 * issue #7's scenarios without a module in this build are reported as not available.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { topInclusiveCosts, topSelfCosts, type Cost } from './lib/cpuprofile.js'
import { environmentOverrides, gitCommit, machine } from './lib/machine.js'
import { ENGINE_ENV } from './lib/processes.js'
import { EXPECTED_SCENARIOS, type BenchContext, type Figure, type Scenario, type Target } from './lib/scenario.js'
import { sizesFor } from './lib/sizes.js'
import { summarize, type Summary } from './lib/stats.js'

const here = dirname(fileURLToPath(import.meta.url))
/** dist/bench -> repository root. */
const ROOT = resolve(here, '../..')

export interface FigureResult extends Summary {
  readonly id: string
  readonly title: string
  readonly unit: string
  readonly better: 'higher' | 'lower'
  readonly samples: readonly number[]
  readonly limit?: Summary & { readonly title: string; readonly samples: readonly number[] }
  /** median / limit median. */
  readonly ratioToLimit?: number
  readonly target?: Target
  /** >= 1 when the target is met: (ratioToLimit / required ratio) or (target value / median). */
  readonly ratioToTarget?: number
  readonly met?: boolean
  readonly details?: Readonly<Record<string, unknown>>
}

export interface ScenarioResult {
  readonly number: number
  readonly name: string
  readonly title: string
  readonly status: 'ok' | 'not-available' | 'failed'
  readonly reason?: string
  readonly seconds: number
  readonly figures: readonly FigureResult[]
  readonly details?: Readonly<Record<string, unknown>>
}

function figureResult(f: Figure): FigureResult {
  const s = summarize(f.samples)
  const limit = f.limit === undefined ? undefined : { title: f.limit.title, samples: f.limit.samples, ...summarize(f.limit.samples) }
  const ratioToLimit = limit === undefined ? undefined : s.median / limit.median
  let ratioToTarget: number | undefined
  if (f.target?.kind === 'ratio-to-limit-at-least' && ratioToLimit !== undefined) ratioToTarget = ratioToLimit / f.target.ratio
  if (f.target?.kind === 'at-most') ratioToTarget = f.target.value / s.median
  return {
    id: f.id,
    title: f.title,
    unit: f.unit,
    better: f.better,
    samples: f.samples,
    ...s,
    ...(limit !== undefined ? { limit, ratioToLimit } : {}),
    ...(f.target !== undefined ? { target: f.target } : {}),
    ...(ratioToTarget !== undefined ? { ratioToTarget, met: ratioToTarget >= 1 } : {}),
    ...(f.details !== undefined ? { details: f.details } : {}),
  }
}

async function discover(): Promise<Scenario[]> {
  const dir = join(here, 'scenarios')
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.js')).sort() : []
  const found: Scenario[] = []
  for (const file of files) {
    const mod = (await import(pathToFileURL(join(dir, file)).href)) as { scenario?: Scenario; scenarios?: Scenario[] }
    if (mod.scenario !== undefined) found.push(mod.scenario)
    if (mod.scenarios !== undefined) found.push(...mod.scenarios)
  }
  return found.sort((a, b) => a.number - b.number || a.name.localeCompare(b.name))
}

function formatValue(v: number | undefined, unit: string): string {
  if (v === undefined || Number.isNaN(v)) return '-'
  if (unit === 'bytes') return v >= 2 ** 20 ? `${(v / 2 ** 20).toFixed(0)} MiB` : `${v.toFixed(0)} B`
  if (unit === 'ms') return v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${v.toFixed(0)} ms`
  if (unit === 'events/s') return `${Math.round(v).toLocaleString('en')}/s`
  return `${v.toFixed(2)} ${unit}`
}

function targetText(t: Target | undefined, unit: string): string {
  if (t === undefined) return '-'
  return t.kind === 'ratio-to-limit-at-least' ? `>= ${t.ratio}x limit` : `<= ${formatValue(t.value, unit)}`
}

function table(results: readonly ScenarioResult[]): string {
  const rows: string[][] = [['#', 'figure', 'median', 'min', 'max', 'limit (median)', 'vs limit', 'target', 'vs target']]
  for (const r of results) {
    if (r.status !== 'ok') {
      rows.push([String(r.number), `${r.title}: ${r.status === 'failed' ? 'FAILED' : 'not available in this build'}`, '', '', '', '', '', '', ''])
      continue
    }
    for (const f of r.figures) {
      rows.push([
        String(r.number),
        f.title,
        formatValue(f.median, f.unit),
        formatValue(f.min, f.unit),
        formatValue(f.max, f.unit),
        f.limit === undefined ? '-' : formatValue(f.limit.median, f.unit),
        f.ratioToLimit === undefined ? '-' : `${f.ratioToLimit.toFixed(3)}x`,
        targetText(f.target, f.unit),
        f.ratioToTarget === undefined ? '-' : `${f.ratioToTarget.toFixed(2)} ${f.met ? 'met' : 'MISSED'}`,
      ])
    }
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => (row[c] ?? '').length)))
  return rows.map((row) => row.map((cell, c) => cell.padEnd(widths[c] as number)).join('  ').trimEnd()).join('\n')
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      runs: { type: 'string' },
      events: { type: 'string' },
      users: { type: 'string' },
      profile: { type: 'boolean', default: false },
      'reuse-stores': { type: 'boolean', default: false },
      'work-dir': { type: 'string' },
      'results-dir': { type: 'string' },
    },
  })
  const positive = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${v}"`)
    return n
  }
  const runs = positive('runs', values.runs) ?? 3
  const resultsDir = resolve(values['results-dir'] ?? join(ROOT, 'bench/results'))
  const workDir = resolve(values['work-dir'] ?? join(ROOT, 'bench/.work'))
  const profileDir = values.profile ? join(resultsDir, 'profiles') : undefined
  mkdirSync(workDir, { recursive: true })
  if (profileDir !== undefined) mkdirSync(profileDir, { recursive: true })
  const profilesBefore = new Set(profileDir === undefined ? [] : readdirSync(profileDir))
  const sizes = sizesFor(values.quick, positive('events', values.events), positive('users', values.users))

  const all = await discover()
  const wanted = values.only?.split(',').map((s) => s.trim()).filter((s) => s !== '')
  let chosen = wanted === undefined ? all : all.filter((s) => wanted.includes(s.name) || wanted.includes(String(s.number)))
  if (values.profile) chosen = chosen.filter((s) => s.profiled === true)
  if (wanted !== undefined) {
    const known = new Set([...all.map((s) => s.name), ...EXPECTED_SCENARIOS.map((e) => String(e.number)), ...all.map((s) => String(s.number))])
    const unknown = wanted.filter((w) => !known.has(w))
    if (unknown.length > 0) throw new Error(`unknown scenario(s): ${unknown.join(', ')}; available: ${all.map((s) => `${s.number} ${s.name}`).join(', ')}`)
  }

  const startedAt = new Date()
  const commit = gitCommit(ROOT)
  const benchStart = performance.now()
  const ctx: BenchContext = {
    quick: values.quick,
    runs,
    sizes,
    workDir,
    root: ROOT,
    profileDir,
    reuseStores: values['reuse-stores'],
    shared: new Map(),
    // Seconds since the start: where an invocation's time goes (a quick run must stay under 3 minutes).
    log: (m) => process.stderr.write(`bench [${((performance.now() - benchStart) / 1000).toFixed(1)}s]: ${m}\n`),
  }
  ctx.log(`${values.quick ? 'quick' : 'full'} run of ${chosen.map((s) => s.name).join(', ') || 'nothing'}; ${runs} runs; commit ${commit.short}${commit.dirty ? ' (dirty)' : ''}`)

  const results: ScenarioResult[] = []
  /** Profile files by the scenario that wrote them. */
  const profileFiles: { scenario: number; file: string }[] = []
  const seenProfiles = new Set(profilesBefore)
  for (const s of chosen) {
    ctx.log(`scenario ${s.number} ${s.name}: ${s.title}`)
    const t0 = performance.now()
    try {
      const outcome = await s.run(ctx)
      const seconds = (performance.now() - t0) / 1000
      results.push(
        outcome.status === 'ok'
          ? { number: s.number, name: s.name, title: s.title, status: 'ok', seconds, figures: outcome.figures.map(figureResult), ...(outcome.details ? { details: outcome.details } : {}) }
          : { number: s.number, name: s.name, title: s.title, status: 'not-available', reason: outcome.reason, seconds, figures: [] },
      )
    } catch (err) {
      ctx.log(`scenario ${s.name} failed: ${(err as Error).stack ?? String(err)}`)
      results.push({ number: s.number, name: s.name, title: s.title, status: 'failed', reason: (err as Error).message, seconds: (performance.now() - t0) / 1000, figures: [] })
    }
    if (profileDir !== undefined) {
      for (const f of readdirSync(profileDir).sort()) {
        if (!f.endsWith('.cpuprofile') || seenProfiles.has(f)) continue
        seenProfiles.add(f)
        profileFiles.push({ scenario: s.number, file: f })
      }
    }
  }
  // Issue #7's scenarios that no module in this build provides.
  const provided = new Set(all.map((s) => s.number))
  for (const e of EXPECTED_SCENARIOS) {
    if (provided.has(e.number)) continue
    if (wanted !== undefined && !wanted.includes(String(e.number))) continue
    if (values.profile) continue
    results.push({ number: e.number, name: `scenario-${e.number}`, title: e.title, status: 'not-available', reason: `not available in this build (expected from ${e.module})`, seconds: 0, figures: [] })
  }
  results.sort((a, b) => a.number - b.number)

  let profiles: { scenario: number; file: string; top: Cost[]; inclusive: Cost[] }[] | undefined
  if (profileDir !== undefined) {
    profiles = profileFiles.map(({ scenario, file: f }) => ({
      scenario,
      file: join('bench/results/profiles', f),
      top: topSelfCosts(join(profileDir, f), 15),
      // The engine's own functions (and the operators) with what they call: where the time goes.
      inclusive: topInclusiveCosts(join(profileDir, f), /\/(src|operators)\/|msgpackr|classic-level|kafka-javascript/, 25),
    }))
  }

  const finishedAt = new Date()
  const report = {
    schema: 'tagstream-bench/1',
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    mode: values.quick ? 'quick' : 'full',
    profile: values.profile,
    runs,
    sizes,
    machine: machine(),
    commit,
    environment: environmentOverrides(),
    scenarios: results,
    ...(profiles !== undefined ? { profiles } : {}),
  }
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, `${startedAt.toISOString().replaceAll(':', '').replace(/\.\d+Z$/, 'Z')}-${commit.short}.json`)
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n')
  process.stdout.write(table(results) + '\n')
  if (profiles !== undefined) {
    for (const p of profiles) {
      process.stdout.write(`\nscenario ${p.scenario}, ${p.file}: largest self costs\n`)
      for (const c of p.top.slice(0, 8)) process.stdout.write(`  ${c.selfPercent.toFixed(1).padStart(5)}%  ${c.function} ${c.location}\n`)
      process.stdout.write('  inclusive (engine, operators, msgpackr, classic-level, the Kafka client):\n')
      for (const c of p.inclusive.slice(0, 16)) process.stdout.write(`  ${c.selfPercent.toFixed(1).padStart(5)}%  ${c.function} ${c.location}\n`)
    }
  }
  process.stdout.write(`\nresults: ${file}\n`)
  if (results.some((r) => r.status === 'failed')) process.exitCode = 1
}

if (process.env.UV_THREADPOOL_SIZE === undefined) {
  // libuv sizes its pool once, before this module runs (the module loader uses it): scenario 2's
  // engines run in this process, so it starts again with the environment the tagstream command sets.
  const child = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, ...ENGINE_ENV } })
  process.exit(child.status ?? 1)
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
