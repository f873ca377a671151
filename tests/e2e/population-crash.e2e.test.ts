import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../src/config/load.js'
import { createOperators } from '../../src/engine/operators.js'
import { Populations, ScoredLayout, readStoredPopulation } from '../../src/engine/population.js'
import { populationHeadKey } from '../../src/store/keys.js'
import { Store } from '../../src/store/store.js'
import { REPO_ROOT } from '../support/cli.js'
import { CRASH_CHILD_CONFIG } from '../support/population-crash-child.js'
import { columnsFromRecords } from '../support/population-reference.js'

const CHILD = join(REPO_ROOT, 'tests/support/population-crash-child.ts')
const USERS = 3000
const EVENTS = 60_000
const KILLS = 6

interface Child {
  readonly output: () => string
  readonly kill: () => void
  readonly done: Promise<{ code: number | null; signal: string | null; stderr: string }>
}

function runChild(dir: string): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(USERS), String(EVENTS)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const done = new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stderr }))
  })
  return { output: () => stdout, kill: () => child.kill('SIGKILL'), done }
}

/** Every column of the stored snapshots plus deltas against the same column rebuilt from the user records. */
async function checkStore(dir: string, layout: ScoredLayout): Promise<{ users: number; headSeq: number }> {
  const store = await Store.open(join(dir, 'store'))
  try {
    let users = 0
    let headSeq = 0
    for (const p of [0, 1]) {
      const reference = await columnsFromRecords(store, layout, [p])
      users += reference.users
      // -0 and 0 are one value to the statistics; the snapshot stores 0.
      const fromRecords = reference.columns.map((column) => column.map((v) => (v === 0 ? 0 : v)))
      const stored = await readStoredPopulation(store, layout, p)
      if ('reason' in stored) {
        // Only a store killed before its first restore finished has no snapshot yet.
        expect(stored.reason).toBe('no snapshot')
        expect(users).toBe(0)
        continue
      }
      layout.columns.forEach((c, i) => {
        const expected = Float64Array.from(fromRecords[i] as number[]).sort()
        expect(Array.from(stored.columns[i] as Float64Array), `partition ${p} ${c.operator}.${c.dimension}`).toEqual(Array.from(expected))
        // The restore loads exactly these: same count, ranks and mean as a rebuild from the records.
        const a = new Populations().get(c.operator, c.dimension)
        a.load(Float64Array.from(stored.columns[i] as Float64Array))
        const e = new Populations().get(c.operator, c.dimension)
        e.load(expected)
        expect(a.mean()).toBe(e.mean())
      })
      const [head] = await store.entriesIn({ gte: populationHeadKey(p), lt: `${populationHeadKey(p)}\u0000` }, 1)
      headSeq += store.decode<{ seq: number }>(head?.[1] as Buffer).seq
    }
    return { users, headSeq }
  } finally {
    await store.close()
  }
}

describe('population snapshot and deltas under SIGKILL', () => {
  it(`killed ${KILLS} times while commits and compactions write, snapshot plus deltas equal the user records`, async () => {
    const { config } = validateConfig(CRASH_CHILD_CONFIG)
    const layout = new ScoredLayout(await createOperators(config!))
    expect(layout.width).toBe(3)
    const dir = mkdtempSync(join(tmpdir(), 'ts-popcrash-'))
    let seed = 4242
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
    let kills = 0
    let previous = { users: 0, headSeq: 0 }
    while (kills < KILLS) {
      const child = runChild(dir)
      // Past start-up (tsx, the generated stream, the restore), then a random moment of ingestion.
      let exited = false
      void child.done.then(() => (exited = true))
      const t0 = Date.now()
      while (!child.output().includes('started') && !exited && Date.now() - t0 < 120_000) await sleep(20)
      await sleep(100 + random() * 900)
      child.kill()
      const res = await child.done
      if (res.signal !== 'SIGKILL') expect.fail(`the child ended before kill ${kills + 1}: ${res.stderr.slice(-2000)}`)
      kills++
      const now = await checkStore(dir, layout)
      // Each run got further, and compacted.
      expect(now.users).toBeGreaterThanOrEqual(previous.users)
      previous = now
    }
    const last = await runChild(dir).done
    expect(last.code, last.stderr).toBe(0)
    const final = await checkStore(dir, layout)
    expect(final.users).toBeGreaterThan(USERS / 2)
    expect(final.headSeq).toBeGreaterThan(previous.headSeq)
  }, 600_000)
})

