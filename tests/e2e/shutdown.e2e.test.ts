import { appendFileSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { beforeAll, describe, expect, it } from 'vitest'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { assertBuilt, readNdjson, runCli, startCli, writeConfig } from '../support/cli.js'

describe('run: graceful shutdown and restart', () => {
  beforeAll(() => assertBuilt())

  it('SIGTERM finishes the batch, commits and exits 0; a restart resumes exactly where it stopped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-run-'))
    const events = join(dir, 'events.ndjson')
    const lines = [...generateWorkload({ seed: 5, users: 500, events: 30_000, days: 20, invalidRatio: 0.001 })].map(encodeNdjsonLine)
    writeFileSync(events, Buffer.concat(lines.slice(0, 20_000)))
    const live = writeConfig({
      sources: [{ name: 'events', type: 'file', path: events, follow: true, pollIntervalMs: 20 }],
      engine: { partitions: 4, commitIntervalMs: 200 },
      time: { idleAdvanceMs: 0 },
    }, dir)

    // First run: read what is there, then stop it with SIGTERM while it follows the file.
    const first = startCli(['run', '--config', live.configPath])
    await sleep(2500)
    appendFileSync(events, Buffer.concat(lines.slice(20_000, 25_000)))
    await sleep(1000)
    const stoppedAt = Date.now()
    first.child.kill('SIGTERM')
    const r1 = await first.done
    expect(r1.code, r1.stderr).toBe(0)
    expect(r1.stderr).toContain('stopped cleanly')
    expect(Date.now() - stoppedAt).toBeLessThan(5000)

    // Second run picks up the rest of the file, appended while it was down.
    appendFileSync(events, Buffer.concat(lines.slice(25_000)))
    // What one replay of the whole file gives: the second run is stopped once it has emitted as many
    // distinct changes (a busy machine may take far longer than usual to read the rest).
    const once = writeConfig({ engine: { partitions: 4 } })
    const r3 = await runCli(['replay', events, '--config', once.configPath])
    expect(r3.code, r3.stderr).toBe(0)
    const expected = new Set(readNdjson<{ id: string }>(join(once.dataDir, 'tag-changes.ndjson')).map((c) => c.id)).size
    const second = startCli(['run', '--config', live.configPath])
    const distinctLive = () => {
      try {
        return new Set(readNdjson<{ id: string }>(join(live.dataDir, 'tag-changes.ndjson')).map((c) => c.id)).size
      } catch {
        return 0 // a line being written
      }
    }
    for (const deadline = Date.now() + 45_000; Date.now() < deadline && distinctLive() < expected; ) await sleep(200)
    await sleep(300)
    second.child.kill('SIGINT')
    const r2 = await second.done
    expect(r2.code, r2.stderr).toBe(0)

    // Nothing re-applied, nothing skipped: the same as one replay of the whole file.
    const [a, b] = await Promise.all([runCli(['profile', '--all', '--config', live.configPath]), runCli(['profile', '--all', '--config', once.configPath])])
    expect(a.stdout.split('\n').length).toBeGreaterThan(300)
    expect(a.stdout).toBe(b.stdout)
    const ids = (p: string) => readNdjson<{ id: string }>(join(p, 'tag-changes.ndjson')).map((c) => c.id)
    expect(ids(live.dataDir)).toEqual(ids(once.dataDir))
  }, 120_000)

  it('a SIGTERM during start-up stops the process cleanly once it has started', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-early-'))
    const events = join(dir, 'events.ndjson')
    writeFileSync(events, Buffer.concat([...generateWorkload({ seed: 6, users: 50, events: 500, days: 3, invalidRatio: 0 })].map(encodeNdjsonLine)))
    const { configPath } = writeConfig({ sources: [{ name: 'events', type: 'file', path: events, follow: true }], engine: { partitions: 2 } }, dir)
    const run = startCli(['run', '--config', configPath])
    // "store opened" is logged inside the start-up, before the restore and the HTTP listener.
    await new Promise<void>((resolve) => {
      const onData = (d: Buffer | string) => {
        if (!String(d).includes('store opened')) return
        run.child.stderr?.off('data', onData)
        resolve()
      }
      run.child.stderr?.on('data', onData)
    })
    run.child.kill('SIGTERM')
    const r = await run.done
    expect(r.signal, r.stderr).toBeNull()
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('stopped cleanly')
  }, 60_000)

  it('exits 2 with the offending key when the config is invalid', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-badcfg-'))
    const { configPath } = writeConfig({ engine: { partitions: 0 } }, dir)
    const r = await runCli(['run', '--config', configPath])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('engine.partitions')
    const last = JSON.parse(r.stderr.trim().split('\n').pop() as string) as { error: { code: string; issues: { key: string }[] } }
    expect(last.error.code).toBe('TS_ERR_CONFIG_INVALID')
    expect(last.error.issues[0]?.key).toBe('engine.partitions')
  })
})
