import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { BenchContext } from '../../bench/lib/scenario.js'
import { QUICK_SIZES } from '../../bench/lib/sizes.js'

const ROOT = resolve(import.meta.dirname, '../..')

/** A quiet quick-size bench context over a fresh work directory, with a populated store of `storeUsers`. */
export function quickBenchContext(prefix: string, storeUsers: number): BenchContext {
  return {
    quick: true,
    runs: 1,
    sizes: { ...QUICK_SIZES, storeUsers },
    workDir: mkdtempSync(join(tmpdir(), prefix)),
    root: ROOT,
    profileDir: undefined,
    reuseStores: false,
    shared: new Map(),
    log: () => {},
  }
}
