import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import type { DeadLetter } from '../../src/contracts/dead-letter.js'
import { INVALID_KIND_REJECT_REASON, encodeNdjsonLine, generateWorkload, type GeneratedRecord } from '../../src/workload/generator.js'
import { assertBuilt, readNdjson, runCli, writeConfig } from '../support/cli.js'

describe('bad input', () => {
  beforeAll(() => assertBuilt())

  it('dead-letters every bad record with its reason and coordinates, and applies every valid event around them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-bad-'))
    const records: GeneratedRecord[] = [...generateWorkload({ seed: 11, users: 200, events: 20_000, days: 40, invalidRatio: 0.02, duplicateRatio: 0 })]
    const lines: Buffer[] = []
    const expected: { offset: number; code: string }[] = []
    const validLines: Buffer[] = []
    let offset = 0
    const add = (line: Buffer, code?: string) => {
      if (code !== undefined) expected.push({ offset, code })
      else validLines.push(line)
      lines.push(line)
      offset += line.length
    }
    for (const r of records) add(encodeNdjsonLine(r), r.kind === 'invalid' ? INVALID_KIND_REJECT_REASON[r.invalidKind] : undefined)
    // Kinds the generator does not make: blank lines and CRLF (not records), a line far over the
    // size limit (cut by the source, never buffered whole), a record that is only whitespace inside JSON.
    add(Buffer.from('\n'))
    add(Buffer.from('   \r\n'))
    const hugeOffset = offset
    add(Buffer.from(`{"eventId":"huge","userId":"u1","type":"view","ts":1,"properties":{"x":"${'y'.repeat(3_000_000)}"}}\n`), 'record_too_large')
    add(Buffer.from('{"eventId":"crlf","userId":"u-crlf","type":"view","ts":"2024-02-09T12:00:00Z"}\r\n'))
    add(Buffer.from('{}\n'), 'missing_field')
    add(Buffer.from('12\n'), 'not_an_object')
    // Blank lines are not records: drop them from what the valid-only replay gets.
    validLines.splice(validLines.length - 3, 2)
    const mixed = join(dir, 'mixed.ndjson')
    writeFileSync(mixed, Buffer.concat(lines))
    const onlyValid = join(dir, 'valid.ndjson')
    writeFileSync(onlyValid, Buffer.concat(validLines))

    const a = writeConfig({}, mkdtempSync(join(tmpdir(), 'ts-bad-a-')))
    const b = writeConfig({}, mkdtempSync(join(tmpdir(), 'ts-bad-b-')))
    const ra = await runCli(['replay', mixed, '--config', a.configPath])
    expect(ra.code, ra.stderr).toBe(0)
    const summary = JSON.parse(ra.stdout) as { invalid: number; invalidByReason: Record<string, number> }
    expect(summary.invalid).toBe(expected.length)

    const dead = readNdjson<DeadLetter>(join(a.dataDir, 'dead-letters.ndjson'))
    expect(dead.map((d) => ({ offset: d.coordinates.offset, code: d.reason.code }))).toEqual(expected)
    for (const d of dead) {
      expect(d.coordinates.source).toBe(`file:${mixed}`)
      expect(d.reason.message.length).toBeGreaterThan(5)
    }
    const huge = dead.find((d) => d.coordinates.offset === hugeOffset)
    expect(huge?.truncated).toBe(true)
    expect(Buffer.from(huge!.raw, 'base64').subarray(0, 20).toString()).toBe('{"eventId":"huge","u')

    // Every valid event was applied: the profiles equal those of a replay of the valid events alone.
    const rb = await runCli(['replay', onlyValid, '--config', b.configPath])
    expect(rb.code, rb.stderr).toBe(0)
    const pa = await runCli(['profile', '--all', '--config', a.configPath])
    const pb = await runCli(['profile', '--all', '--config', b.configPath])
    expect(pa.stdout.split('\n').length).toBeGreaterThan(150)
    expect(pa.stdout).toBe(pb.stdout)
    const crlf = await runCli(['profile', 'u-crlf', '--config', a.configPath])
    expect(crlf.code).toBe(0)
  })
})
