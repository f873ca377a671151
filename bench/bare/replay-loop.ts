/**
 * The bare loop, scenario 1's limit: read the NDJSON file in 1 MiB chunks, cut lines, JSON.parse
 * each, and update a Map entry per user. Nothing else: what a Node process here can do at all.
 *
 *   node dist/bench/bare/replay-loop.js FILE   -> {"records":..,"seconds":..,"eventsPerSecond":..,"users":..,"peakRssBytes":..}
 */
import { open } from 'node:fs/promises'

interface UserTally {
  events: number
  lastTs: number
  spend: number
}

async function main(path: string): Promise<void> {
  const t0 = performance.now()
  const fh = await open(path, 'r')
  const users = new Map<string, UserTally>()
  const chunk = Buffer.allocUnsafe(1 << 20)
  let carry = Buffer.alloc(0)
  let records = 0
  let invalid = 0
  const apply = (line: Buffer) => {
    if (line.length === 0) return
    records++
    let ev: { userId?: unknown; ts?: unknown; properties?: { amount?: unknown } }
    try {
      ev = JSON.parse(line.toString('utf8'))
    } catch {
      invalid++
      return
    }
    if (ev === null || typeof ev !== 'object' || typeof ev.userId !== 'string') {
      invalid++
      return
    }
    let u = users.get(ev.userId)
    if (u === undefined) {
      u = { events: 0, lastTs: 0, spend: 0 }
      users.set(ev.userId, u)
    }
    u.events++
    if (typeof ev.ts === 'number' && ev.ts > u.lastTs) u.lastTs = ev.ts
    const amount = ev.properties?.amount
    if (typeof amount === 'number') u.spend += amount
  }
  try {
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, null)
      if (bytesRead === 0) break
      const buf = carry.length === 0 ? chunk.subarray(0, bytesRead) : Buffer.concat([carry, chunk.subarray(0, bytesRead)])
      let start = 0
      for (let nl = buf.indexOf(10, start); nl >= 0; nl = buf.indexOf(10, start)) {
        apply(buf.subarray(start, nl))
        start = nl + 1
      }
      carry = Buffer.from(buf.subarray(start))
    }
    apply(carry)
  } finally {
    await fh.close()
  }
  const seconds = (performance.now() - t0) / 1000
  process.stdout.write(
    JSON.stringify({ records, invalid, users: users.size, seconds, eventsPerSecond: records / seconds, peakRssBytes: process.resourceUsage().maxRSS * 1024 }) + '\n',
  )
}

main(process.argv[2] as string).catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack}\n`)
  process.exit(1)
})
