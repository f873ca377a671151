import { open, type FileHandle } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { DecodeResult } from '../contracts/validate-event.js'
import type { Source, SourceRecord } from './source.js'

const CHUNK_BYTES = 1 << 20

export interface FileSourceOptions {
  readonly name: string
  readonly path: string
  readonly decode: (raw: Uint8Array, wallNow: number) => DecodeResult
  /** Longest record kept whole; longer lines are cut to this + 1 bytes and flagged. */
  readonly maxRecordBytes: number
  /** Keep polling for appended lines at the end of the file instead of ending. */
  readonly follow: boolean
  readonly pollIntervalMs: number
}

/**
 * NDJSON file source: one record per line, resumable from a byte offset. Blank lines are skipped.
 * Lines are cut out of large chunk reads without copying; a record longer than the limit is not
 * buffered whole (its head is kept for the dead letter, the rest skipped).
 */
export class FileSource implements Source {
  readonly name: string
  readonly decode: FileSourceOptions['decode']
  private readonly options: FileSourceOptions
  private fh: FileHandle | undefined
  /** File position of the next byte to read. */
  private readPos = 0
  /** Bytes read but not yet cut into records (a partial line), and the file position of its first byte. */
  private carry: Buffer = Buffer.alloc(0)
  private carryPos = 0
  /** When skipping the rest of an oversized line: its head, start position and size so far. */
  private oversized: { head: Buffer; start: number; size: number } | undefined
  private readonly queue: SourceRecord[] = []
  private eof = false
  private sizeAtOpen = 0

  constructor(options: FileSourceOptions) {
    this.options = options
    this.name = options.name
    this.decode = options.decode
  }

  async open(position: number): Promise<void> {
    this.fh = await open(this.options.path, 'r')
    this.sizeAtOpen = (await this.fh.stat()).size
    this.readPos = position
    this.carryPos = position
  }

  async poll(max: number, waitMs: number): Promise<SourceRecord[] | null> {
    const deadline = Date.now() + waitMs
    while (this.queue.length < max) {
      const got = await this.readChunk()
      if (got) continue
      // At the end of the file for now.
      if (!this.options.follow) {
        this.flushFinalLine()
        break
      }
      if (this.queue.length > 0 || Date.now() >= deadline) break
      await sleep(Math.min(this.options.pollIntervalMs, Math.max(1, deadline - Date.now())))
    }
    if (this.queue.length === 0) return this.eof && !this.options.follow ? null : []
    return this.queue.splice(0, max)
  }

  /** File position read up to (records are handed out up to a chunk behind it): replay progress. */
  get bytesRead(): number {
    return this.readPos
  }

  /** The file's size when it was opened (a followed file grows past it). */
  get bytesTotal(): number {
    return this.sizeAtOpen
  }

  /** Reads one chunk and cuts it into records; false at the end of the file. */
  private async readChunk(): Promise<boolean> {
    const fh = this.fh
    if (fh === undefined) throw new Error(`file source ${this.name} is not open`)
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES)
    const { bytesRead } = await fh.read(chunk, 0, CHUNK_BYTES, this.readPos)
    if (bytesRead === 0) {
      this.eof = true
      return false
    }
    this.eof = false
    this.readPos += bytesRead
    this.cut(chunk.subarray(0, bytesRead))
    return true
  }

  private cut(data: Buffer): void {
    const max = this.options.maxRecordBytes
    let buf = data
    let bufPos = this.readPos - data.length
    if (this.carry.length > 0) {
      buf = Buffer.concat([this.carry, data])
      bufPos = this.carryPos
      this.carry = Buffer.alloc(0)
    }
    let start = 0
    for (;;) {
      const nl = buf.indexOf(0x0a, start)
      if (this.oversized !== undefined) {
        const o = this.oversized
        if (nl < 0) {
          o.size += buf.length - start
          this.carryPos = bufPos + buf.length
          return
        }
        o.size += nl - start
        this.queue.push({ value: o.head, offset: o.start, nextOffset: bufPos + nl + 1, truncatedFrom: o.size })
        this.oversized = undefined
        start = nl + 1
        continue
      }
      if (nl < 0) {
        const rest = buf.length - start
        if (rest > max) {
          // Too long to be a record whatever follows: keep its head, skip the rest as it arrives.
          this.oversized = { head: Buffer.from(buf.subarray(start, start + max + 1)), start: bufPos + start, size: rest }
          this.carryPos = bufPos + buf.length
        } else {
          this.carry = Buffer.from(buf.subarray(start))
          this.carryPos = bufPos + start
        }
        return
      }
      this.pushLine(buf, start, nl, bufPos)
      start = nl + 1
    }
  }

  private pushLine(buf: Buffer, start: number, nl: number, bufPos: number): void {
    let end = nl
    if (end > start && buf[end - 1] === 0x0d) end-- // CRLF
    if (end === start || isBlank(buf, start, end)) return
    const max = this.options.maxRecordBytes
    const size = end - start
    const value = size > max ? Buffer.from(buf.subarray(start, start + max + 1)) : buf.subarray(start, end)
    this.queue.push({
      value,
      offset: bufPos + start,
      nextOffset: bufPos + nl + 1,
      ...(size > max ? { truncatedFrom: size } : {}),
    })
  }

  /** A file that does not end in a newline still has a last record. */
  private flushFinalLine(): void {
    if (this.oversized !== undefined) {
      const o = this.oversized
      this.queue.push({ value: o.head, offset: o.start, nextOffset: this.carryPos, truncatedFrom: o.size })
      this.oversized = undefined
      return
    }
    if (this.carry.length === 0) return
    const buf = Buffer.concat([this.carry, Buffer.from('\n')])
    const pos = this.carryPos
    this.carry = Buffer.alloc(0)
    this.pushLine(buf, 0, buf.length - 1, pos)
    // The synthetic newline is not in the file: resume after the real last byte.
    const last = this.queue[this.queue.length - 1]
    if (last !== undefined && last.nextOffset === pos + buf.length) {
      this.queue[this.queue.length - 1] = { ...last, nextOffset: pos + buf.length - 1 }
    }
    this.carryPos = pos + buf.length - 1
  }

  async close(): Promise<void> {
    await this.fh?.close()
    this.fh = undefined
  }
}

function isBlank(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = buf[i]
    if (c !== 0x20 && c !== 0x09) return false
  }
  return true
}
