import type { ScoredLayout } from '../../src/engine/population.js'
import type { Store } from '../../src/store/store.js'

/**
 * The reference the population tests compare stored statistics with: every stored user's values
 * of each layout column, read from the user records (what a rebuild computes), in store order.
 */
export async function columnsFromRecords(store: Store, layout: ScoredLayout, partitions: readonly number[]): Promise<{ columns: number[][]; users: number }> {
  const columns: number[][] = layout.columns.map(() => [])
  let users = 0
  for (const p of partitions) {
    for await (const rec of store.iterateUsers(p)) {
      users++
      let col = 0
      for (const op of layout.operators) {
        const state = rec.ops[op.name]
        const values = state === undefined ? {} : op.scoredValues!(state)
        for (const dim of op.population ?? []) {
          const v = values[dim]
          if (v !== undefined) (columns[col] as number[]).push(v)
          col++
        }
      }
    }
  }
  return { columns, users }
}
