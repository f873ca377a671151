import { startKafkaMock, produceMessages, endOffsets, groupOffsets } from '../tests/support/kafka-mock.js'
import { generateWorkload } from '../src/workload/generator.js'
import { writeConfig, startCli } from '../tests/support/cli.js'
const t0 = Date.now()
const log = (...a: unknown[]) => console.log(((Date.now() - t0) / 1000).toFixed(1), ...a)
const mock = await startKafkaMock()
log('mock', mock.bootstrap)
const records = [...generateWorkload({ seed: 11, users: 400, events: 2000, days: 20, invalidRatio: 0.01 })]
await produceMessages(mock.bootstrap, 'in', records.map((r) => r.kind === 'event' ? { key: r.event.userId, value: Buffer.from(JSON.stringify(r.event)) } : { key: null, value: r.bytes }))
log('produced', await endOffsets(mock.bootstrap, 'in'))
const { configPath } = writeConfig({
  sources: [{ name: 'events', type: 'kafka', brokers: mock.bootstrap, groupId: 'g1', topics: [{ topic: 'in' }], sessionTimeoutMs: 3000, heartbeatIntervalMs: 300 }],
  sinks: { tagChanges: [{ type: 'kafka', brokers: mock.bootstrap, topic: 'out' }], deadLetter: { type: 'kafka', brokers: mock.bootstrap, topic: 'dead' } },
  engine: { partitions: 4, commitIntervalMs: 100 }, time: { idleAdvanceMs: 0 },
})
const run = startCli(['run', '--config', configPath])
run.child.stderr!.on('data', (d) => log('stderr', String(d)))
for (let i = 0; i < 15; i++) {
  await new Promise((r) => setTimeout(r, 1000))
  log('group', await groupOffsets(mock.bootstrap, 'g1', 'in'), 'out', await endOffsets(mock.bootstrap, 'out'))
}
run.child.kill('SIGTERM')
log(await run.done)
await mock.stop()
