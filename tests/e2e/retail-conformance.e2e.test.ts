/**
 * Conformance against real data: the Online Retail invoices replayed through the CLI must give, for
 * every one of the 4,338 customers, the RFM values, scores and segments of the independent batch
 * analysis in shared/datasets/online-retail/reference-rfm.csv (see its README).
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_SEGMENT_MAP } from '../../operators/rfm.js'
import { partitionFor } from '../../src/engine/partitioner.js'
import type { Profile } from '../../src/contracts/profile.js'
import { assertBuilt, readNdjson, runCli, writeConfig } from '../support/cli.js'

const repoRoot = resolve(import.meta.dirname, '..', '..')
/** `shared/` sits beside the repository (here and in CI). */
const DATASET = resolve(repoRoot, '..', 'shared', 'datasets', 'online-retail')
const AS_OF = '2011-12-10T00:00:00Z'

interface Reference {
  readonly customerId: string
  readonly recency: number
  readonly frequency: number
  readonly monetary: number
  readonly r: number
  readonly f: number
  readonly m: number
  readonly cell: string
  readonly segment: string
}

/** The RFM part of a profile that the test compares. */
interface RfmView {
  readonly recencyDays: number
  readonly frequency: number
  readonly monetary: number
  readonly scores: { readonly r: number; readonly f: number; readonly m: number } | null
  readonly cell: string | null
  readonly segment: string | null
}

function csvLines(file: string): string[] {
  const lines = readFileSync(join(DATASET, file), 'utf8').split(/\r?\n/).filter((l) => l !== '')
  return lines.slice(1)
}

// CustomerID,Recency,Frequency,Monetary,RScore,FScore,MScore,RFMCell,RFMScore,Segment (RFMCell quoted: "5,5,5").
const REFERENCE_ROW = /^([^,]+),(\d+),(\d+),([^,]+),([1-5]),([1-5]),([1-5]),"([1-5],[1-5],[1-5])",([^,]+),(.+)$/

function readReference(): Reference[] {
  return csvLines('reference-rfm.csv').map((line) => {
    const m = REFERENCE_ROW.exec(line)
    if (m === null) throw new Error(`unexpected reference row: ${line}`)
    return {
      customerId: m[1] as string,
      recency: Number(m[2]),
      frequency: Number(m[3]),
      monetary: Number(m[4]),
      r: Number(m[5]),
      f: Number(m[6]),
      m: Number(m[7]),
      cell: m[8] as string,
      segment: m[10] as string,
    }
  })
}

/** invoices.csv -> purchase events in file order: InvoiceNo, CustomerID, InvoiceDate at 00:00 UTC, TotalPrice. */
function writeEvents(path: string): number {
  const lines = csvLines('invoices.csv').map((line) => {
    const [invoiceNo, invoiceDate, customerId, totalPrice, ...extra] = line.split(',')
    if (extra.length > 0 || !/^\d{4}-\d{2}-\d{2}$/.test(invoiceDate ?? '') || totalPrice === undefined) {
      throw new Error(`unexpected invoice row: ${line}`)
    }
    const amount = Number.parseFloat(totalPrice)
    return JSON.stringify({ eventId: invoiceNo, userId: customerId, type: 'purchase', ts: `${invoiceDate}T00:00:00Z`, properties: { amount } })
  })
  writeFileSync(path, lines.join('\n') + '\n')
  return lines.length
}

/**
 * The reference's scores of `rows`, ranked among `rows` only, by its own rule (the dataset's README):
 * min ranks, 1..maxRank cut into 5 equal-width bins, recency's labels reversed.
 */
function referenceScores(rows: readonly Reference[]): Map<string, { r: number; f: number; m: number }> {
  const scorer = (values: readonly number[]) => {
    // Plainly counted, not the engine's order-statistic structure: a few thousand values.
    const rank = (v: number) => 1 + values.filter((x) => x < v).length
    const maxRank = rank(Math.max(...values))
    return (v: number) => (maxRank <= 1 ? 3 : Math.max(1, Math.ceil((5 * (rank(v) - 1)) / (maxRank - 1))))
  }
  const r = scorer(rows.map((x) => x.recency))
  const f = scorer(rows.map((x) => x.frequency))
  const m = scorer(rows.map((x) => x.monetary))
  return new Map(rows.map((x) => [x.customerId, { r: 6 - r(x.recency), f: f(x.frequency), m: m(x.monetary) }]))
}

async function profiles(configPath: string): Promise<Map<string, Profile>> {
  const res = await runCli(['profile', '--all', '--as-of', AS_OF, '--config', configPath])
  expect(res.code, res.stderr).toBe(0)
  const out = new Map<string, Profile>()
  for (const line of res.stdout.split('\n')) {
    if (line === '') continue
    const p = JSON.parse(line) as Profile
    out.set(p.userId, p)
  }
  return out
}

describe('Online Retail RFM conformance', () => {
  const reference = readReference()
  let dataDir: string
  let configPath: string
  let summary: Record<string, unknown>

  beforeAll(async () => {
    assertBuilt()
    const dir = mkdtempSync(join(tmpdir(), 'ts-retail-'))
    const input = join(dir, 'invoices.ndjson')
    expect(writeEvents(input)).toBe(18_532)
    // The reference's own map, read off its 113 cells (the other 12 keep the shipped default's).
    const segmentMap = Object.fromEntries(reference.map((r) => [r.cell, r.segment]))
    ;({ configPath, dataDir } = writeConfig({ operators: [{ name: 'rfm', type: 'rfm', config: { segmentMap } }] }, dir))
    const res = await runCli(['replay', input, '--config', configPath])
    expect(res.code, res.stderr).toBe(0)
    summary = JSON.parse(res.stdout.trim().split('\n').at(-1) as string) as Record<string, unknown>
  }, 180_000)

  it('reads the reference: 4,338 customers in 113 cells, one segment per cell', () => {
    expect(reference.length).toBe(4338)
    const cells = new Map<string, Set<string>>()
    for (const r of reference) cells.set(r.cell, (cells.get(r.cell) ?? new Set()).add(r.segment))
    expect(cells.size).toBe(113)
    expect([...cells.values()].every((s) => s.size === 1)).toBe(true)
  })

  it('applies every invoice: nothing invalid, duplicated or dead-lettered', () => {
    expect(summary).toStrictEqual(
      expect.objectContaining({ records: 18_532, eventsApplied: 18_532, invalid: 0, invalidByReason: {}, duplicates: 0, users: 4338 }),
    )
    expect(readNdjson(join(dataDir, 'dead-letters.ndjson'))).toStrictEqual([])
  })

  it('gives every customer the reference recency, frequency, monetary, scores and segment', async () => {
    const byUser = await profiles(configPath)
    expect(byUser.size).toBe(4338)
    const mismatches: unknown[] = []
    for (const ref of reference) {
      const v = byUser.get(ref.customerId)?.state.rfm as RfmView | undefined
      const want = { recencyDays: ref.recency, frequency: ref.frequency, scores: { r: ref.r, f: ref.f, m: ref.m }, cell: ref.cell, segment: ref.segment }
      const got = v === undefined ? undefined : { recencyDays: v.recencyDays, frequency: v.frequency, scores: v.scores, cell: v.cell, segment: v.segment }
      const monetaryOk = v !== undefined && Math.abs(v.monetary - ref.monetary) < 0.01
      if (!monetaryOk || JSON.stringify(got) !== JSON.stringify(want)) {
        mismatches.push({ customer: ref.customerId, want: { ...want, monetary: ref.monetary }, got: v })
      }
    }
    expect(mismatches.slice(0, 20), `${mismatches.length} of 4338 customers differ`).toStrictEqual([])
  }, 120_000)

  it('the shipped default segmentMap gives every customer the reference segment', async () => {
    // Same store, a config without segmentMap: the profile views map the cells with the default.
    const { configPath: defaults } = writeConfig({ dataDir, operators: [{ name: 'rfm', type: 'rfm' }] })
    const byUser = await profiles(defaults)
    const mismatches = reference.flatMap((ref) => {
      const v = byUser.get(ref.customerId)?.state.rfm as RfmView | undefined
      return v?.cell === ref.cell && v.segment === ref.segment ? [] : [{ customer: ref.customerId, cell: ref.cell, want: ref.segment, got: v?.segment }]
    })
    expect(mismatches.slice(0, 20), `${mismatches.length} of 4338 customers differ`).toStrictEqual([])
    // And cell by cell, for the 113 cells the data has.
    for (const ref of reference) expect(DEFAULT_SEGMENT_MAP[ref.cell], ref.cell).toBe(ref.segment)
  }, 120_000)

  it('with populationScope partition, every customer is scored among the customers of its partition, by the reference rule', async () => {
    // The rule reproduces the reference over all customers (a check of this test's own ranking).
    const whole = referenceScores(reference)
    expect(reference.filter((ref) => JSON.stringify(whole.get(ref.customerId)) !== JSON.stringify({ r: ref.r, f: ref.f, m: ref.m }))).toStrictEqual([])
    const partitions = 4
    const byPartition = new Map<string, { r: number; f: number; m: number }>()
    for (let p = 0; p < partitions; p++) {
      for (const [id, scores] of referenceScores(reference.filter((ref) => partitionFor(ref.customerId, partitions) === p))) byPartition.set(id, scores)
    }
    // Enough customers score otherwise among their partition for the test to tell the scopes apart.
    const moved = reference.filter((ref) => JSON.stringify(byPartition.get(ref.customerId)) !== JSON.stringify(whole.get(ref.customerId))).length
    expect(moved).toBeGreaterThan(100)
    const { configPath: scoped } = writeConfig({ dataDir, engine: { partitions, populationScope: 'partition' }, operators: [{ name: 'rfm', type: 'rfm' }] })
    const byUser = await profiles(scoped)
    const mismatches = reference.flatMap((ref) => {
      const v = byUser.get(ref.customerId)?.state.rfm as RfmView | undefined
      const want = byPartition.get(ref.customerId) as { r: number; f: number; m: number }
      const cell = `${want.r},${want.f},${want.m}`
      const got = { scores: v?.scores, cell: v?.cell, segment: v?.segment }
      return JSON.stringify(got) === JSON.stringify({ scores: want, cell, segment: DEFAULT_SEGMENT_MAP[cell] }) ? [] : [{ customer: ref.customerId, want: { ...want, cell }, got }]
    })
    expect(mismatches.slice(0, 20), `${mismatches.length} of 4338 customers differ`).toStrictEqual([])
  }, 120_000)
})
