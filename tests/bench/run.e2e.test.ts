import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_FIELD_NAMES } from '../../src/contracts/input-event.js'
import { createEventDecoder } from '../../src/contracts/validate-event.js'
import { assertBuilt } from '../support/cli.js'

const ROOT = resolve(import.meta.dirname, '../..')
const RUNNER = join(ROOT, 'dist/bench/run.js')
const EVENTS = 2000

interface Summary {
  median: number
  min: number
  max: number
  runs: number
  samples: number[]
}

function runBench(args: string[], env: NodeJS.ProcessEnv = {}): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(process.execPath, [RUNNER, ...args], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    return { code: 0, stdout, stderr: '' }
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string }
    return { code: e.status, stdout: e.stdout, stderr: e.stderr }
  }
}

function expectSummaryOf(s: Summary, runs: number): void {
  expect(s.samples).toHaveLength(runs)
  const sorted = [...s.samples].sort((a, b) => a - b)
  expect(s.runs).toBe(runs)
  expect(s.min).toBe(sorted[0])
  expect(s.max).toBe(sorted[runs - 1])
  expect(s.median).toBe(sorted[(runs - 1) / 2])
  for (const v of s.samples) expect(v).toBeGreaterThan(0)
}

// No timed assertions: this only checks that `bench --quick` runs and writes a well-formed report.
describe('bench --quick', () => {
  beforeAll(() => assertBuilt())

  it('runs scenario 1 on a tiny input and writes the results JSON with machine, commit and per-figure statistics', () => {
    const work = mkdtempSync(join(tmpdir(), 'ts-bench-'))
    const results = join(work, 'results')
    // Environment overrides reach the measured engines, so the results file records them (a secret's value redacted).
    const env = { TAGSTREAM_ENGINE__CACHE_MAX_USERS: '150000', TAGSTREAM_HTTP__READ_TOKEN: 'not-for-a-results-file' }
    const r = runBench(['--quick', '--only', 'replay', '--events', String(EVENTS), '--work-dir', join(work, 'work'), '--results-dir', results], env)
    expect(r.code, r.stderr).toBe(0)

    const files = readdirSync(results).filter((f) => f.endsWith('.json'))
    expect(files).toHaveLength(1)
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
    expect(files[0]).toMatch(new RegExp(`^\\d{4}-\\d{2}-\\d{2}T\\d{6}Z-${head.slice(0, 10)}\\.json$`))
    expect(r.stdout).toContain(`results: ${join(results, files[0] as string)}`)
    const report = JSON.parse(readFileSync(join(results, files[0] as string), 'utf8'))

    expect(report.schema).toBe('tagstream-bench/1')
    expect(report.environment).toMatchObject({ TAGSTREAM_ENGINE__CACHE_MAX_USERS: '150000', TAGSTREAM_HTTP__READ_TOKEN: '(redacted)' })
    // The bench's own process runs with the thread pool the tagstream command sets (it starts itself again).
    expect(report.environment).toMatchObject({ UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' })
    expect(JSON.stringify(report)).not.toContain('not-for-a-results-file')
    expect(report.mode).toBe('quick')
    expect(report.runs).toBe(3)
    expect(report.sizes.replayEvents).toBe(EVENTS)
    expect(report.machine.cores).toBe(cpus().length)
    expect(report.machine.memoryBytes).toBe(totalmem())
    expect(report.machine.node).toBe(process.version)
    expect(report.machine.cpuModel).toBe(cpus()[0]?.model.trim())
    expect(report.commit.sha).toBe(head)

    expect(report.scenarios.map((s: { number: number; status: string }) => [s.number, s.status])).toEqual([[1, 'ok']])
    const [figure] = report.scenarios[0].figures
    expect(figure.id).toBe('replay.eventsPerSecond')
    expect(figure.unit).toBe('events/s')
    expectSummaryOf(figure, 3)
    expectSummaryOf(figure.limit, 3)
    expect(figure.ratioToLimit).toBeCloseTo(figure.median / figure.limit.median, 12)
    expect(figure.target).toEqual({ kind: 'ratio-to-limit-at-least', ratio: 0.5 })
    expect(figure.ratioToTarget).toBeCloseTo(figure.ratioToLimit / 0.5, 12)
    expect(figure.met).toBe(figure.ratioToTarget >= 1)

    // The engine really replayed the input: it stored exactly the users of its valid events.
    const inputs = readdirSync(join(work, 'work/inputs'))
    expect(inputs).toHaveLength(1)
    const decode = createEventDecoder({ fields: DEFAULT_FIELD_NAMES, format: 'json', maxRecordBytes: 65536, maxIdLength: 256, maxFutureMs: 86_400_000, timestampUnit: 'ms' })
    const lines = readFileSync(join(work, 'work/inputs', inputs[0] as string)).toString('utf8').split('\n').filter((l) => l !== '')
    expect(lines).toHaveLength(EVENTS)
    const users = new Set<string>()
    let invalid = 0
    for (const line of lines) {
      const d = decode(Buffer.from(line), Date.now())
      if (d.ok) users.add(d.event.userId)
      else invalid++
    }
    expect(figure.details.last.usersStored).toBe(users.size)
    expect(figure.details.last.invalid).toBe(invalid)
  })

  it('rejects an unknown scenario name', () => {
    const work = mkdtempSync(join(tmpdir(), 'ts-bench-'))
    const r = runBench(['--quick', '--only', 'no-such-scenario', '--work-dir', work, '--results-dir', work])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('unknown scenario(s): no-such-scenario')
  })
})
