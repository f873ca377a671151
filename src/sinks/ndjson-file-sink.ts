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
  private chunk: Buffer | undefined

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
    const lines = this.pending
    this.pending = []
    // Lines go out through one reused chunk: a commit's changes (hundreds of thousands in a sweep)
    // are never joined into one string and one buffer, which tripled the sink's peak memory.
    const chunk = (this.chunk ??= Buffer.allocUnsafe(FLUSH_CHUNK_BYTES))
    let at = this.position
    try {
      let used = 0
      for (const line of lines) {
        // A UTF-16 code unit takes at most 3 UTF-8 bytes.
        const bound = line.length * 3 + 1
        if (used + bound > chunk.length && used > 0) {
          at = await writeFully(fh, chunk.subarray(0, used), at)
          used = 0
        }
        if (bound > chunk.length) {
          at = await writeFully(fh, Buffer.from(`${line}\n`, 'utf8'), at)
          continue
        }
        used += chunk.write(line, used, 'utf8')
        chunk[used++] = 0x0a
      }
      if (used > 0) at = await writeFully(fh, chunk.subarray(0, used), at)
      // Only a complete flush moves the position: a failed one is rewritten from the same place.
      this.position = at
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

const FLUSH_CHUNK_BYTES = 1 << 20

/** Writes all of `data` at `position`; returns the position after it. */
async function writeFully(fh: FileHandle, data: Buffer, position: number): Promise<number> {
  let off = 0
  while (off < data.length) {
    const { bytesWritten } = await fh.write(data, off, data.length - off, position + off)
    off += bytesWritten
  }
  return position + data.length
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
