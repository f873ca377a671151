/**
 * A sweep's pass over one partition's projections in a worker thread (`store-worker.ts`): every
 * user the sweep provably leaves as it is (`SweepDecider`) is only counted; the others come back to
 * the engine, in key order, to be re-scored from their records between batches.
 *
 * Why deciding from a snapshot the engine reads later is sound: a user changed after the job was
 * made (an event, a timer) is re-scored by the engine at that change, before it, as every change
 * during a sweep is; and the users whose state was already newer than the store when the job was
 * made are in `skip`, never decided here. A decision that a user stays as it is writes nothing, so
 * one made on a projection that has since been replaced costs nothing but a count.
 */
import type { Config } from '../config/schema.js'
import { userKeyOfProjection } from '../store/keys.js'
import type { RuleSchema } from '../tags/rules.js'
import type { SharedPopulations } from './population.js'
import type { EncodedProjection, ProjectionReader } from './projection.js'
import type { DecisionLane, SweepDecider } from './sweep-decider.js'

export interface SweepJob {
  readonly kind: 'sweep'
  /** The store's directory: the worker attaches to the engine's open store. */
  readonly location: string
  /** `ProjectionLayout.id` of the engine. */
  readonly layoutId: string
  readonly schema: RuleSchema
  /** The configuration of the engine's operators: the thread creates the same ones from it. */
  readonly operators: Config['operators']
  readonly timeZone: string
  readonly at: number
  readonly populations: SharedPopulations
  readonly rescored: readonly { readonly op: string; readonly scoredIndex: number; readonly lanes: readonly DecisionLane[] }[]
  readonly rules: readonly { readonly lane: DecisionLane; readonly valueType: 'string' | 'number' | 'boolean'; readonly expression: string }[]
  readonly partition: number
  /** The pass goes on after this user key (undefined: from the first user) ... */
  readonly after: string | undefined
  /** ... up to this one, included (undefined: to the last user). */
  readonly through: string | undefined
  /** Ids of users whose state in the engine is newer than the store: re-scored from their records. */
  readonly skip: readonly string[]
  /** Users per chunk: the engine takes one chunk per step between batches. */
  readonly chunk: number
}

/** One chunk of a pass, in key order. */
export interface SweepChunk {
  /** The chunk's last user key: the pass's position once the engine has done the chunk. */
  readonly lastKey: string
  /** Users the sweep leaves as they are, and the rule evaluations that showed it. */
  readonly unchanged: number
  readonly evaluations: number
  /** User keys to re-score from their records, in key order. */
  readonly undecided: string[]
}

export interface SweepScan {
  readonly partition: number
  readonly chunks: SweepChunk[]
}

/** Where the user id starts in a `p0000!v!<id>` key. */
const ID_AT = 'p0000!v!'.length

/** Decides every user of `chunks` (a partition's projections in key order) with `decider`. */
export async function scanSweep(
  chunks: AsyncIterable<readonly (readonly [string, EncodedProjection])[]>,
  reader: ProjectionReader,
  decider: SweepDecider,
  skip: ReadonlySet<string>,
  partition: number,
): Promise<SweepScan> {
  const out: SweepChunk[] = []
  const at = decider.at
  for await (const chunk of chunks) {
    let unchanged = 0
    let evaluations = 0
    const undecided: string[] = []
    for (let i = 0; i < chunk.length; i++) {
      const [key, value] = chunk[i] as readonly [string, EncodedProjection]
      const id = key.slice(ID_AT)
      if (skip.has(id)) {
        undecided.push(userKeyOfProjection(key))
        continue
      }
      reader.load(value)
      // Already swept at this instant (re-scored at an event since the sweep started).
      if ((reader.rs ?? -Infinity) >= at) continue
      const n = decider.decide(reader, id)
      if (n < 0) undecided.push(userKeyOfProjection(key))
      else {
        unchanged++
        evaluations += n
      }
    }
    if (chunk.length > 0) out.push({ lastKey: userKeyOfProjection((chunk[chunk.length - 1] as readonly [string, EncodedProjection])[0]), unchanged, evaluations, undecided })
  }
  return { partition, chunks: out }
}
