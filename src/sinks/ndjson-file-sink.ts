import { mkdirSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ErrorCodes, TagstreamError } from '../errors.js'
import type { DeadLetter } from '../contracts/dead-letter.js'
import type { TagChange } from '../contracts/tag-change.js'
import type { DeadLetterSink, TagChangeSink } from './sink.js'

/**
 * Appends one JSON document per line. Lines are buffered by `write` and written, then fsynced, by
 * `flush`. A crash can leave a torn last line (written but not completed); opening the file cuts it
 * off, which is safe because the commit that would have covered it never happened: the events
 * behind it are replayed and regenerate the same lines.
 */
export class NdjsonFileWriter<T> {
  readonly name: string
  readonly path: string
  private readonly fsync: boolean
  private fh: FileHandle | undefined
  private pending: string[] = []
  private position = 0

  constructor(path: string, fsync: boolean) {
    this.name = `ndjson-file:${path}`
    this.path = path
    this.fsync = fsync
  }

  async open(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true })
    this.fh = await open(this.path, 'a+')
    const { size } = await this.fh.stat()
    this.position = await cutTornTail(this.fh, size)
  }

  write(doc: T): void {
    this.pending.push(JSON.stringify(doc))
  }

  get buffered(): number {
    return this.pending.length
  }

  async flush(): Promise<void> {
    const fh = this.fh
    if (fh === undefined) throw new TagstreamError(ErrorCodes.ENGINE_STATE, `sink ${this.path} is not open`)
    if (this.pending.length === 0) return
    const text = this.pending.join('\n') + '\n'
    this.pending = []
    const buf = Buffer.from(text, 'utf8')
    try {
      let off = 0
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off, this.position + off)
        off += bytesWritten
      }
      this.position += buf.length
      if (this.fsync) await fh.datasync()
    } catch (err) {
      throw new TagstreamError(ErrorCodes.SINK_FAILED, `cannot write ${this.path}: ${(err as Error).message}`, { cause: err, retriable: true })
    }
  }

  async close(): Promise<void> {
    await this.flush()
    await this.fh?.close()
    this.fh = undefined
  }
}

/** Truncates a file after its last newline; returns the new size. */
async function cutTornTail(fh: FileHandle, size: number): Promise<number> {
  if (size === 0) return 0
  const chunk = Buffer.alloc(Math.min(size, 1 << 16))
  let end = size
  while (end > 0) {
    const start = Math.max(0, end - chunk.length)
    const { bytesRead } = await fh.read(chunk, 0, end - start, start)
    const nl = chunk.subarray(0, bytesRead).lastIndexOf(0x0a)
    if (nl >= 0) {
      const keep = start + nl + 1
      if (keep !== size) await fh.truncate(keep)
      return keep
    }
    end = start
  }
  await fh.truncate(0)
  return 0
}

export class NdjsonTagChangeSink extends NdjsonFileWriter<TagChange> implements TagChangeSink {}

export class NdjsonDeadLetterSink extends NdjsonFileWriter<DeadLetter> implements DeadLetterSink {}
