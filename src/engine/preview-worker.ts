/**
 * A preview worker thread (see preview.ts): for each job, attaches to the engine's store, scans the
 * job's partitions' projections concurrently, and replies.
 */
import { parentPort } from 'node:worker_threads'
import { Store } from '../store/store.js'
import { compileRule, isRuleErrors, ruleViewPlan } from '../tags/rules.js'
import { ProjectionReader, projectedViewBuilder, projectionShapeOf } from './projection.js'
import { PREVIEW_CHUNK, scanProjections, type PartitionScan, type PreviewJob, type PreviewWorkerReply } from './preview.js'

async function run(job: PreviewJob): Promise<PartitionScan[]> {
  const rule = compileRule(job.expression, job.schema)
  if (isRuleErrors(rule)) throw new Error(`the rule does not compile: ${rule.map((e) => e.message).join('; ')}`)
  const shape = projectionShapeOf(job.layoutId)
  const view = projectedViewBuilder(ruleViewPlan(rule, job.schema), shape)
  const store = await Store.attach(job.location)
  try {
    return await Promise.all(
      job.partitions.map(({ partition, at, skip }) =>
        scanProjections(store.projectionValues(partition, PREVIEW_CHUNK), new ProjectionReader(shape), rule, view, { partition, at, skip: new Set(skip), sampleSize: job.sampleSize }),
      ),
    )
  } finally {
    await store.close()
  }
}

const port = parentPort
if (port === null) throw new Error('preview-worker runs in a worker thread')
// One job at a time: the pool sends the next only after this one's reply.
port.on('message', (job: PreviewJob) => {
  run(job).then(
    (scans) => port.postMessage({ ok: true, scans } satisfies PreviewWorkerReply),
    (err: unknown) => port.postMessage({ ok: false, message: (err as Error).message ?? String(err) } satisfies PreviewWorkerReply),
  )
})
