import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { assertBuilt, startCli, writeConfig, type CliResult } from '../support/cli.js'

/**
 * The operations pack (config/prometheus, config/grafana) against real tools: promtool checks and
 * unit-tests the rules, the dashboard's queries are checked against a real scrape of the engine, and
 * a real Prometheus server scrapes a real engine (the compiled CLI with a generator source).
 */

const ROOT = resolve(import.meta.dirname, '../..')
const PROM_DIR = join(ROOT, 'config/prometheus')
const ALERTS = join(PROM_DIR, 'alerts.yaml')
const RECORDING = join(PROM_DIR, 'recording.yaml')
const ALERTS_TEST = join(PROM_DIR, 'alerts.test.yaml')
const SCRAPE_CONFIG = join(PROM_DIR, 'prometheus.yml')
const DASHBOARD = join(ROOT, 'config/grafana/tagstream.json')
const PARTITIONS = 4
/** The generator's default first event time (src/config/schema.ts): watermarks are at or after it. */
const GENERATOR_START_S = Date.parse('2025-01-01T00:00:00Z') / 1000
/** Metrics the rules reference that a source not yet built exports (the Kafka source). */
const PENDING_METRICS = new Set(['tagstream_consumer_lag_records'])
/** Series Prometheus itself writes for every target. */
const SYNTHETIC_METRICS = new Set(['up'])

const exec = promisify(execFile)

// ------------------------------------------------------------------ PromQL metric names

const AGGREGATIONS = ['sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile']
const KEYWORDS = new Set([...AGGREGATIONS, 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'and', 'or', 'unless', 'atan2', 'inf', 'nan'])

/**
 * The metric names a PromQL expression selects: strings, label matchers, ranges and label lists are
 * dropped, then every identifier that is neither a function call nor a keyword is a metric name.
 * Grafana's `label_values(selector, label)` template queries count as their selector.
 */
export function metricNames(expr: string): Set<string> {
  const labelValues = /^\s*label_values\(\s*(.+),\s*[A-Za-z_]\w*\s*\)\s*$/s.exec(expr)
  const source = labelValues ? (labelValues[1] as string) : expr
  const s = source
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const names = new Set<string>()
  for (const m of s.matchAll(/[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const token = m[0]
    if (/^[0-9]/.test(token) || KEYWORDS.has(token.toLowerCase())) continue
    if (/^\s*\(/.test(s.slice((m.index as number) + token.length))) continue // a function
    names.add(token)
  }
  return names
}

/** The metric names of an exposition: sample names, plus `_bucket/_sum/_count` of histograms and summaries. */
function exposedNames(exposition: string): Set<string> {
  const names = new Set<string>()
  for (const line of exposition.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line)
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string]
      names.add(name)
      if (kind === 'histogram' || kind === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix)
      continue
    }
    const sample = /^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]/.exec(line)
    if (sample) names.add(sample[1] as string)
  }
  return names
}

interface Dashboard {
  title: string
  panels: { type: string; title: string; targets?: { expr: string }[] }[]
  templating: { list: { name: string; type: string; query?: string | { query: string } }[] }
}

/** Every PromQL expression of the dashboard: panel targets and query variables. */
function dashboardQueries(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = []
  for (const p of d.panels) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}"`, expr: t.expr })
  for (const v of d.templating.list) {
    if (v.type !== 'query' || v.query === undefined) continue
    out.push({ where: `variable $${v.name}`, expr: typeof v.query === 'string' ? v.query : v.query.query })
  }
  return out
}

/** Grafana's variables as a query would see them with "All" selected. */
function substituteVariables(expr: string): string {
  return expr.replaceAll('$__rate_interval', '10s').replaceAll('$__interval', '5s').replace(/\$\{?(?:job|instance)\}?/g, '.*')
}

interface RuleFile {
  groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[]
}
const ruleExprs = (path: string): { name: string; expr: string }[] =>
  (parse(readFileSync(path, 'utf8')) as RuleFile).groups.flatMap((g) => g.rules.map((r) => ({ name: (r.alert ?? r.record) as string, expr: r.expr })))

// ------------------------------------------------------------------ processes

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', () => ok()))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((ok) => server.close(() => ok()))
  return port
}

async function waitFor<T>(what: string, deadlineMs: number, probe: () => Promise<T | undefined>, everyMs = 250): Promise<T> {
  const until = Date.now() + deadlineMs
  let lastError: unknown
  for (;;) {
    try {
      const v = await probe()
      if (v !== undefined) return v
    } catch (e) {
      lastError = e
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`)
    await sleep(everyMs)
  }
}

/** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
async function stop(child: ChildProcess | undefined, exited: Promise<unknown> | undefined, graceMs = 10_000): Promise<void> {
  if (child === undefined || exited === undefined || child.exitCode !== null || child.signalCode !== null) return
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited.catch(() => undefined)
  clearTimeout(timer)
}

interface PromVectorResult {
  status: string
  error?: string
  data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] }
}

async function promQuery(base: string, query: string): Promise<PromVectorResult> {
  const res = await fetch(`${base}/api/v1/query?${new URLSearchParams({ query })}`)
  return (await res.json()) as PromVectorResult
}

// ------------------------------------------------------------------ the tests

describe('ops pack: Prometheus rules, Grafana dashboard, a real Prometheus scraping a real engine', () => {
  const startedAt = Date.now()
  const dirs: string[] = []
  let engine: { child: ChildProcess; done: Promise<CliResult> } | undefined
  let engineStderr = ''
  let engineBase = ''
  let prometheus: { child: ChildProcess; exited: Promise<unknown>; log: () => string } | undefined

  beforeAll(async () => {
    assertBuilt()
    const dir = mkdtempSync(join(tmpdir(), 'ts-ops-'))
    dirs.push(dir)
    const { configPath } = writeConfig(
      {
        engine: { partitions: PARTITIONS },
        sources: [{ name: 'demo', type: 'generator', users: 500, eventsPerSecond: 2000 }],
        http: { enabled: true, host: '127.0.0.1', port: 0 },
      },
      dir,
    )
    engine = startCli(['run', '--config', configPath])
    engine.child.stderr?.on('data', (d: string) => (engineStderr += d))
    const port = await waitFor('the engine to listen', 20_000, async () => {
      if (engine?.child.exitCode !== null) throw new Error(`engine exited: ${engineStderr}`)
      return /API on http:\/\/127\.0\.0\.1:(\d+)/.exec(engineStderr)?.[1]
    })
    engineBase = `http://127.0.0.1:${port}`
  })

  afterAll(async () => {
    await stop(prometheus?.child, prometheus?.exited)
    await stop(engine?.child, engine?.done)
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  it('the PromQL name extractor sees metrics, not functions, keywords or labels', () => {
    expect([...metricNames('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x="y z", le!="1"}[5m])))')]).toEqual(['a_bucket'])
    expect([...metricNames('time() - max by (partition) (b offset 1h) and on (job) c:rec > bool 1e9')].sort()).toEqual(['b', 'c:rec'])
    expect([...metricNames('max_over_time(timestamp(increase(d[2m]) > 0)[26h:1m]) unless absent(e{job=~"x.*"})')].sort()).toEqual(['d', 'e'])
    expect([...metricNames('label_values(tagstream_ready{job=~"$job"}, instance)')]).toEqual(['tagstream_ready'])
  })

  it('promtool check rules: alerts and recording rules are valid, with no lint findings', async () => {
    const { stdout, stderr } = await exec('promtool', ['check', 'rules', '--lint=all', '--lint-fatal', ALERTS, RECORDING])
    const out = stdout + stderr
    expect(out).toMatch(/SUCCESS: 9 rules found/)
    expect(out).toMatch(/SUCCESS: 11 rules found/)
    expect(out).not.toMatch(/WARNING|FAILED|lint|duplicate/i)
    const alerts = ruleExprs(ALERTS).map((r) => r.name)
    expect(alerts.sort()).toEqual(
      [
        'TagstreamCommitLatencyHigh',
        'TagstreamConsumerLagGrowing',
        'TagstreamDeadLetterRateHigh',
        'TagstreamEventTimeStalled',
        'TagstreamNotReady',
        'TagstreamProjectionPagesFailing',
        'TagstreamRescoreSweepOverdue',
        'TagstreamTargetDown',
        'TagstreamTargetMissing',
      ].sort(),
    )
  })

  it('every alert has for, a severity, summary, description and runbook', () => {
    const file = parse(readFileSync(ALERTS, 'utf8')) as { groups: { rules: { alert: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[] }
    for (const rule of file.groups.flatMap((g) => g.rules)) {
      expect(rule.for, rule.alert).toMatch(/^\d+[smh]$/)
      expect(['critical', 'warning'], rule.alert).toContain(rule.labels?.severity)
      for (const key of ['summary', 'description', 'runbook']) expect(rule.annotations?.[key], `${rule.alert} ${key}`).toBeTruthy()
    }
  })

  it('promtool check config: the example scrape config and its rule files', async () => {
    const { stdout, stderr } = await exec('promtool', ['check', 'config', SCRAPE_CONFIG])
    expect(stdout + stderr).toMatch(/is valid prometheus config file syntax/)
    expect(stdout + stderr).not.toMatch(/FAILED/)
  })

  it('promtool test rules: every alert fires on its bad series and stays quiet on the good ones', async () => {
    const r = await exec('promtool', ['test', 'rules', ALERTS_TEST], { cwd: PROM_DIR }).catch((e: { stdout: string; stderr: string }) => e)
    expect(r.stdout + r.stderr).toMatch(/SUCCESS/)
    expect(r.stdout + r.stderr).not.toMatch(/FAILED/)
    // Each alert is exercised by the unit tests.
    const tested = readFileSync(ALERTS_TEST, 'utf8')
    for (const { name } of ruleExprs(ALERTS)) expect(tested, name).toContain(`alertname: ${name}`)
  })

  it('the dashboard and the rules reference only metrics a real engine exposes', async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard
    expect(dashboard.title).toBe('tagstream')
    expect(dashboard.templating.list.find((v) => v.type === 'datasource')).toBeDefined()
    // Watermarks appear with the first events: wait for a scrape that has them.
    const exposition = await waitFor('a scrape with watermarks', 20_000, async () => {
      const text = await (await fetch(`${engineBase}/metrics`)).text()
      return text.includes('tagstream_watermark_timestamp_seconds{') ? text : undefined
    })
    const exposed = exposedNames(exposition)

    const queries = dashboardQueries(dashboard)
    expect(queries.length).toBeGreaterThan(20)
    const unknown: string[] = []
    for (const { where, expr } of queries) {
      const names = metricNames(expr)
      expect(names.size, `${where}: ${expr}`).toBeGreaterThan(0)
      for (const n of names) if (!exposed.has(n)) unknown.push(`${where}: ${n}`)
    }
    expect(unknown).toEqual([])

    const rules = [...ruleExprs(ALERTS), ...ruleExprs(RECORDING)]
    const unknownInRules: string[] = []
    for (const { name, expr } of rules) {
      for (const n of metricNames(expr)) if (!exposed.has(n) && !SYNTHETIC_METRICS.has(n) && !PENDING_METRICS.has(n)) unknownInRules.push(`${name}: ${n}`)
    }
    expect(unknownInRules).toEqual([])
  })

  it('a real Prometheus scrapes the engine: positive throughput, a watermark per partition, rules loaded', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-prom-'))
    dirs.push(dir)
    const engineTarget = engineBase.replace('http://', '')
    const config = join(dir, 'prometheus.yml')
    writeFileSync(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        `  - ${JSON.stringify(ALERTS)}`,
        `  - ${JSON.stringify(RECORDING)}`,
        'scrape_configs:',
        '  - job_name: tagstream',
        '    static_configs:',
        `      - targets: [${JSON.stringify(engineTarget)}]`,
        '',
      ].join('\n'),
    )

    // A free port can be taken between probing and binding: retry with another one.
    let base = ''
    for (let attempt = 1; base === '' && attempt <= 3; attempt++) {
      const port = await freePort()
      let log = ''
      const child = spawn(
        'prometheus',
        [
          `--config.file=${config}`,
          `--storage.tsdb.path=${join(dir, `tsdb-${attempt}`)}`,
          `--web.listen-address=127.0.0.1:${port}`,
          '--storage.tsdb.retention.time=1h',
          '--log.level=warn',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      )
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (log += d))
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (log += d))
      const exited = new Promise<unknown>((ok) => child.once('close', ok))
      prometheus = { child, exited, log: () => log }
      try {
        await waitFor('Prometheus to be ready', 15_000, async () => {
          if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}: ${log}`)
          const res = await fetch(`http://127.0.0.1:${port}/-/ready`)
          return res.ok ? true : undefined
        })
        base = `http://127.0.0.1:${port}`
      } catch (e) {
        await stop(child, exited, 2000)
        if (attempt === 3) throw e
      }
    }

    // Throughput: the generator offers 2000 events/s. rate() over a window not yet filled with
    // samples reads low (it extrapolates only a little past the first one), so poll until the
    // 10s window is full of scrapes or the rate is near the offered one.
    let throughput: PromVectorResult | undefined
    let eventsPerSecond = 0
    const pollUntil = Date.now() + 30_000
    for (;;) {
      const r = await promQuery(base, 'rate(tagstream_events_received_total[10s])')
      expect(r.status, r.error).toBe('success')
      const v = Number(r.data.result[0]?.value[1])
      if (v > 0) {
        throughput = r
        eventsPerSecond = v
        const scrapes = await promQuery(base, 'count_over_time(up{job="tagstream"}[10s])')
        if (v >= 1000 || Number(scrapes.data.result[0]?.value[1]) >= 10) break
      }
      if (Date.now() > pollUntil) break
      await sleep(250)
    }
    expect(throughput, `no positive throughput; prometheus log: ${prometheus?.log() ?? ''}`).toBeDefined()
    expect(throughput?.data.result).toHaveLength(1)
    expect(throughput?.data.result[0]?.metric).toMatchObject({ job: 'tagstream', instance: engineTarget })
    expect(eventsPerSecond).toBeGreaterThan(0)
    // Loose: a fifth of the offered rate, so a slow or busy machine does not fail it.
    expect(eventsPerSecond).toBeGreaterThan(400)

    // One watermark per partition, in event time at or after the generator's start.
    const watermarks = await promQuery(base, 'tagstream_watermark_timestamp_seconds')
    expect(watermarks.status).toBe('success')
    const byPartition = new Map(watermarks.data.result.map((s) => [s.metric.partition, Number(s.value[1])]))
    expect([...byPartition.keys()].sort()).toEqual(Array.from({ length: PARTITIONS }, (_, i) => String(i)))
    for (const [partition, seconds] of byPartition) {
      expect(Number.isFinite(seconds), `partition ${partition}`).toBe(true)
      expect(seconds, `partition ${partition}`).toBeGreaterThanOrEqual(GENERATOR_START_S)
    }

    // The target is up and ready.
    const up = await promQuery(base, 'up{job="tagstream"}')
    expect(up.data.result.map((s) => s.value[1])).toEqual(['1'])

    // Every dashboard query is valid PromQL on a real server, and the main panels have data.
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard
    for (const { where, expr } of dashboardQueries(dashboard)) {
      if (/^\s*label_values\(/.test(expr)) continue
      const r = await promQuery(base, substituteVariables(expr))
      expect(r.status, `${where}: ${r.error ?? ''}`).toBe('success')
    }
    const panelData = async (title: string): Promise<number> => {
      const panel = dashboard.panels.find((p) => p.title === title && p.type === 'timeseries')
      const r = await promQuery(base, substituteVariables(panel?.targets?.[0]?.expr ?? ''))
      return r.data.result.length
    }
    expect(await panelData('Events in/s')).toBeGreaterThan(0)
    expect(await panelData('Watermark lag by partition')).toBe(PARTITIONS)
    // The engine restored its store before it was ready: that operation shows as completed.
    expect(await panelData('Operation progress')).toBeGreaterThanOrEqual(1)
    const restore = await promQuery(base, 'tagstream_operation_progress_ratio{job="tagstream", operation="restore"}')
    expect(restore.data.result.map((s) => s.value[1])).toEqual(['1'])
    const restores = await promQuery(base, 'tagstream_operations_total{job="tagstream", operation="restore", outcome="completed"}')
    expect(restores.data.result.map((s) => s.value[1])).toEqual(['1'])

    // Both rule files loaded; the alerting rules evaluate without errors.
    const rules = await waitFor('every alerting rule evaluated', 15_000, async () => {
      const res = (await (await fetch(`${base}/api/v1/rules`)).json()) as {
        data: { groups: { name: string; rules: { name: string; type: string; health: string; lastError?: string }[] }[] }
      }
      const all = res.data.groups.flatMap((g) => g.rules)
      return all.filter((r) => r.type === 'alerting').every((r) => r.health === 'ok') ? all : undefined
    })
    expect(rules.filter((r) => r.type === 'alerting')).toHaveLength(9)
    expect(rules.filter((r) => r.type === 'recording')).toHaveLength(11)
    expect(rules.filter((r) => r.health === 'err').map((r) => `${r.name}: ${r.lastError}`)).toEqual([])

    const seconds = (Date.now() - startedAt) / 1000
    console.info(`ops e2e: ${eventsPerSecond.toFixed(0)} events/s scraped by Prometheus, ${byPartition.size} watermarks, ${seconds.toFixed(1)}s since the engine started`)
    expect(seconds).toBeLessThan(60)
  }, 60_000)
})
