/** Input sizes of one invocation: full (the sizes), quick (everyday), or overridden. */
export interface Sizes {
  /** Scenario 1: records replayed, distinct user ids in the generator's base, event-time span. */
  readonly replayEvents: number
  readonly replayUsers: number
  readonly replayDays: number
  /** Scenarios 4-6: users in the populated store (every one of them a customer). */
  readonly storeUsers: number
  /** Scenario 6: events ingested while the sweep runs: a day's traffic, 0.3 events per stored user. */
  readonly sweepEvents: number
}

export const FULL_SIZES: Sizes = Object.freeze({
  replayEvents: 1_000_000,
  replayUsers: 200_000,
  replayDays: 30,
  storeUsers: 1_000_000,
  sweepEvents: 300_000,
})

export const QUICK_SIZES: Sizes = Object.freeze({
  replayEvents: 40_000,
  replayUsers: 10_000,
  replayDays: 14,
  storeUsers: 6_000,
  sweepEvents: 12_000,
})

/** A day's traffic on the populated store: 0.3 events per customer (300,000 for a million). */
const SWEEP_EVENTS_PER_USER = 0.3

/** Quick or full sizes with `--events N` (scenario 1) and `--users N` (stores, and the traffic on them) applied. */
export function sizesFor(quick: boolean, events: number | undefined, users: number | undefined): Sizes {
  const base = quick ? QUICK_SIZES : FULL_SIZES
  return {
    ...base,
    ...(events !== undefined ? { replayEvents: events, replayUsers: Math.max(1, Math.round(events / 5)) } : {}),
    ...(users !== undefined ? { storeUsers: users, sweepEvents: Math.max(1000, Math.round(users * SWEEP_EVENTS_PER_USER)) } : {}),
  }
}
