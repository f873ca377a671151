import { execFileSync } from 'node:child_process'
import { cpus, totalmem, platform, release } from 'node:os'

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
