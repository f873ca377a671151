/**
 * Scenario 3: latency from an event produced to the tag change it causes being consumed, at a
 * steady offered 20,000 events/s through the mock cluster (HDR histogram; `bench/kafka-pipeline.ts`).
 * When the engine cannot keep up with the offered rate, the figures measure the growing queue; so
 * the same measurement also runs at 2,000 events/s, below what one process sustains here, where
 * the figures show the path itself (Kafka client timers, batching, commits) rather than a queue.
 * The limit of each figure is the bare pipe (bench/bare/kafka-pipe.ts) on the same path, measured
 * in the same run: what the two Kafka hops cost here, whatever sits between them. Each run also
 * reports the engine's longest event-loop stall in the measured window: an event that arrives
 * during a stall waits for its end.
 */
import { measureKafkaLatencyPhases, withCluster, type KafkaLatencyResult } from '../kafka-pipeline.js'
import type { BenchContext, Scenario, ScenarioOutcome } from '../lib/scenario.js'

const TARGET_RATE = 20_000
const BELOW_SATURATION_RATE = 2_000

interface Series {
  p50: number[]
  p99: number[]
  p999: number[]
  produced: number[]
  stallMax: number[]
  drainMs: number[]
}

const newSeries = (): Series => ({ p50: [], p99: [], p999: [], produced: [], stallMax: [], drainMs: [] })

export const scenario: Scenario = {
  name: 'kafka-latency',
  number: 3,
  title: 'Latency produced -> tag change consumed at 20,000 ev/s through Kafka',
  async run(ctx: BenchContext): Promise<ScenarioOutcome> {
    const series = new Map<string, Series>()
    // One mock cluster for every measurement (each has its own topics): its start is left out.
    await withCluster(undefined, async (bootstrap) => {
      for (let run = 0; run < ctx.runs; run++) {
        // The engine and the bare pipe alternate: drift on a shared machine hits both alike. A quick
        // run (under 3 minutes in all) measures both rates in one process each (one group join,
        // 3 s on the mock as on Kafka), the backlog of 20,000 ev/s drained before 2,000 ev/s starts,
        // and the bare pipe at the target's rate only. A full run gives each rate its own process
        // and topics: on the topics of 13 s at 20,000 ev/s (some 260,000 records, near the mock's
        // 5 MiB per partition), 2,000 ev/s then took seconds per event, through the bare pipe too
        // (p50 9.3 s), so the figure would have measured the topics, not the path.
        for (const pipe of ['engine', 'bare'] as const) {
          const rates = ctx.quick && pipe === 'bare' ? [TARGET_RATE] : [TARGET_RATE, BELOW_SATURATION_RATE]
          const phaseOf = (eventsPerSecond: number) => ({ eventsPerSecond, seconds: ctx.quick ? 2 : 10, warmupSeconds: ctx.quick ? 1 : 3 })
          const results: KafkaLatencyResult[] = []
          if (ctx.quick) results.push(...(await measureKafkaLatencyPhases({ bootstrap, phases: rates.map(phaseOf), pipe, log: (l) => ctx.log(l) })))
          else for (const rate of rates) results.push(...(await measureKafkaLatencyPhases({ bootstrap, phases: [phaseOf(rate)], pipe, log: (l) => ctx.log(l) })))
          results.forEach((r, i) => {
            const rate = rates[i] as number
            const key = `${pipe}@${rate}`
            const s = series.get(key) ?? newSeries()
            series.set(key, s)
            s.p50.push(r.p50Ms)
            s.p99.push(r.p99Ms)
            s.p999.push(r.p999Ms)
            s.produced.push(r.producedEventsPerSecond)
            s.stallMax.push(r.engineLoopDelayMaxMs)
            s.drainMs.push(r.drainMs)
            ctx.log(
              `run ${run + 1}/${ctx.runs}, ${pipe} at ${rate} ev/s: p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, p999 ${r.p999Ms} ms over ${r.samples} changes of ${r.measuredEvents} events at ${Math.round(r.producedEventsPerSecond)} ev/s produced, drained in ${r.drainMs} ms` +
                (pipe === 'engine' ? `; engine event-loop delay max ${r.engineLoopDelayMaxMs.toFixed(1)} ms, p99 ${r.engineLoopDelayP99Ms.toFixed(1)} ms` : ''),
            )
          })
        }
      }
    })
    const full = series.get(`engine@${TARGET_RATE}`) as Series
    const low = series.get(`engine@${BELOW_SATURATION_RATE}`) as Series
    const bareFull = series.get(`bare@${TARGET_RATE}`) as Series
    const bareLow = series.get(`bare@${BELOW_SATURATION_RATE}`)
    const bareTitle = (what: string, rate: number) =>
      `bare pipe (bench/bare/kafka-pipe.ts: the same clients and settings consume, and produce a message per event, nothing else), ${what} at ${rate.toLocaleString('en-US')} ev/s`
    return {
      status: 'ok',
      figures: [
        {
          id: 'kafkaLatency.p99Ms',
          title: 'Event produced -> tag change consumed, p99, 20,000 ev/s offered',
          unit: 'ms',
          samples: full.p99,
          better: 'lower',
          target: { kind: 'at-most', value: 25 },
          limit: { title: bareTitle('p99', TARGET_RATE), samples: bareFull.p99 },
          details: {
            method:
              'HDR histogram of (change consumed - causing event produced) over the events of the measured window. A window ends once the pipe has read every record produced ' +
              '(tagstream_events_received_total; the bare pipe: one message per event) and no change came for 1 s: no change of the window is left out. ' +
              (ctx.quick
                ? 'Each process measures 20,000 then 2,000 ev/s, the first backlog drained before the second rate starts.'
                : 'Each rate has its own process and topics.'),
            drainMs: full.drainMs,
          },
        },
        { id: 'kafkaLatency.p999Ms', title: 'Event produced -> tag change consumed, p99.9', unit: 'ms', samples: full.p999, better: 'lower', limit: { title: bareTitle('p99.9', TARGET_RATE), samples: bareFull.p999 } },
        { id: 'kafkaLatency.producedEventsPerSecond', title: 'Rate actually produced', unit: 'events/s', samples: full.produced, better: 'higher' },
        { id: 'kafkaLatency.below.p50Ms', title: 'Same path at 2,000 ev/s offered (below saturation), p50', unit: 'ms', samples: low.p50, better: 'lower', ...(bareLow === undefined ? {} : { limit: { title: bareTitle('p50', BELOW_SATURATION_RATE), samples: bareLow.p50 } }) },
        { id: 'kafkaLatency.below.p99Ms', title: 'Same path at 2,000 ev/s offered (below saturation), p99', unit: 'ms', samples: low.p99, better: 'lower', ...(bareLow === undefined ? {} : { limit: { title: bareTitle('p99', BELOW_SATURATION_RATE), samples: bareLow.p99 } }) },
        { id: 'kafkaLatency.below.p999Ms', title: 'Same path at 2,000 ev/s offered (below saturation), p99.9', unit: 'ms', samples: low.p999, better: 'lower', ...(bareLow === undefined ? {} : { limit: { title: bareTitle('p99.9', BELOW_SATURATION_RATE), samples: bareLow.p999 } }) },
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
