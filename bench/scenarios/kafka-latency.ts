/**
 * Scenario 3: latency from an event produced to the tag change it causes being consumed, at a
 * steady offered 20,000 events/s through the mock cluster (HDR histogram; `bench/kafka-pipeline.ts`).
 * When the engine cannot keep up with the offered rate, the figures measure the growing queue.
 */
import { measureKafkaLatency } from '../kafka-pipeline.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'

export const scenario: Scenario = {
  name: 'kafka-latency',
  number: 3,
  title: 'Latency produced -> tag change consumed at 20,000 ev/s through Kafka',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const p99: number[] = []
    const p999: number[] = []
    const produced: number[] = []
    for (let run = 0; run < ctx.runs; run++) {
      const r = await measureKafkaLatency({ eventsPerSecond: 20_000, seconds: ctx.quick ? 3 : 10, warmupSeconds: ctx.quick ? 1 : 3, log: (l) => ctx.log(l) })
      p99.push(r.p99Ms)
      p999.push(r.p999Ms)
      produced.push(r.producedEventsPerSecond)
      ctx.log(`run ${run + 1}/${ctx.runs}: p99 ${r.p99Ms} ms, p999 ${r.p999Ms} ms over ${r.samples} changes at ${Math.round(r.producedEventsPerSecond)} ev/s produced`)
    }
    return {
      status: 'ok',
      figures: [
        { id: 'kafkaLatency.p99Ms', title: 'Event produced -> tag change consumed, p99, 20,000 ev/s offered', unit: 'ms', samples: p99, better: 'lower', target: { kind: 'at-most', value: 25 } },
        { id: 'kafkaLatency.p999Ms', title: 'Event produced -> tag change consumed, p99.9', unit: 'ms', samples: p999, better: 'lower' },
        { id: 'kafkaLatency.producedEventsPerSecond', title: 'Rate actually produced', unit: 'events/s', samples: produced, better: 'higher' },
      ],
    }
  },
}
