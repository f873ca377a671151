/**
 * Scenario 7: dry run of a typical strategy rule over every user of the populated store
 * (`Engine.preview`, the engine of POST /v1/tags/preview), in a child process that opens the store
 * as `run` does. The limit: reading and decoding every stored user once (the bare scan of scenario 6).
 */
import { join } from 'node:path'
import { DEFAULT_PREVIEW_RULE, type PreviewRun } from '../preview-run.js'
import { barePath, copyDir, runNodeJson, storeDir, writeEngineConfig } from '../lib/processes.js'
import { populatedStore } from '../lib/populated-store.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'

const PER = 1_000_000

export const scenario: Scenario = {
  name: 'preview',
  number: 7,
  title: 'Rule preview over 1,000,000 users',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const populated = await populatedStore(ctx)
    const dir = join(ctx.workDir, 'preview')
    copyDir(join(populated.dir, 'data'), join(dir, 'data'))
    const config = writeEngineConfig(ctx, dir)
    const scan = await runNodeJson<{ users: number; scanMs: number }>([barePath(ctx, 'scan-users'), storeDir(dir), '4'], 'bare user scan')
    const result = await runNodeJson<PreviewRun>([join(ctx.root, 'dist/bench/preview-run.js'), config, DEFAULT_PREVIEW_RULE, String(ctx.runs)], 'rule preview')
    if (result.users !== populated.users) throw new Error(`preview evaluated ${result.users} users, the store holds ${populated.users}`)
    ctx.log(`preview ${result.previewMs.join(' / ')} ms (CPU ${result.previewCpuMs.join(' / ')} ms) over ${result.users} users, ${result.matched} match (bare scan ${scan.scanMs.toFixed(0)} ms)`)
    return {
      status: 'ok',
      figures: [
        {
          id: 'preview.msPerMillionUsers',
          title: 'Rule preview (dry run) per 1,000,000 stored users',
          unit: 'ms',
          samples: result.previewMs.map((ms) => (ms * PER) / result.users),
          better: 'lower',
          limit: { title: 'bare scan: read + msgpack-decode every stored user, per 1,000,000', samples: result.previewMs.map(() => (scan.scanMs * PER) / scan.users) },
          target: { kind: 'at-most', value: 2000 },
          details: {
            users: result.users,
            matched: result.matched,
            rule: result.rule,
            openMs: result.openMs,
            cpuMsPerMillionUsers: result.previewCpuMs.map((ms) => Math.round((ms * PER) / result.users)),
            values: result.values,
          },
        },
      ],
    }
  },
}
