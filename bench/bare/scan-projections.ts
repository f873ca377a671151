/**
 * Scenario 7's limit: read every user's projection (the `v!` ranges a rule preview reads) with the
 * preview's iterator settings, and touch one byte of each: no decoding, no rule. Whatever a
 * preview does per user comes on top of this. With THREADS > 1 the partitions are split between
 * that many worker threads (the store opened with `multithreading`), the most this machine's
 * cores give to a read of one value per user.
 *
 *   node dist/bench/bare/scan-projections.js STORE_DIR PARTITIONS [THREADS]  -> {"users":..,"scanMs":..}
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { Store } from '../../src/store/store.js'

/** The engine's own projection scan (4 MiB per native read, 4096 entries per chunk); nothing decoded. */
async function scan(store: Store, partitions: readonly number[]): Promise<[number, number]> {
  let users = 0
  let check = 0
  await Promise.all(
    partitions.map(async (p) => {
      for await (const chunk of store.projectionValues(p, 4096)) {
        users += chunk.length
        for (const [, value] of chunk) check += value[value.length - 1] as number
      }
    }),
  )
  return [users, check]
}

async function main(path: string, partitions: number, threads: number): Promise<void> {
  const all = Array.from({ length: partitions }, (_, p) => p)
  const store = await Store.open(path, { readOnly: true })
  let users: number
  let check: number
  let scanMs: number
  if (threads <= 1) {
    const t0 = performance.now()
    ;[users, check] = await scan(store, all)
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
  await store.close()
  process.stdout.write(JSON.stringify({ users, scanMs, threads, check }) + '\n')
}

if (isMainThread) {
  main(process.argv[2] as string, Number(process.argv[3] ?? 4), Number(process.argv[4] ?? 1)).catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack}\n`)
    process.exit(1)
  })
} else {
  const { path, partitions } = workerData as { path: string; partitions: number[] }
  let store: Store | undefined
  const port = parentPort as NonNullable<typeof parentPort>
  port.on('message', (message: string) => {
    const reply =
      message === 'open'
        ? Store.attach(path).then((s) => ((store = s), [0, 0]))
        : message === 'scan'
          ? scan(store as Store, partitions)
          : (store as Store).close().then(() => [0, 0])
    reply.then((r) => port.postMessage(r), (err: unknown) => { throw err })
  })
}
