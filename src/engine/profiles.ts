import type { Config } from '../config/schema.js'
import type { Profile } from '../contracts/profile.js'
import type { Operator } from '../operator-api.js'
import { Store } from '../store/store.js'
import { buildProfile } from './engine.js'
import { createOperators } from './operators.js'
import { ScopedPopulations, rebuildPopulations } from './population.js'

/** Reads profiles straight from a store that no engine has open (the `profile` command). */
export class ProfileReader {
  private constructor(
    private readonly store: Store,
    private readonly operators: readonly Operator[],
    private readonly config: Readonly<Config>,
    private readonly partitions: readonly number[],
    private readonly clocks: ReadonlyMap<number, number>,
    private readonly populations: ScopedPopulations,
  ) {}

  static async open(config: Readonly<Config>, path: string): Promise<ProfileReader> {
    const operators = await createOperators(config)
    const store = await Store.open(path, { readOnly: true })
    try {
      const meta = await store.readMeta()
      const partitions = [...Array(meta?.partitions ?? config.engine.partitions).keys()]
      const clocks = new Map<number, number>()
      for (const p of partitions) clocks.set(p, ((await store.readClock(p))?.maxTs ?? 0) - config.time.allowedLatenessMs)
      const populations = new ScopedPopulations(config.engine.populationScope)
      await rebuildPopulations(store, operators, partitions, populations)
      return new ProfileReader(store, operators, config, partitions, clocks, populations)
    } catch (err) {
      await store.close()
      throw err
    }
  }

  private slots(): { op: Operator }[] {
    return this.operators.map((op) => ({ op }))
  }

  async get(userId: string, asOf?: number): Promise<Profile | undefined> {
    const rec = await this.store.findUser(userId, this.partitions)
    if (rec === undefined) return undefined
    return buildProfile(rec, this.slots(), asOf ?? this.clocks.get(rec.p) ?? 0, this.config.timeZone, this.populations.of(rec.p))
  }

  async *all(asOf?: number): AsyncGenerator<Profile> {
    const slots = this.slots()
    for (const p of this.partitions) {
      const now = asOf ?? this.clocks.get(p) ?? 0
      for await (const rec of this.store.iterateUsers(p)) yield buildProfile(rec, slots, now, this.config.timeZone, this.populations.of(p))
    }
  }

  close(): Promise<void> {
    return this.store.close()
  }
}
