import { execFileSync } from 'node:child_process'
import { cpus, totalmem, platform, release } from 'node:os'
import { ENGINE_ENV } from './processes.js'

export interface Machine {
  readonly cpuModel: string
  readonly cores: number
  readonly memoryBytes: number
  readonly node: string
  readonly os: string
}

export function machine(): Machine {
  const list = cpus()
  return {
    cpuModel: list[0]?.model.trim() ?? 'unknown',
    cores: list.length,
    memoryBytes: totalmem(),
    node: process.version,
    os: `${platform()} ${release()}`,
  }
}

export interface Commit {
  readonly sha: string
  readonly short: string
  readonly branch: string
  /** Uncommitted changes in the worktree when the bench ran. */
  readonly dirty: boolean
}

export function gitCommit(root: string): Commit {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8' }).trim()
  try {
    const sha = git('rev-parse', 'HEAD')
    return { sha, short: sha.slice(0, 10), branch: git('rev-parse', '--abbrev-ref', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no') !== '' }
  } catch {
    return { sha: 'unknown', short: 'unknown', branch: 'unknown', dirty: true }
  }
}

/** Names of variables whose values a results file must not hold (they may be credentials). */
const SECRET_NAME = /PASSWORD|SECRET|TOKEN|KEY|SASL|AUTH|CREDENTIAL/i

/**
 * What the environment changed in the measured processes: `TAGSTREAM_*` config overrides (they
 * reach every engine the bench starts) and the variables `ENGINE_ENV` sets (malloc arenas, libuv
 * threads). A results file says, for example, that its sweep ran with
 * `TAGSTREAM_ENGINE__SWEEP_THREADS=0`. Values of variables that may hold credentials are replaced
 * by "(redacted)".
 */
export function environmentOverrides(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(env).sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (value === undefined || !(name.startsWith('TAGSTREAM_') || Object.hasOwn(ENGINE_ENV, name))) continue
    out[name] = SECRET_NAME.test(name) ? '(redacted)' : value
  }
  return out
}
