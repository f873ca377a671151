import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { stringify } from 'yaml'

/** The repository root: this module runs from tests/support (vitest, tsx) or dist/tests/support (bench). */
export const REPO_ROOT = (() => {
  let dir = import.meta.dirname
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir)
  return dir
})()

/** The compiled CLI: e2e tests run the engine exactly as users do (`npm test` builds first). */
export const CLI = resolve(REPO_ROOT, 'dist/src/cli/main.js')

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" (npm test does)`)
}

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export function startCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const done = new Promise<CliResult>((resolvePromise, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolvePromise({ code, signal, stdout, stderr }))
  })
  return { child, done }
}

export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return startCli(args, options).done
}

/** The two built-in operators of the foundation, as a config a test can extend. */
export const FOUNDATION_OPERATORS = [
  { name: 'attributes', type: 'fact', config: { attributes: [{ property: 'city' }, { property: 'membership_level' }] } },
  { name: 'purchases', type: 'counter', config: { eventTypes: ['purchase'], windowDays: 30, tag: 'purchase_frequency' } },
  { name: 'views', type: 'counter', config: { eventTypes: ['view'], windowDays: 7, tag: 'browsing_activity', bands: [{ name: 'browsing', min: 1 }, { name: 'engaged', min: 10 }] } },
]

/** Writes a config for a fresh data dir; returns its path and the data dir. */
export function writeConfig(extra: Record<string, unknown> = {}, dir = mkdtempSync(join(tmpdir(), 'ts-e2e-'))): { configPath: string; dataDir: string } {
  const dataDir = join(dir, 'data')
  const config = {
    dataDir,
    timeZone: 'UTC',
    engine: { partitions: 4 },
    operators: FOUNDATION_OPERATORS,
    ...extra,
  }
  const configPath = join(dir, 'tagstream.yaml')
  writeFileSync(configPath, stringify(config))
  return { configPath, dataDir }
}

export function readNdjson<T = Record<string, unknown>>(path: string): T[] {
  if (!existsSync(path)) return []
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as T)
}
