/**
 * Notifications of the engine's long-running and exceptional moments, for logs and progress.
 * Never called on the per-event path: a sweep starts and ends once per partition and schedule, a
 * commit fails at most once per run.
 */
export interface EngineLifecycle {
  /** A partition's re-scoring sweep of instant `atMs` (event time) has started. */
  sweepStarted?(partition: number, atMs: number): void
  /** A partition's sweep has finished (`engine.sweeping` already tells whether others still run). */
  sweepFinished?(partition: number, atMs: number): void
  /** A definition pass (publish, retire, testing change of a tag) started re-evaluating the stored users. */
  definitionPassStarted?(pass: { readonly tag: string; readonly lane: string; readonly version: number | null; readonly mode: string }): void
  /** The last running definition pass finished. */
  definitionPassesFinished?(): void
  /** A sweep worker thread failed: sweeps go on on the engine's thread from there (`engine.sweepThreads`). */
  sweepThreadFailed?(error: unknown): void
  /** A partition's projection page build failed: its previews read every projection until a restart. */
  projectionPagesFailed?(partition: number, error: unknown): void
  /** A commit failed (sinks or store); the error then ends `run()`. */
  commitFailed?(error: unknown): void
}
