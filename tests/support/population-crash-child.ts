/**
 * A child process for tests/e2e/population-crash.e2e.test.ts: runs an engine with the RFM
 * operator over a generated stream, in small commits, folding population deltas after every
 * commit, until the stream ends or the parent kills it. Restarted on the same dir, it resumes
 * from the stored position. Usage: population-crash-child.ts <dir> <users> <events>
 */
import { validateConfig } from '../../src/config/load.js'
import { createOperators } from '../../src/engine/operators.js'
import { encodeNdjsonLine, generateWorkload } from '../../src/workload/generator.js'
import { createFixture } from './engine-fixture.js'

export const CRASH_CHILD_CONFIG = {
  engine: { partitions: 2, commitEvents: 300, batchSize: 100 },
  operators: [{ name: 'rfm', type: 'rfm', config: { purchaseEventTypes: ['purchase'], refundEventTypes: ['refund'], amountProperty: 'amount', windowsDays: [30, 90, 365] } }],
}

async function main(): Promise<void> {
  const [dir, users, events] = process.argv.slice(2)
  const { config } = validateConfig(CRASH_CHILD_CONFIG)
  if (config === undefined) throw new Error('invalid config')
  const operators = await createOperators(config)
  const records = [...generateWorkload({ seed: 7, users: Number(users), events: Number(events), days: 200 })].map(encodeNdjsonLine)
  const f = await createFixture(operators, CRASH_CHILD_CONFIG, { dir, records, populationCompaction: { share: 0, minValues: 0 } })
  process.stdout.write('started\n')
  await f.drain()
  await f.close()
  process.stdout.write('done\n')
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].split('/').pop() as string)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack}\n`)
    process.exit(1)
  })
}
