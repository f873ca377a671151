import { readFileSync } from 'node:fs'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { writeNdjsonFile } from '../../src/workload/generator.js'
import { assertBuilt, runCli, writeConfig } from '../support/cli.js'

/** Tag-change lines with the one non-deterministic field blanked. */
function stream(dataDir: string): string {
  return readFileSync(join(dataDir, 'tag-changes.ndjson'), 'utf8').replace(/"emittedAt":"[^"]*"/g, '"emittedAt":""')
}

describe('determinism', () => {
  let input: string
  beforeAll(async () => {
    assertBuilt()
    input = join(mkdtempSync(join(tmpdir(), 'ts-det-')), 'events.ndjson')
    await writeNdjsonFile(input, { seed: 7, users: 3000, events: 60_000, days: 90, duplicateRatio: 0.01, lateRatio: 0.03, invalidRatio: 0.002 })
  })

  it('replaying the same input into fresh stores gives byte-identical tag-change streams, whatever the batching', async () => {
    const runs = [
      writeConfig(),
      writeConfig(),
      // Other batch and commit sizes: the output must not depend on where batches or commits fall.
      writeConfig({ engine: { partitions: 4, batchSize: 333, commitEvents: 2000 } }),
    ]
    for (const r of runs) {
      const res = await runCli(['replay', input, '--config', r.configPath])
      expect(res.code, res.stderr).toBe(0)
    }
    const [a, b, c] = runs.map((r) => stream(r.dataDir))
    expect(a!.length).toBeGreaterThan(10_000)
    expect(b).toBe(a)
    expect(c).toBe(a)
    const profiles = await Promise.all(runs.map((r) => runCli(['profile', '--all', '--config', r.configPath])))
    expect(profiles[0]!.stdout.split('\n').length).toBeGreaterThan(2000)
    expect(profiles[1]!.stdout).toBe(profiles[0]!.stdout)
    expect(profiles[2]!.stdout).toBe(profiles[0]!.stdout)
    // Three replays of 60k events: on a shared 2-core machine under load this takes minutes.
  }, 180_000)
})
