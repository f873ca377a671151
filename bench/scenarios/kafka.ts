/**
 * Scenario 2: Kafka end to end on librdkafka's mock cluster (input topic -> committed state ->
 * output topic) against the bare rate at which the same client consumes and JSON-parses the same
 * topic, in the same invocation (`bench/kafka-pipeline.ts`, default operators). The engine ranks RFM
 * within each partition, as the README configures a Kafka source: every run then does the same
 * work and gives the same tag changes, however the consumer interleaves the partitions.
 */
import { measureKafkaPipeline } from '../kafka-pipeline.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'

export const scenario: Scenario = {
  name: 'kafka',
  number: 2,
  title: 'Kafka end to end on the mock cluster vs bare consume+decode',
  profiled: true,
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const result = await measureKafkaPipeline({
      events: ctx.quick ? 20_000 : 100_000,
      repeats: ctx.runs,
      operators: 'default',
      populationScope: 'partition',
      ...(ctx.profileDir === undefined ? {} : { profileDir: ctx.profileDir }),
      log: (l) => ctx.log(l),
    })
    return {
      status: 'ok',
      figures: [
        {
          id: 'kafka.pipelineEventsPerSecond',
          title: 'Kafka input topic -> committed state + output topic, default operators',
          unit: 'events/s',
          samples: result.pipelineEventsPerSecond,
          better: 'higher',
          limit: { title: 'bare: the same client consumes and JSON-parses the same topic', samples: result.bareEventsPerSecond },
          target: { kind: 'ratio-to-limit-at-least', ratio: 0.7 },
          details: {
            events: result.events,
            fileEventsPerSecond: result.fileEventsPerSecond,
            populationScope: 'partition',
            tagChangesPerRun: result.tagChangesPerRun,
            profiled: ctx.profileDir !== undefined,
            method: 'one round of both sides first, not measured (warm-up), then the measured rounds, each a fresh group and store',
          },
        },
      ],
    }
  },
}
