/**
 * The one interface a benchmark scenario implements. A scenario is a module in bench/scenarios/
 * exporting `scenario`; the runner discovers every module there, so adding a scenario is adding a file.
 */
import type { Sizes } from './sizes.js'

/** What a figure is held against. Ratios are always `limit / value` or `value / limit` so that >= 1 is good. */
export type Target =
  /** value / limit must be at least `ratio` (throughput: engine rate vs the bare rate). */
  | { readonly kind: 'ratio-to-limit-at-least'; readonly ratio: number }
  /** value must be at most `value` (in the figure's unit). */
  | { readonly kind: 'at-most'; readonly value: number }

export interface Figure {
  /** Stable id, e.g. `replay.eventsPerSecond`. */
  readonly id: string
  readonly title: string
  readonly unit: string
  /** One value per run. */
  readonly samples: readonly number[]
  readonly better: 'higher' | 'lower'
  /** The physical limit measured in the same invocation on the same input, one value per run. */
  readonly limit?: { readonly title: string; readonly samples: readonly number[] }
  readonly target?: Target
  /** Method notes and secondary values, kept in the JSON. */
  readonly details?: Readonly<Record<string, unknown>>
}

export type ScenarioOutcome =
  | { readonly status: 'ok'; readonly figures: readonly Figure[]; readonly details?: Readonly<Record<string, unknown>> }
  | { readonly status: 'not-available'; readonly reason: string }

export interface BenchContext {
  readonly quick: boolean
  /** Runs per figure (>= 3 for a valid report). */
  readonly runs: number
  readonly sizes: Sizes
  /** Scratch space: cached inputs, stores (gitignored). */
  readonly workDir: string
  /** Repository root (the compiled CLI is dist/src/cli/main.js under it). */
  readonly root: string
  /** Write CPU profiles of the engine processes here (only when --profile). */
  readonly profileDir: string | undefined
  /**
   * Reuse a populated store an earlier invocation built from the same code (`--reuse-stores`):
   * a 1,000,000-user store takes half an hour to build.
   */
  readonly reuseStores: boolean
  /** State shared between scenarios of one invocation (e.g. a populated store built once). */
  readonly shared: Map<string, unknown>
  log(message: string): void
}

export interface Scenario {
  /** Short name for `--only`, e.g. `replay`. */
  readonly name: string
  /** The scenario's number in issue #7. */
  readonly number: number
  readonly title: string
  /** Runs in `--profile` mode (scenario 1). */
  readonly profiled?: boolean
  run(ctx: BenchContext): Promise<ScenarioOutcome>
}

/** Scenarios of issue #7 this runner reports even when their module is absent from the build. */
export const EXPECTED_SCENARIOS: readonly { readonly number: number; readonly title: string; readonly module: string }[] = [
  { number: 1, title: 'Replay throughput, all default operators, durable commits', module: 'bench/scenarios/replay.ts' },
  { number: 2, title: 'Kafka end to end on the mock cluster vs bare consume+decode', module: 'bench/scenarios/kafka.ts' },
  { number: 3, title: 'Latency produced -> tag change consumed at 20,000 ev/s through Kafka', module: 'bench/scenarios/kafka-latency.ts' },
  { number: 4, title: 'Memory at 1,000,000 users, default cache bound', module: 'bench/scenarios/memory.ts' },
  { number: 5, title: 'Recovery: start to ready after SIGKILL, 1,000,000 users', module: 'bench/scenarios/recovery.ts' },
  { number: 6, title: 'Re-scoring sweep per 1,000,000 users while ingesting', module: 'bench/scenarios/sweep.ts' },
  { number: 7, title: 'Rule preview over 1,000,000 users', module: 'bench/scenarios/preview.ts' },
]
