/**
 * Scenario 6's limit: read every user record of the store in key order and decode it (msgpack, as
 * the engine stores them). Touching every user once is the least a re-scoring sweep must do.
 *
 *   node dist/bench/bare/scan-users.js STORE_DIR PARTITIONS  -> {"users":..,"scanMs":..}
 */
import { ClassicLevel } from 'classic-level'
import { Packr } from 'msgpackr'
import { userRange } from '../../src/store/keys.js'

async function main(path: string, partitions: number): Promise<void> {
  const db = new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false })
  await db.open()
  const packr = new Packr({ useRecords: false, mapsAsObjects: true })
  const t0 = performance.now()
  let users = 0
  let check = 0
  for (let p = 0; p < partitions; p++) {
    for await (const value of db.values({ ...userRange(p) })) {
      const rec = packr.unpack(value) as { seq: number }
      check += rec.seq
      users++
    }
  }
  const scanMs = performance.now() - t0
  await db.close()
  process.stdout.write(JSON.stringify({ users, scanMs, check }) + '\n')
}

main(process.argv[2] as string, Number(process.argv[3] ?? 4)).catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack}\n`)
  process.exit(1)
})
