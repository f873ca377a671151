/**
 * Worker threads that read the engine's store (`store-worker.ts`): rule previews and sweep passes.
 * Each thread attaches to the store the engine opened (`Store.attach`), so the reading (some 3.4 µs
 * per user here, most of it classic-level turning LevelDB entries into JS values) and the decisions
 * made on what is read leave the engine's thread, which keeps ingesting, and spread over the cores.
 */
import { Worker } from 'node:worker_threads'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { PartitionScan, PreviewJob } from './preview.js'
import type { PageBuild, PagesJob } from './projection-pages.js'
import type { SweepJob, SweepScan } from './sweep-scan.js'

export type StoreWorkerJob = PreviewJob | SweepJob | PagesJob

/** A job's result: a preview job scans several partitions, a sweep job one partition's range, a pages job builds one partition's pages. */
export type StoreWorkerResult<J extends StoreWorkerJob> = J extends PreviewJob ? PartitionScan[] : J extends PagesJob ? PageBuild : SweepScan

type AnyResult = PartitionScan[] | SweepScan | PageBuild

export type StoreWorkerReply = { readonly ok: true; readonly result: AnyResult } | { readonly ok: false; readonly message: string }

/**
 * A worker: the module compiled next to this one (`.js`), or, running from sources (tests), the
 * TypeScript module loaded through tsx (a development dependency).
 */
function startWorker(): Worker {
  const js = new URL('./store-worker.js', import.meta.url)
  if (existsSync(fileURLToPath(js))) return new Worker(js, { resourceLimits: WORKER_HEAP_LIMITS })
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href
  const ts = new URL('./store-worker.ts', import.meta.url).href
  return new Worker(`import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(ts)}) })`, { eval: true, resourceLimits: WORKER_HEAP_LIMITS })
}

/**
 * A scan allocates a key string and a Buffer per user, all garbage a moment later. With V8's default
 * young generation (up to 48 MB here) each thread's heap grew to about 47 MB, and its dead Buffers'
 * memory to about 19 MB, while it scanned a 1,000,000-user store; with 16 MB the two threads' scans
 * added about 35 MB less to the RSS, at the same speed within this machine's noise.
 */
const WORKER_HEAP_LIMITS = { maxYoungGenerationSizeMb: 16 }

interface Queued {
  readonly job: StoreWorkerJob
  readonly resolve: (result: AnyResult) => void
  readonly reject: (err: Error) => void
}

/**
 * Up to `threads` workers, started by the first job and stopped `idleMs` after the last: an operator
 * previews a rule several times in a row while editing it, sweeps come in one per partition, and a
 * thread takes a few hundred milliseconds of CPU to start (loading the rule library and operators),
 * while an idle one holds its heap. A thread runs one job at a time; more jobs wait in order.
 */
export class WorkerPool {
  private readonly idleWorkers: Worker[] = []
  private readonly busyWorkers = new Set<Worker>()
  private readonly queue: Queued[] = []
  private idle: NodeJS.Timeout | undefined
  private closed = false

  constructor(
    private readonly threads: number,
    private readonly idleMs = 60_000,
  ) {
    if (threads < 1) throw new RangeError('a worker pool needs at least one thread')
  }

  /** Runs a job in a thread; rejects when the job fails or its thread dies (replaced by the next job). */
  submit<J extends StoreWorkerJob>(job: J): Promise<StoreWorkerResult<J>> {
    if (this.closed) return Promise.reject(new Error('the worker pool is closed'))
    clearTimeout(this.idle)
    this.idle = undefined
    return new Promise<StoreWorkerResult<J>>((resolve, reject) => {
      this.queue.push({ job, resolve: resolve as Queued['resolve'], reject })
      this.dispatch()
    })
  }

  /** Threads alive (busy or idle). */
  get size(): number {
    return this.busyWorkers.size + this.idleWorkers.length
  }

  private dispatch(): void {
    while (this.queue.length > 0 && (this.idleWorkers.length > 0 || this.size < this.threads)) {
      const next = this.queue.shift() as Queued
      const worker = this.idleWorkers.pop() ?? startWorker()
      this.busyWorkers.add(worker)
      this.ask(worker, next)
    }
  }

  private ask(worker: Worker, { job, resolve, reject }: Queued): void {
    const done = (): void => {
      worker.off('message', onMessage)
      worker.off('error', onError)
      worker.off('exit', onExit)
      this.busyWorkers.delete(worker)
    }
    const onMessage = (reply: StoreWorkerReply): void => {
      done()
      if (this.closed) void worker.terminate()
      else this.idleWorkers.push(worker)
      if (reply.ok) resolve(reply.result)
      else reject(new Error(`${job.kind} worker: ${reply.message}`))
      this.afterJob()
    }
    const fail = (err: Error): void => {
      done()
      void worker.terminate()
      reject(err)
      this.afterJob()
    }
    const onError = (err: Error): void => fail(err)
    const onExit = (code: number): void => fail(new Error(`${job.kind} worker exited with code ${code} before replying`))
    worker.on('message', onMessage)
    worker.on('error', onError)
    worker.on('exit', onExit)
    worker.postMessage(job)
  }

  private afterJob(): void {
    if (this.closed) return
    this.dispatch()
    if (this.busyWorkers.size === 0 && this.queue.length === 0 && this.idle === undefined) {
      this.idle = setTimeout(() => void this.stop(), this.idleMs)
      this.idle.unref()
    }
  }

  /** Stops the idle threads (the next job starts them again); busy ones go on with their job. */
  async stop(): Promise<void> {
    clearTimeout(this.idle)
    this.idle = undefined
    await Promise.all(this.idleWorkers.splice(0).map((w) => w.terminate()))
  }

  /** Stops every thread; jobs waiting or running are rejected. */
  async close(): Promise<void> {
    this.closed = true
    for (const q of this.queue.splice(0)) q.reject(new Error('the worker pool is closed'))
    await Promise.all([...this.busyWorkers].map((w) => w.terminate()))
    await this.stop()
  }
}
