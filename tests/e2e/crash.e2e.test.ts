import { existsSync, mkdtempSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { beforeAll, describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { writeNdjsonFile } from '../../src/workload/generator.js'
import { FOUNDATION_OPERATORS, assertBuilt, readNdjson, runCli, startCli, writeConfig } from '../support/cli.js'

const EVENTS = 200_000
const KILLS = 6

function sizeOf(path: string): number {
  return existsSync(path) ? statSync(path).size : 0
}

/** A tag change without its wall-clock field: what a regenerated change must equal. */
function stable(c: TagChange): string {
  const { emittedAt: _, ...rest } = c
  return JSON.stringify(rest)
}

describe('crash safety (SIGKILL)', () => {
  let input: string
  beforeAll(async () => {
    assertBuilt()
    input = join(mkdtempSync(join(tmpdir(), 'ts-crash-')), 'events.ndjson')
    await writeNdjsonFile(input, { seed: 2024, users: 20_000, events: EVENTS, days: 120, duplicateRatio: 0.01, lateRatio: 0.02, invalidRatio: 0.001 })
  })

  it(`killed ${KILLS} times at random points, the replay ends with the state and tag changes of an uninterrupted run`, async () => {
    // Small commits: many commit boundaries for the kills to fall around. RFM ranked among every
    // partition (the default scope), and sweeps in small chunks, so that commits and kills also
    // fall inside sweeps: a resumed sweep must rank against the population of its instant, cut
    // from every partition's stored deltas (against the population as restored, the state differs
    // at the end; the same holds with populationScope partition).
    const engine = { partitions: 4, commitEvents: 5000, batchSize: 1024 }
    const config = { engine, operators: [...FOUNDATION_OPERATORS, { name: 'rfm', type: 'rfm' }], rescore: { chunkUsers: 50 } }
    const reference = writeConfig(config)
    const started = Date.now()
    const ref = await runCli(['replay', input, '--config', reference.configPath])
    expect(ref.code, ref.stderr).toBe(0)
    const referenceMs = Date.now() - started
    // Each run is killed after at most 1/(KILLS + 2) of the reference output more, so the kills
    // never run out of stream, whatever the machine's load does to the timing between runs.
    const step = sizeOf(join(reference.dataDir, 'tag-changes.ndjson')) / (KILLS + 2)
    expect(step).toBeGreaterThan(0)

    const crashed = writeConfig(config)
    let seed = 12345
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
    let kills = 0
    let runs = 0
    const killedAtSizes: number[] = []
    while (kills < KILLS) {
      runs++
      const { child, done } = startCli(['replay', input, '--config', crashed.configPath])
      // Wait until this run has emitted a random share of a step, then kill it a random moment
      // later: during a batch, a sink flush or a store commit (which now overlap).
      const sinkPath = join(crashed.dataDir, 'tag-changes.ndjson')
      const target = sizeOf(sinkPath) + step * (0.2 + 0.8 * random())
      while (sizeOf(sinkPath) < target && child.exitCode === null) await sleep(5)
      await sleep(random() * Math.min(300, referenceMs * 0.01))
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL')
        const res = await done
        if (res.signal === 'SIGKILL') {
          kills++
          killedAtSizes.push(sizeOf(sinkPath))
          continue
        }
      }
      const res = await done
      expect.fail(`the replay finished before kill ${kills + 1} (runs: ${runs}); stderr: ${res.stderr}`)
    }
    const last = await runCli(['replay', input, '--config', crashed.configPath])
    expect(last.code, last.stderr).toBe(0)
    // The kills fell at different points of the stream.
    expect(new Set(killedAtSizes).size).toBeGreaterThan(2)

    // 1. The stored state equals the uninterrupted run's, user by user.
    const [pa, pb] = await Promise.all([
      runCli(['profile', '--all', '--config', reference.configPath]),
      runCli(['profile', '--all', '--config', crashed.configPath]),
    ])
    expect(pa.code).toBe(0)
    const refProfiles = pa.stdout.trim().split('\n')
    expect(refProfiles.length).toBeGreaterThan(8_000)
    expect(pb.stdout.trim().split('\n')).toEqual(refProfiles)

    // 2. Every tag change of the uninterrupted run was emitted, and nothing else.
    const refChanges = readNdjson<TagChange>(join(reference.dataDir, 'tag-changes.ndjson'))
    const gotChanges = readNdjson<TagChange>(join(crashed.dataDir, 'tag-changes.ndjson'))
    const refIds = new Set(refChanges.map((c) => c.id))
    expect(refIds.size).toBe(refChanges.length)
    expect(refChanges.filter((c) => c.tag === 'rfm_segment' && c.cause.kind === 'rescore').length).toBeGreaterThan(1000)
    const gotById = new Map<string, string>()
    let duplicates = 0
    for (const c of gotChanges) {
      const previous = gotById.get(c.id)
      if (previous !== undefined) {
        duplicates++
        // 3. A duplicate is the same change regenerated after a kill, never a different one.
        expect(stable(c)).toBe(previous)
      }
      gotById.set(c.id, stable(c))
    }
    expect([...gotById.keys()].sort()).toEqual([...refIds].sort())
    for (const c of refChanges) expect(gotById.get(c.id)).toBe(stable(c))
    // Duplicates come only from batches in flight at a kill: at most one commit's worth per kill.
    expect(duplicates).toBeLessThanOrEqual(KILLS * refChanges.length * (engine.commitEvents / EVENTS) * 3)

    // 4. Dead letters: the same records, each at least once.
    const key = (d: { coordinates: { offset: number }; reason: { code: string } }) => `${d.coordinates.offset}:${d.reason.code}`
    const refDead = new Set(readNdjson(join(reference.dataDir, 'dead-letters.ndjson')).map((d) => key(d as never)))
    const gotDead = new Set(readNdjson(join(crashed.dataDir, 'dead-letters.ndjson')).map((d) => key(d as never)))
    expect([...gotDead].sort()).toEqual([...refDead].sort())
  }, 300_000)
})
