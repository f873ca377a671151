import { spawnSync } from 'node:child_process'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { REJECT_REASON_LIST } from '../../src/contracts/input-event.js'
import { LATENCY_BUCKETS_MS, LatencyRecorder, createEngineObserver, createMetrics } from '../../src/metrics/metrics.js'
import type { Operator } from '../../src/operator-api.js'
import { createFixture } from '../support/engine-fixture.js'
import { silentLogger } from '../../src/log.js'
import { OPERATION_NAMES, ProgressReporter } from '../../src/progress.js'
import { FakeEngine, event, openIngest } from '../http/fake-engine.js'

/** The value of one sample line, e.g. `metric{a="b"}`; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  }
  return undefined
}

const promtool = spawnSync('promtool', ['--version']).status === 0
if (!promtool) console.warn('promtool not found: the `promtool check metrics` tests are skipped (install Debian package `prometheus`)')

function promtoolCheck(text: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
  return { status: r.status, output: `${r.stdout}${r.stderr}` }
}

describe('createMetrics', () => {
  it('reads the engine counters at scrape time, never before', async () => {
    const engine = new FakeEngine()
    const { registry } = createMetrics(engine, new Registry(), { defaultMetrics: false })
    engine.stats.recordsIn = 10
    engine.stats.eventsApplied = 7
    engine.stats.duplicates = 1
    engine.stats.invalid.missing_field = 2
    engine.stats.tagChanges = 5
    engine.stats.testingChanges = 4
    engine.stats.timersFired = 3
    engine.stats.operatorErrors = 1
    engine.stats.commits = 2
    engine.stats.lastCommitMs = 12
    engine.stats.usersCreated = 6
    engine.stats.sweepsStarted = 2
    engine.stats.sweepsCompleted = 1
    engine.stats.usersRescored = 40
    engine.stats.lastSweepMs = 1500
    engine.stats.ruleEvaluations = 9
    engine.stats.ruleErrorsByTag.spread = 2
    engine.stats.reentrySuppressed.active = 1
    engine.stats.definitionPassesStarted = 3
    engine.stats.projectionPageBuilds = 8
    engine.stats.projectionPageBuildErrors = 1
    engine.stats.definitionPassesCompleted = 2
    engine.stats.usersReevaluated = 50
    engine.userCount = 6
    engine.cachedUsers = 4
    let text = await registry.metrics()
    expect(sample(text, 'tagstream_events_received_total')).toBe(10)
    expect(sample(text, 'tagstream_events_applied_total')).toBe(7)
    expect(sample(text, 'tagstream_events_duplicate_total')).toBe(1)
    expect(sample(text, 'tagstream_events_invalid_total{reason="missing_field"}')).toBe(2)
    expect(sample(text, 'tagstream_events_dead_lettered_total{reason="missing_field"}')).toBe(2)
    expect(sample(text, 'tagstream_tag_changes_total')).toBe(5)
    expect(sample(text, 'tagstream_tag_changes_testing_total')).toBe(4)
    expect(sample(text, 'tagstream_timers_fired_total')).toBe(3)
    expect(sample(text, 'tagstream_rule_evaluations_total')).toBe(9)
    expect(sample(text, 'tagstream_rule_evaluation_errors_total{tag="spread"}')).toBe(2)
    expect(sample(text, 'tagstream_reentry_suppressed_total{tag="active"}')).toBe(1)
    expect(sample(text, 'tagstream_definition_passes_started_total')).toBe(3)
    expect(sample(text, 'tagstream_definition_passes_completed_total')).toBe(2)
    expect(sample(text, 'tagstream_definition_users_reevaluated_total')).toBe(50)
    expect(sample(text, 'tagstream_operator_errors_total')).toBe(1)
    expect(sample(text, 'tagstream_commits_total')).toBe(2)
    expect(sample(text, 'tagstream_last_commit_duration_seconds')).toBe(0.012)
    expect(sample(text, 'tagstream_users')).toBe(6)
    expect(sample(text, 'tagstream_users_created_total')).toBe(6)
    expect(sample(text, 'tagstream_user_cache_entries')).toBe(4)
    expect(sample(text, 'tagstream_rescore_sweeps_started_total')).toBe(2)
    expect(sample(text, 'tagstream_rescore_sweeps_completed_total')).toBe(1)
    expect(sample(text, 'tagstream_rescore_users_total')).toBe(40)
    expect(sample(text, 'tagstream_rescore_last_sweep_duration_seconds')).toBe(1.5)
    expect(sample(text, 'tagstream_projection_page_builds_total')).toBe(8)
    expect(sample(text, 'tagstream_projection_page_build_errors_total')).toBe(1)

    engine.stats.recordsIn = 25
    text = await registry.metrics()
    expect(sample(text, 'tagstream_events_received_total')).toBe(25)
    // Counters never go down, even if the numbers they follow do (an engine replaced in-process).
    engine.stats.recordsIn = 3
    expect(sample(await registry.metrics(), 'tagstream_events_received_total')).toBe(25)
  })

  it('pre-initializes every reject reason to 0, and prefers dead-letter counts when the engine keeps them', async () => {
    const engine = new FakeEngine()
    const { registry } = createMetrics(engine, new Registry(), { defaultMetrics: false })
    let text = await registry.metrics()
    for (const reason of REJECT_REASON_LIST) {
      expect(sample(text, `tagstream_events_invalid_total{reason="${reason}"}`)).toBe(0)
      expect(sample(text, `tagstream_events_dead_lettered_total{reason="${reason}"}`)).toBe(0)
    }
    Object.assign(engine.stats, { invalid: { ...engine.stats.invalid, too_late: 3 }, deadLettered: { too_late: 2 } })
    text = await registry.metrics()
    expect(sample(text, 'tagstream_events_invalid_total{reason="too_late"}')).toBe(3)
    expect(sample(text, 'tagstream_events_dead_lettered_total{reason="too_late"}')).toBe(2)
  })

  it('exposes tag changes by tag and op when the engine keeps them', async () => {
    const engine = new FakeEngine()
    const { registry } = createMetrics(engine, new Registry(), { defaultMetrics: false })
    expect(await registry.metrics()).not.toMatch(/^tagstream_tag_changes_by_tag_total\{/m)
    const vip = { entered: 3, left: 1, changed: 0 }
    Object.assign(engine.stats, { tagChangesByTag: { vip, 'rfm.segment': { entered: 5, left: 0, changed: 7 } } })
    await registry.metrics()
    vip.entered = 4
    const text = await registry.metrics()
    expect(sample(text, 'tagstream_tag_changes_by_tag_total{tag="vip",op="entered"}')).toBe(4)
    expect(sample(text, 'tagstream_tag_changes_by_tag_total{tag="vip",op="left"}')).toBe(1)
    expect(sample(text, 'tagstream_tag_changes_by_tag_total{tag="rfm.segment",op="changed"}')).toBe(7)
  })

  it('exposes watermarks in seconds for partitions that have one, cache hit ratio, readiness', async () => {
    const engine = new FakeEngine()
    const { registry } = createMetrics(engine, new Registry(), { defaultMetrics: false })
    let text = await registry.metrics()
    expect(sample(text, 'tagstream_user_cache_hit_ratio')).toBe(0)
    expect(sample(text, 'tagstream_ready')).toBe(1)
    engine.clocks.set(0, Date.UTC(2025, 0, 1, 0, 0, 1, 500))
    engine.clocks.set(1, -Infinity)
    engine.stats.cacheHits = 3
    engine.stats.cacheMisses = 1
    engine.ready = false
    text = await registry.metrics()
    expect(sample(text, 'tagstream_watermark_timestamp_seconds{partition="0"}')).toBe(1735689601.5)
    expect(text).not.toContain('partition="1"')
    expect(sample(text, 'tagstream_user_cache_lookups_total{result="hit"}')).toBe(3)
    expect(sample(text, 'tagstream_user_cache_lookups_total{result="miss"}')).toBe(1)
    expect(sample(text, 'tagstream_user_cache_hit_ratio')).toBe(0.75)
    expect(sample(text, 'tagstream_ready')).toBe(0)
  })

  it('turns the engine hooks into histograms in seconds, buckets from 0.1 ms to 10 s', async () => {
    const engine = new FakeEngine()
    const observer = createEngineObserver()
    const { registry } = createMetrics(engine, new Registry(), { defaultMetrics: false, observer })
    observer.commit(0.3)
    observer.commit(40)
    observer.batch(2, 100) // 100 records waited 2 ms each
    observer.endToEnd(15_000) // beyond the last bucket
    observer.endToEnd(-5) // an event stamped ahead of the wall clock
    observer.endToEnd(0.1, 3)
    const text = await registry.metrics()
    expect(sample(text, 'tagstream_commit_duration_seconds_bucket{le="0.0001"}')).toBe(0)
    expect(sample(text, 'tagstream_commit_duration_seconds_bucket{le="0.0005"}')).toBe(1)
    expect(sample(text, 'tagstream_commit_duration_seconds_bucket{le="0.05"}')).toBe(2)
    expect(sample(text, 'tagstream_commit_duration_seconds_bucket{le="+Inf"}')).toBe(2)
    expect(sample(text, 'tagstream_commit_duration_seconds_sum')).toBeCloseTo(0.0403, 9)
    expect(sample(text, 'tagstream_commit_duration_seconds_count')).toBe(2)
    expect(sample(text, 'tagstream_event_processing_duration_seconds_bucket{le="0.001"}')).toBe(0)
    expect(sample(text, 'tagstream_event_processing_duration_seconds_bucket{le="0.0025"}')).toBe(100)
    expect(sample(text, 'tagstream_event_processing_duration_seconds_sum')).toBeCloseTo(0.2, 9)
    expect(sample(text, 'tagstream_end_to_end_latency_seconds_bucket{le="0.0001"}')).toBe(4)
    expect(sample(text, 'tagstream_end_to_end_latency_seconds_bucket{le="10"}')).toBe(4)
    expect(sample(text, 'tagstream_end_to_end_latency_seconds_bucket{le="+Inf"}')).toBe(5)
    expect(sample(text, 'tagstream_end_to_end_latency_seconds_count')).toBe(5)
    const les = [...text.matchAll(/^tagstream_commit_duration_seconds_bucket\{le="([^"]+)"\}/gm)].map((m) => m[1])
    expect(les).toEqual([...LATENCY_BUCKETS_MS.map((ms) => String(ms / 1000)), '+Inf'])
  })

  it('keeps hook observations as plain numbers until a scrape', () => {
    const r = new LatencyRecorder([1, 10])
    r.observe(0.5)
    r.observe(1)
    r.observe(5, 2)
    r.observe(50)
    expect([...r.counts]).toEqual([2, 2, 1])
    expect(r.count).toBe(5)
    expect(r.sumMs).toBe(61.5)
    expect(() => new LatencyRecorder([2, 1])).toThrow(RangeError)
  })

  it('registers the default process metrics on the injected registry, without the nonconforming ones', async () => {
    const { registry } = createMetrics(new FakeEngine(), new Registry())
    const text = await registry.metrics()
    expect(text).toContain('process_cpu_user_seconds_total')
    expect(text).toContain('nodejs_heap_size_used_bytes')
    expect(text).not.toContain('nodejs_active_handles_total')
  })

  it('exposes the progress of long operations: running, ratio, ETA, duration, runs by outcome', async () => {
    let now = 0
    const progress = new ProgressReporter({ logger: silentLogger(), now: () => now, timer: false })
    const { registry } = createMetrics(new FakeEngine(), new Registry(), { defaultMetrics: false, operations: progress })
    let text = await registry.metrics()
    for (const operation of OPERATION_NAMES) {
      expect(sample(text, `tagstream_operation_running{operation="${operation}"}`)).toBe(0)
      expect(sample(text, `tagstream_operations_total{operation="${operation}",outcome="completed"}`)).toBe(0)
    }
    // Unknown until an operation has run.
    expect(text).not.toMatch(/^tagstream_operation_progress_ratio\{/m)

    const restore = progress.start('restore', { unit: 'users', total: 100 })
    progress.start('rescore', { unit: 'users', total: 40 }).finish()
    now = 2000
    restore.done = 25
    progress.tick()
    text = await registry.metrics()
    expect(sample(text, 'tagstream_operation_running{operation="restore"}')).toBe(1)
    expect(sample(text, 'tagstream_operation_running{operation="rescore"}')).toBe(0)
    expect(sample(text, 'tagstream_operation_progress_ratio{operation="restore"}')).toBe(0.25)
    // 25 users in 2 s: 75 left at 12.5/s.
    expect(sample(text, 'tagstream_operation_eta_seconds{operation="restore"}')).toBe(6)
    expect(sample(text, 'tagstream_operation_duration_seconds{operation="restore"}')).toBe(2)
    expect(sample(text, 'tagstream_operation_progress_ratio{operation="rescore"}')).toBe(1)
    expect(sample(text, 'tagstream_operation_duration_seconds{operation="rescore"}')).toBe(0)
    expect(sample(text, 'tagstream_operations_total{operation="rescore",outcome="completed"}')).toBe(1)

    now = 3000
    restore.done = 60
    restore.finish('stopped')
    text = await registry.metrics()
    expect(sample(text, 'tagstream_operation_running{operation="restore"}')).toBe(0)
    expect(sample(text, 'tagstream_operation_progress_ratio{operation="restore"}')).toBe(0.6)
    expect(sample(text, 'tagstream_operation_eta_seconds{operation="restore"}')).toBe(0)
    expect(sample(text, 'tagstream_operation_duration_seconds{operation="restore"}')).toBe(3)
    expect(sample(text, 'tagstream_operations_total{operation="restore",outcome="stopped"}')).toBe(1)
    expect(sample(text, 'tagstream_operations_total{operation="restore",outcome="completed"}')).toBe(0)
  })

  it.skipIf(!promtool)('passes `promtool check metrics` with no findings after a simulated workload', async () => {
    const engine = new FakeEngine()
    const ingest = await openIngest(5)
    const observer = createEngineObserver()
    let now = 0
    const operations = new ProgressReporter({ logger: silentLogger(), now: () => now, timer: false })
    const { registry } = createMetrics(engine, new Registry(), { ingest, observer, operations })
    const replay = operations.start('replay', { unit: 'bytes', total: 1 << 20 })
    operations.start('restore', { unit: 'users', total: 10 }).finish()
    now = 1500
    replay.done = 1 << 18
    operations.tick()
    const decoded = [event('e1'), event('e2', 'bob')].map((e) => Buffer.from(JSON.stringify(e)))
    ingest.offer(decoded)
    ingest.offer(Array.from({ length: 5 }, () => decoded[0] as Buffer))
    ingest.countInvalid('missing_field')
    Object.assign(engine.stats, {
      recordsIn: 1200,
      eventsApplied: 1150,
      duplicates: 20,
      tagChanges: 300,
      cacheHits: 900,
      cacheMisses: 300,
      invalid: { ...engine.stats.invalid, invalid_json: 25, too_late: 5 },
      tagChangesByTag: { vip: { entered: 10, left: 2, changed: 0 }, 'lifecycle.stage': { entered: 100, left: 0, changed: 188 } },
    })
    engine.clocks.set(0, Date.UTC(2025, 0, 1))
    engine.clocks.set(3, Date.UTC(2025, 0, 2))
    for (let i = 0; i < 50; i++) {
      observer.commit(i * 0.7)
      observer.batch(i, 4096)
      observer.endToEnd(i * 13.1, 7)
    }
    const text = await registry.metrics()
    expect(sample(text, 'tagstream_operation_progress_ratio{operation="replay"}')).toBe(0.25)
    expect(sample(text, 'tagstream_operation_eta_seconds{operation="replay"}')).toBe(4.5)
    const check = promtoolCheck(text)
    expect(check.output).toBe('')
    expect(check.status).toBe(0)
  })

  it.skipIf(!promtool)('passes `promtool check metrics` on the real engine after a workload with bad input', async () => {
    const op: Operator<{ n: number }> = {
      name: 'visits',
      tags: [{ id: 'visits', description: 'events seen', category: ['test', 'activity'], valueType: 'number' }],
      initialState: () => ({ n: 0 }),
      onEvent: (state) => ({ n: state.n + 1 }),
      deriveTags: (state) => ({ visits: { value: state.n } }),
    }
    const f = await createFixture([op])
    const { registry } = createMetrics(f.engine, new Registry())
    f.source.push(event('e1'), event('e1'), event('e2', 'bob'), '{"nope"', { userId: 'x' })
    await f.drain()
    const text = await registry.metrics()
    expect(sample(text, 'tagstream_events_received_total')).toBe(5)
    expect(sample(text, 'tagstream_events_duplicate_total')).toBe(1)
    expect(sample(text, 'tagstream_events_invalid_total{reason="invalid_json"}')).toBe(1)
    expect(sample(text, 'tagstream_events_invalid_total{reason="missing_field"}')).toBe(1)
    expect(sample(text, 'tagstream_tag_changes_total')).toBe(2)
    expect(sample(text, 'tagstream_users')).toBe(2)
    const check = promtoolCheck(text)
    expect(check.output).toBe('')
    expect(check.status).toBe(0)
    await f.close()
  })
})
