/**
 * Scenario 3: latency from an event produced to the tag change it causes being consumed, at a
 * steady offered 20,000 events/s through the mock cluster (HDR histogram; `bench/kafka-pipeline.ts`).
 * When the engine cannot keep up with the offered rate, the figures measure the growing queue; so
 * the same measurement also runs at 2,000 events/s, below what one process sustains here, where
 * the figures show the path itself (Kafka client timers, batching, commits) rather than a queue.
 * Each run also reports the engine's longest event-loop stall in the measured window: an event that
 * arrives during a stall waits for its end.
 */
import { measureKafkaLatency } from '../kafka-pipeline.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'

const TARGET_RATE = 20_000
const BELOW_SATURATION_RATE = 2_000

export const scenario: Scenario = {
  name: 'kafka-latency',
  number: 3,
  title: 'Latency produced -> tag change consumed at 20,000 ev/s through Kafka',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const at = new Map<number, { p50: number[]; p99: number[]; p999: number[]; produced: number[]; stallMax: number[] }>()
    for (let run = 0; run < ctx.runs; run++) {
      for (const rate of [TARGET_RATE, BELOW_SATURATION_RATE]) {
        const r = await measureKafkaLatency({ eventsPerSecond: rate, seconds: ctx.quick ? 3 : 10, warmupSeconds: ctx.quick ? 1 : 3, log: (l) => ctx.log(l) })
        const s = at.get(rate) ?? { p50: [], p99: [], p999: [], produced: [], stallMax: [] }
        at.set(rate, s)
        s.p50.push(r.p50Ms)
        s.p99.push(r.p99Ms)
        s.p999.push(r.p999Ms)
        s.produced.push(r.producedEventsPerSecond)
        s.stallMax.push(r.engineLoopDelayMaxMs)
        ctx.log(
          `run ${run + 1}/${ctx.runs} at ${rate} ev/s: p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, p999 ${r.p999Ms} ms over ${r.samples} changes at ${Math.round(r.producedEventsPerSecond)} ev/s produced; ` +
            `engine event-loop delay max ${r.engineLoopDelayMaxMs.toFixed(1)} ms, p99 ${r.engineLoopDelayP99Ms.toFixed(1)} ms`,
        )
      }
    }
    const full = at.get(TARGET_RATE) as { p50: number[]; p99: number[]; p999: number[]; produced: number[]; stallMax: number[] }
    const low = at.get(BELOW_SATURATION_RATE) as typeof full
    return {
      status: 'ok',
      figures: [
        { id: 'kafkaLatency.p99Ms', title: 'Event produced -> tag change consumed, p99, 20,000 ev/s offered', unit: 'ms', samples: full.p99, better: 'lower', target: { kind: 'at-most', value: 25 } },
        { id: 'kafkaLatency.p999Ms', title: 'Event produced -> tag change consumed, p99.9', unit: 'ms', samples: full.p999, better: 'lower' },
        { id: 'kafkaLatency.producedEventsPerSecond', title: 'Rate actually produced', unit: 'events/s', samples: full.produced, better: 'higher' },
        { id: 'kafkaLatency.below.p50Ms', title: 'Same path at 2,000 ev/s offered (below saturation), p50', unit: 'ms', samples: low.p50, better: 'lower' },
        { id: 'kafkaLatency.below.p99Ms', title: 'Same path at 2,000 ev/s offered (below saturation), p99', unit: 'ms', samples: low.p99, better: 'lower' },
        { id: 'kafkaLatency.below.p999Ms', title: 'Same path at 2,000 ev/s offered (below saturation), p99.9', unit: 'ms', samples: low.p999, better: 'lower' },
        {
          id: 'kafkaLatency.below.engineStallMaxMs',
          title: "Same path at 2,000 ev/s, the engine's longest event-loop stall in the window",
          unit: 'ms',
          samples: low.stallMax,
          better: 'lower',
          details: { method: "prom-client's nodejs_eventloop_lag_max_seconds (monitorEventLoopDelay, 10 ms resolution) scraped from the engine at the window's start and end" },
        },
      ],
    }
  },
}
