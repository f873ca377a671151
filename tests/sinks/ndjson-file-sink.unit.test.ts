import { appendFileSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { NdjsonFileWriter } from '../../src/sinks/ndjson-file-sink.js'

interface Doc {
  i: number
  text: string
}

function docs(from: number, n: number): Doc[] {
  // Multi-byte text (2-, 3- and 4-byte UTF-8) and, every 1000th, a line longer than a flush chunk.
  return Array.from({ length: n }, (_, k) => {
    const i = from + k
    return { i, text: i % 1000 === 999 ? 'ü€😀'.repeat(300_000) : `user ${i} Köln 東京 😀 ${'x'.repeat(i % 97)}` }
  })
}

function lines(path: string): string[] {
  return readFileSync(path, 'utf8').split('\n')
}

describe('NdjsonFileWriter', () => {
  it('writes every document as one JSON line across chunk boundaries and flushes, and appends after a reopen', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'ts-ndjson-')), 'out.ndjson')
    const w = new NdjsonFileWriter<Doc>(path, true)
    await w.open()
    const first = docs(0, 5000)
    for (const d of first) w.write(d)
    expect(w.buffered).toBe(5000)
    await w.flush()
    expect(w.buffered).toBe(0)
    const second = docs(5000, 1500)
    for (const d of second) w.write(d)
    await w.close()
    const expected = [...first, ...second].map((d) => JSON.stringify(d))
    expect(lines(path)).toEqual([...expected, ''])

    // A torn last line (a crash during a flush) is cut at the next open; writing goes on after it.
    appendFileSync(path, '{"i":99999,"te')
    const again = new NdjsonFileWriter<Doc>(path, false)
    await again.open()
    again.write({ i: -1, text: 'after' })
    await again.close()
    expect(lines(path)).toEqual([...expected, JSON.stringify({ i: -1, text: 'after' }), ''])
  })
})
