import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { writeNdjsonFile } from '../../src/workload/generator.js'
import { FOUNDATION_OPERATORS, assertBuilt, runCli, writeConfig } from '../support/cli.js'

type Line = Record<string, unknown> & { level: string; msg: string }

function jsonLines(text: string): Line[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Line)
}

describe('CLI logs: JSON lines on stderr, results alone on stdout', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ts-logs-'))
  const events = join(dir, 'events.ndjson')
  let configPath = ''

  beforeAll(async () => {
    assertBuilt()
    await writeNdjsonFile(events, { seed: 7, users: 300, events: 3000, days: 20, duplicateRatio: 0, lateRatio: 0, invalidRatio: 0 })
    configPath = writeConfig({ operators: [...FOUNDATION_OPERATORS, { name: 'rfm', type: 'rfm' }], log: { progressIntervalMs: 100 } }, dir).configPath
  })

  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('replay: lifecycle and progress on stderr, the summary alone on stdout; a second run restores the users', async () => {
    const first = await runCli(['replay', events, '--config', configPath])
    expect(first.code, first.stderr).toBe(0)
    const stdout = first.stdout.trim().split('\n')
    expect(stdout).toHaveLength(1)
    const summary = JSON.parse(stdout[0] as string) as { records: number; users: number }
    expect(summary.records).toBe(3000)

    const lines = jsonLines(first.stderr)
    for (const line of lines) {
      expect(line.pid).toBeTypeOf('number')
      expect(new Date(line.time as string).toISOString()).toBe(line.time)
    }
    // Progress lines (`<operation> <percent>%`) come as often as the machine is slow: not lifecycle.
    const lifecycle = lines.filter((l) => !/^[a-z]+ \d/.test(l.msg)).map((l) => l.msg)
    expect(lifecycle).toEqual(['store opened', 'restore started', 'restore finished', 'engine ready', 'replay started', 'replay finished'])
    const size = statSync(events).size
    const finished = lines.find((l) => l.msg === 'replay finished')
    expect(finished).toEqual(expect.objectContaining({ level: 'info', operation: 'replay', outcome: 'completed', unit: 'bytes', done: size, total: size, files: 1 }))
    // Progress lines, when the replay outlasts the interval, carry a ratio within bounds.
    for (const p of lines.filter((l) => /^replay \d/.test(l.msg))) {
      expect(p.ratio as number).toBeGreaterThanOrEqual(0)
      expect(p.ratio as number).toBeLessThanOrEqual(1)
      expect(p.total).toBe(size)
    }

    // Same store, nothing new to read: the restore reads the ranked users' compact values back (rfm
    // ranks the users with a purchase), out of every stored user.
    const second = await runCli(['replay', events, '--config', configPath])
    expect(second.code, second.stderr).toBe(0)
    const restore = jsonLines(second.stderr).find((l) => l.msg === 'restore finished')
    expect(restore).toEqual(expect.objectContaining({ operation: 'restore', outcome: 'completed', unit: 'users', total: summary.users }))
    expect(restore?.done as number).toBeGreaterThan(0)
    expect(restore?.done as number).toBeLessThanOrEqual(summary.users)
    expect(jsonLines(second.stderr).find((l) => l.msg === 'engine ready')?.users).toBe(summary.users)
  }, 60_000)

  it('TAGSTREAM_LOG__LEVEL=warn leaves stderr empty on a clean run', async () => {
    const quiet = await runCli(['replay', events, '--config', configPath], { env: { TAGSTREAM_LOG__LEVEL: 'warn' } })
    expect(quiet.code, quiet.stderr).toBe(0)
    expect(quiet.stderr).toBe('')
    expect(quiet.stdout.trim().split('\n')).toHaveLength(1)
  }, 60_000)

  it('a usage error is one fatal line with its stable code', async () => {
    const r = await runCli(['replay', join(dir, 'missing.ndjson'), '--config', configPath])
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    const lines = jsonLines(r.stderr)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toEqual(expect.objectContaining({ level: 'fatal', msg: `no such file: ${join(dir, 'missing.ndjson')}` }))
    expect((lines[0] as unknown as { error: { code: string } }).error.code).toBe('TS_ERR_USAGE')
  })
})
