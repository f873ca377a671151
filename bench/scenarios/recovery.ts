/**
 * Scenario 5: time from process start to ready (`/readyz` answers 200) after a SIGKILL, with the
 * populated store. Each measured start follows a kill of the previous run while it was ingesting,
 * so LevelDB recovers its log as in a real crash. The limit: a Node process that opens the same
 * crashed store (a copy) and reads one key.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { join } from 'node:path'
import { barePath, cliPath, copyDir, freePort, runNodeJson, startNode, storeDir, writeEngineConfig } from '../lib/processes.js'
import { populatedStore } from '../lib/populated-store.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'
import { followUpFile } from '../lib/workloads.js'

/** How long a started engine ingests before it is killed (the next start then recovers from it). */
const INGEST_BEFORE_KILL_MS = 1500
const READY_TIMEOUT_MS = 300_000

async function untilReady(port: number, t0: number, exited: () => boolean): Promise<number> {
  for (;;) {
    if (exited()) throw new Error('the engine exited before it was ready')
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`)
      await res.arrayBuffer()
      if (res.status === 200) return performance.now() - t0
    } catch {
      // Not listening yet.
    }
    if (performance.now() - t0 > READY_TIMEOUT_MS) throw new Error(`not ready after ${READY_TIMEOUT_MS} ms`)
    await sleep(5)
  }
}

/** Starts the engine, returns its start-to-ready time, lets it ingest, then kills it with SIGKILL. */
async function startAndKill(ctx: BenchContext, config: string, port: number): Promise<number> {
  const t0 = performance.now()
  const { child, done } = startNode([cliPath(ctx), 'run', '--config', config])
  let exited = false
  void done.then(() => (exited = true))
  try {
    const readyMs = await untilReady(port, t0, () => exited)
    await sleep(INGEST_BEFORE_KILL_MS)
    if (exited) throw new Error(`the engine exited while ingesting:\n${(await done).stderr.slice(-2000)}`)
    return readyMs
  } finally {
    child.kill('SIGKILL')
    await done
  }
}

export const scenario: Scenario = {
  name: 'recovery',
  number: 5,
  title: 'Recovery: start to ready after SIGKILL, 1,000,000 users',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const populated = await populatedStore(ctx)
    const dir = join(ctx.workDir, 'recovery')
    copyDir(join(populated.dir, 'data'), join(dir, 'data'))
    const port = await freePort()
    const input = await followUpFile(ctx, populated.users, ctx.sizes.sweepEvents)
    const config = writeEngineConfig(ctx, dir, {
      http: { enabled: true, host: '127.0.0.1', port },
      sources: [{ name: 'bench', type: 'file', path: input, follow: false }],
    })
    // The first start follows a clean shutdown: it only sets up the first crash.
    await startAndKill(ctx, config, port)
    const ready: number[] = []
    const bare: number[] = []
    for (let run = 0; run < ctx.runs; run++) {
      const crashed = join(ctx.workDir, 'recovery-bare')
      copyDir(storeDir(dir), crashed)
      const open = await runNodeJson<{ openMs: number }>([barePath(ctx, 'open-store'), crashed], 'bare store open')
      bare.push(open.openMs)
      const readyMs = await startAndKill(ctx, config, port)
      ready.push(readyMs)
      ctx.log(`run ${run + 1}/${ctx.runs}: ready after ${readyMs.toFixed(0)} ms (bare open ${open.openMs.toFixed(0)} ms)`)
    }
    return {
      status: 'ok',
      figures: [
        {
          id: 'recovery.startToReadyMs',
          title: `Start to ready after SIGKILL, ${populated.users.toLocaleString('en')} users`,
          unit: 'ms',
          samples: ready,
          better: 'lower',
          limit: { title: 'node start + open the crashed store + read one key', samples: bare },
          ...(populated.users === 1_000_000 ? { target: { kind: 'at-most', value: 3000 } as const } : {}),
          details: {
            users: populated.users,
            method: `spawn of \`tagstream run\` to the first 200 from /readyz (polled every 5 ms); each start follows a SIGKILL ${INGEST_BEFORE_KILL_MS} ms after the previous start was ready`,
          },
        },
      ],
    }
  },
}
