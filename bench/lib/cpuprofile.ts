/** Self time per function of a V8 .cpuprofile: the costs the closing note names. */
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}

function locationOf(url: string, lineNumber: number): string {
  return url === '' ? '' : `${url.replace(/^file:\/\//, '').split('/').slice(-2).join('/')}:${lineNumber + 1}`
}

/**
 * Inclusive time (self plus callees, each function counted once per sample) of the functions
 * whose file matches `include`: where the time goes in the engine's own terms.
 */
export function topInclusiveCosts(path: string, include: RegExp, limit: number): Cost[] {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const perNode = new Map<number, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0
    total += dt
    perNode.set(id, (perNode.get(id) ?? 0) + dt)
  })
  const inclusive = new Map<string, { fn: string; loc: string; us: number }>()
  for (const [id, us] of perNode) {
    const seen = new Set<string>()
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const node = byId.get(at)
      if (node === undefined) break
      const { functionName, url, lineNumber } = node.callFrame
      if (!include.test(url)) continue
      const loc = locationOf(url, lineNumber)
      const key = `${functionName}@${loc}`
      if (seen.has(key)) continue
      seen.add(key)
      const entry = inclusive.get(key) ?? { fn: functionName || '(anonymous)', loc, us: 0 }
      entry.us += us
      inclusive.set(key, entry)
    }
  }
  return [...inclusive.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, limit)
    .map((e) => ({ function: e.fn, location: e.loc, selfMs: Math.round(e.us / 1000), selfPercent: Number(((e.us / total) * 100).toFixed(1)) }))
}

export interface Cost {
  readonly function: string
  readonly location: string
  readonly selfMs: number
  readonly selfPercent: number
}

export function topSelfCosts(path: string, limit: number): Cost[] {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map<string, { fn: string; loc: string; us: number }>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)
    const dt = profile.timeDeltas[i] ?? 0
    total += dt
    if (node === undefined) return
    const { functionName, url, lineNumber } = node.callFrame
    const loc = locationOf(url, lineNumber)
    const key = `${functionName}@${loc}`
    const entry = self.get(key) ?? { fn: functionName || '(anonymous)', loc, us: 0 }
    entry.us += dt
    self.set(key, entry)
  })
  return [...self.values()]
    .filter((e) => e.fn !== '(idle)' && e.fn !== '(program)')
    .sort((a, b) => b.us - a.us)
    .slice(0, limit)
    .map((e) => ({ function: e.fn, location: e.loc, selfMs: Math.round(e.us / 1000), selfPercent: Number(((e.us / total) * 100).toFixed(1)) }))
}
