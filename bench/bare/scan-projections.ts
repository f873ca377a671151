/**
 * Scenario 7's limit: read every user's projection (the `v!` ranges a rule preview reads) with the
 * preview's iterator settings, and touch one byte of each: no decoding, no rule. Whatever a
 * preview does per user comes on top of this. With THREADS > 1 the partitions are split between
 * that many worker threads (the store opened with `multithreading`), the most this machine's
 * cores give to a read of one value per user.
 *
 *   node dist/bench/bare/scan-projections.js STORE_DIR PARTITIONS [THREADS]  -> {"users":..,"scanMs":..}
 */
import { ClassicLevel } from 'classic-level'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { projectionRange } from '../../src/store/keys.js'

/** As the engine's scans (src/store/store.ts): 4 MiB per native read, 4096 entries per nextv. */
const HIGH_WATER_MARK_BYTES = 4 << 20
const CHUNK = 4096

function open(path: string, multithreading: boolean): ClassicLevel<string, Buffer> {
  return new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false, multithreading })
}

/** Reads the partitions' projections concurrently (as the preview does); returns [users, checksum]. */
async function scan(db: ClassicLevel<string, Buffer>, partitions: readonly number[]): Promise<[number, number]> {
  let users = 0
  let check = 0
  await Promise.all(
    partitions.map(async (p) => {
      const it = db.iterator({ ...projectionRange(p), highWaterMarkBytes: HIGH_WATER_MARK_BYTES })
      try {
        for (let chunk = await it.nextv(CHUNK); chunk.length > 0; chunk = await it.nextv(CHUNK)) {
          users += chunk.length
          for (const [, value] of chunk) check += value[value.length - 1] as number
        }
      } finally {
        await it.close()
      }
    }),
  )
  return [users, check]
}

async function main(path: string, partitions: number, threads: number): Promise<void> {
  const all = Array.from({ length: partitions }, (_, p) => p)
  const db = open(path, threads > 1)
  await db.open()
  let users: number
  let check: number
  let scanMs: number
  if (threads <= 1) {
    const t0 = performance.now()
    ;[users, check] = await scan(db, all)
    scanMs = performance.now() - t0
  } else {
    const workers = Array.from({ length: threads }, (_, i) => new Worker(new URL(import.meta.url), { workerData: { path, partitions: all.filter((p) => p % threads === i) } }))
    const ask = (w: Worker, message: string): Promise<[number, number]> =>
      new Promise((resolve, reject) => {
        w.once('message', resolve)
        w.once('error', reject)
        w.postMessage(message)
      })
    await Promise.all(workers.map((w) => ask(w, 'open')))
    const t0 = performance.now()
    const results = await Promise.all(workers.map((w) => ask(w, 'scan')))
    scanMs = performance.now() - t0
    await Promise.all(workers.map((w) => ask(w, 'close')))
    await Promise.all(workers.map((w) => w.terminate()))
    users = results.reduce((n, r) => n + r[0], 0)
    check = results.reduce((n, r) => n + r[1], 0)
  }
  await db.close()
  process.stdout.write(JSON.stringify({ users, scanMs, threads, check }) + '\n')
}

if (isMainThread) {
  main(process.argv[2] as string, Number(process.argv[3] ?? 4), Number(process.argv[4] ?? 1)).catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack}\n`)
    process.exit(1)
  })
} else {
  const { path, partitions } = workerData as { path: string; partitions: number[] }
  const db = open(path, true)
  const port = parentPort as NonNullable<typeof parentPort>
  port.on('message', (message: string) => {
    const reply = message === 'open' ? db.open().then(() => [0, 0]) : message === 'scan' ? scan(db, partitions) : db.close().then(() => [0, 0])
    reply.then((r) => port.postMessage(r), (err: unknown) => { throw err })
  })
}
