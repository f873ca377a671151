/**
 * A worker thread of the engine's `WorkerPool` (worker-pool.ts): for each job, attaches to the
 * engine's store and reads projections there. Preview jobs count a rule over whole partitions
 * (preview.ts); sweep jobs decide a partition's users for a sweep (sweep-scan.ts); pages jobs
 * build a partition's projection pages (projection-pages.ts).
 */
import { parentPort } from 'node:worker_threads'
import type { Config } from '../config/schema.js'
import type { Operator } from '../operator-api.js'
import { Store } from '../store/store.js'
import { compileRule, isRuleErrors, ruleViewPlan, type CompiledRule, type RuleSchema } from '../tags/rules.js'
import { createOperators } from './operators.js'
import { sharedPopulationViews } from './population.js'
import { ProjectionReader, projectedViewBuilder, projectionShapeOf, type ProjectionShape } from './projection.js'
import { scanPartition, type PartitionScan, type PreviewJob } from './preview.js'
import { buildProjectionPages, type PageBuild, type PagesJob } from './projection-pages.js'
import { SweepDecider } from './sweep-decider.js'
import { scanSweep, type SweepJob, type SweepScan } from './sweep-scan.js'
import type { StoreWorkerJob, StoreWorkerReply, StoreWorkerResult } from './worker-pool.js'

function compile(expression: string, schema: RuleSchema): CompiledRule {
  const rule = compileRule(expression, schema)
  if (isRuleErrors(rule)) throw new Error(`the rule does not compile: ${rule.map((e) => e.message).join('; ')}`)
  return rule
}

async function preview(job: PreviewJob): Promise<PartitionScan[]> {
  const rule = compile(job.expression, job.schema)
  const shape = projectionShapeOf(job.layoutId)
  const view = projectedViewBuilder(ruleViewPlan(rule, job.schema), shape)
  const store = await Store.attach(job.location)
  try {
    // One partition after another: the threads already keep both cores busy, and two iterators at
    // once in a thread added some 35 MB to the RSS of a preview over 1,000,000 users.
    const scans: PartitionScan[] = []
    for (const partition of job.partitions) scans.push(await scanPartition(store, partition, new ProjectionReader(shape), rule, view, job.sampleSize))
    return scans
  } finally {
    await store.close()
  }
}

/** The engine's operators, created once per thread from their configuration (fixed while the engine runs). */
let operators: { readonly config: string; readonly byName: Promise<Map<string, Operator>> } | undefined

function operatorsOf(job: SweepJob): Promise<Map<string, Operator>> {
  const config = JSON.stringify([job.operators, job.timeZone])
  if (operators?.config !== config) {
    const created = createOperators({ operators: job.operators, timeZone: job.timeZone } as Config)
    operators = { config, byName: created.then((ops) => new Map(ops.map((op) => [op.name, op]))) }
  }
  return operators.byName
}

async function sweep(job: SweepJob): Promise<SweepScan> {
  const byName = await operatorsOf(job)
  const shape: ProjectionShape = projectionShapeOf(job.layoutId)
  const decider = new SweepDecider(
    job.at,
    job.timeZone,
    sharedPopulationViews(job.populations),
    job.rescored.map((r) => {
      const op = byName.get(r.op)
      if (op === undefined) throw new Error(`operator ${r.op} is not in the configuration`)
      return { op, scoredIndex: r.scoredIndex, lanes: r.lanes }
    }),
    job.rules.map((r) => {
      const rule = compile(r.expression, job.schema)
      return { lane: r.lane, valueType: r.valueType, rule, view: projectedViewBuilder(ruleViewPlan(rule, job.schema), shape) }
    }),
  )
  const store = await Store.attach(job.location)
  try {
    return await scanSweep(store.projectionValues(job.partition, job.chunk, job.after, job.through), new ProjectionReader(shape), decider, new Set(job.skip), job.partition)
  } finally {
    await store.close()
  }
}

async function pages(job: PagesJob): Promise<PageBuild> {
  const store = await Store.attach(job.location)
  try {
    return await buildProjectionPages(store, job.partition, job.gen, job.from === undefined ? {} : { from: job.from })
  } finally {
    await store.close()
  }
}

const port = parentPort
if (port === null) throw new Error('store-worker runs in a worker thread')
// One job at a time: the pool sends the next only after this one's reply.
port.on('message', (job: StoreWorkerJob) => {
  const run: Promise<StoreWorkerResult<StoreWorkerJob>> = job.kind === 'preview' ? preview(job) : job.kind === 'pages' ? pages(job) : sweep(job)
  run.then(
    (result) => port.postMessage({ ok: true, result } satisfies StoreWorkerReply),
    (err: unknown) => port.postMessage({ ok: false, message: (err as Error).message ?? String(err) } satisfies StoreWorkerReply),
  )
})
