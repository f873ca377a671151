/**
 * The engine runs as users run it: the compiled CLI in a child process, with the default
 * configuration's operators. Bare-limit programs run the same way, so both pay the same process costs.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { parse, stringify } from 'yaml'
import type { BenchContext } from './scenario.js'

export function cliPath(ctx: BenchContext): string {
  return join(ctx.root, 'dist/src/cli/main.js')
}

export function barePath(ctx: BenchContext, name: string): string {
  return join(ctx.root, 'dist/bench/bare', `${name}.js`)
}

/**
 * config/tagstream.yaml with its operators, time zone and engine settings, for a bench data dir:
 * the embedded demo source and the stdout sink removed, HTTP off unless asked for; tag changes
 * and dead letters go to fsynced NDJSON files, store commits are synced (durable commits).
 */
export function writeEngineConfig(ctx: BenchContext, dir: string, extra: Record<string, unknown> = {}): string {
  mkdirSync(dir, { recursive: true })
  const base = parse(readFileSync(join(ctx.root, 'config/tagstream.yaml'), 'utf8')) as Record<string, unknown>
  const config: Record<string, unknown> = {
    ...base,
    dataDir: join(dir, 'data'),
    sources: [],
    http: { enabled: false },
    sinks: { tagChanges: [{ type: 'ndjson-file', fsync: true }], deadLetter: { type: 'ndjson-file', fsync: true } },
    ...extra,
  }
  const path = join(dir, 'tagstream.yaml')
  writeFileSync(path, stringify(config))
  return path
}

export function storeDir(dir: string): string {
  return join(dir, 'data', 'store')
}

export interface ProcessResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  readonly wallMs: number
}

/**
 * The malloc arenas and libuv thread pool `bin/tagstream` (the tagstream command) runs the engine
 * with, unless the environment sets them: every measured process, engine and bare loops, runs as a
 * deployment does. (The bench's own process too: `bench/run.ts` starts itself again with them.)
 */
const MALLOC_ARENA_MAX = process.env.MALLOC_ARENA_MAX ?? '2'
const UV_THREADPOOL_SIZE = process.env.UV_THREADPOOL_SIZE ?? '16'

/** What the environment of a measured engine process adds (for processes started elsewhere, e.g. `startCli`). */
export const ENGINE_ENV: NodeJS.ProcessEnv = { MALLOC_ARENA_MAX, UV_THREADPOOL_SIZE }

/** Starts a node program as a measured process; `stdout()` is what it printed so far. */
export function startNode(args: readonly string[], options: { cwd?: string } = {}): { child: ChildProcess; done: Promise<ProcessResult>; stdout(): string } {
  const t0 = performance.now()
  const child = spawn(process.execPath, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...ENGINE_ENV } })
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const done = new Promise<ProcessResult>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, wallMs: performance.now() - t0 }))
  })
  return { child, done, stdout: () => stdout }
}

/** Runs a node program to its end and parses the last stdout line as JSON; throws on failure. */
export async function runNodeJson<T>(args: readonly string[], what: string): Promise<T & { wallMs: number }> {
  const r = await startNode(args).done
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code ?? r.signal}):\n${r.stderr.slice(-4000)}`)
  const lines = r.stdout.trim().split('\n')
  return { ...(JSON.parse(lines[lines.length - 1] as string) as T), wallMs: r.wallMs }
}

/** What `tagstream replay` prints. */
export interface ReplaySummary {
  records: number
  eventsApplied: number
  invalid: number
  duplicates: number
  tagChanges: number
  timersFired: number
  users: number
  commits: number
  sweeps: number
  usersRescored: number
  /** Of usersRescored: users whose projection showed the sweep changes nothing (record not read). */
  usersRescoredFromProjections?: number
  /** Wall time spent in sweep steps, all sweeps of the replay (the ingestion between them not included). */
  sweepStepMs?: number
  lastSweepMs: number
  seconds: number
  eventsPerSecond: number
  peakRssBytes: number
}

export function replay(ctx: BenchContext, config: string, files: readonly string[], options: { cpuProfileDir?: string } = {}): Promise<ReplaySummary & { wallMs: number }> {
  const flags = options.cpuProfileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`]
  return runNodeJson<ReplaySummary>([...flags, cliPath(ctx), 'replay', ...files, '--config', config], 'tagstream replay')
}

export function freshDir(dir: string): string {
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  return dir
}

/**
 * Copies a store (or any dir) and waits until the kernel has written the copy out: a 1.5 GB copy
 * otherwise goes on being written back while the next measurement runs (a 1M-user preview measured
 * 3.9 s right after the copy, 2.6 s on the same copy once written).
 */
export function copyDir(from: string, to: string): void {
  rmSync(to, { recursive: true, force: true })
  cpSync(from, to, { recursive: true })
  execFileSync('sync')
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** Bytes of every file under `dir`. */
export function dirBytes(dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    total += entry.isDirectory() ? dirBytes(p) : statSync(p).size
  }
  return total
}
