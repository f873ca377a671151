/**
 * How much JS heap a decoded user record takes per byte of its stored (msgpack) form: the ratio
 * behind the engine's cacheMaxBytes estimate (src/engine/engine.ts, HEAP_BYTES_PER_STORED_BYTE).
 * Reads up to N user records, decodes them into a Map by key as the engine's cache holds them, and
 * compares the heap before and after (full GCs around both readings).
 *
 *   node --expose-gc dist/bench/bare/record-heap.js STORE_DIR [N] [PARTITIONS]
 *     -> {"users":..,"storedBytesPerUser":..,"heapBytesPerUser":..,"heapPerStoredByte":..}
 */
import { ClassicLevel } from 'classic-level'
import { Packr } from 'msgpackr'
import { userRange } from '../../src/store/keys.js'

async function main(path: string, limit: number, partitions: number): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run with --expose-gc')
  const db = new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false })
  await db.open()
  const entries: [string, Buffer][] = []
  for (let p = 0; p < partitions && entries.length < limit; p++) {
    for await (const [key, value] of db.iterator({ ...userRange(p), limit: limit - entries.length })) entries.push([key, Buffer.from(value)])
  }
  await db.close()
  const packr = new Packr({ useRecords: false, mapsAsObjects: true })
  let stored = 0
  for (const [, value] of entries) stored += value.length
  gc()
  gc()
  const before = process.memoryUsage().heapUsed
  const cache = new Map<string, unknown>()
  // Keys as the engine has them: strings of their own, not slices of a larger one.
  for (const [key, value] of entries) cache.set(`${key}`, packr.unpack(value))
  gc()
  gc()
  const heap = process.memoryUsage().heapUsed - before
  const users = cache.size
  process.stdout.write(JSON.stringify({ users, storedBytesPerUser: stored / users, heapBytesPerUser: heap / users, heapPerStoredByte: heap / stored }) + '\n')
}

main(process.argv[2] as string, Number(process.argv[3] ?? 50_000), Number(process.argv[4] ?? 4)).catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack}\n`)
  process.exit(1)
})
