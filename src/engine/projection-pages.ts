/**
 * Projection pages: a partition's projections (`p<4hex>!v!<id>`, projection.ts) copied, in key
 * order, into one file per partition and build (`<store>-pages/p0003-<gen>.pages`), so that a
 * rule preview reads them sequentially instead of one LevelDB entry per user.
 *
 * Why: reading one LevelDB entry costs some 2.4 µs here whatever its size (classic-level turns each
 * into a JS key and Buffer), and a preview over 1,000,000 users spent most of its time there.
 *
 * Pages are a copy, not the truth, and not part of the store's atomic state: the `v!` values stay
 * written with every commit, and a page file is only read together with the ids of the users
 * written since it was built (`fresh`), whose `v!` values are read instead. The engine keeps that
 * set in memory and rebuilds a partition's pages when it grows (engine.ts, `PageSet`). So a file is
 * never trusted after a restart: the engine deletes them when it opens a partition, and the first
 * preview of the partition has new ones built. Outside LevelDB because they are a rebuildable
 * cache: a build is one sequential file write (written into LevelDB, the 457 MB of pages of
 * 1,000,000 users went through its memtable and compactions), and a file read costs no block cache.
 *
 * Each build writes a new generation (`gen`): a preview that started on the previous one reads it
 * to the end, and the engine deletes it once no preview uses it.
 *
 * File: pages one after another, each a u32 LE byte length and the page. Page: one format byte,
 * then per user in key order: u16 LE byte length of the id, the id (UTF-8), u32 LE byte length of
 * the projection, the projection.
 */
import { mkdir, open, readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Store } from '../store/store.js'
import type { EncodedProjection } from './projection.js'

const PAGE_FORMAT = 0x50
/** A page closes once it holds this many bytes (some 300 users' projections). */
export const PAGE_BYTES = 32 * 1024
/** Bytes written to the file at once while building (the arena pages are built in). */
const WRITE_BYTES = 1 << 20
/** Projections read per native call while building. */
const BUILD_CHUNK = 1024
/** Bytes read from the file at once by a scan. */
const READ_BYTES = 1 << 20
/** Where the user id starts in a `p0000!v!<id>` key. */
const ID_AT = 'p0000!v!'.length

/** What a worker thread is asked to build a partition's pages (`store-worker.ts`). */
export interface PagesJob {
  readonly kind: 'pages'
  /** The store's directory: the worker attaches to the engine's open store. */
  readonly location: string
  readonly partition: number
  readonly gen: number
  /** Build from these pages and their fresh users rather than from every `v!` value (see buildProjectionPages). */
  readonly from?: PagesSource
}

/** A partition's current pages and the users written since they were built. */
export interface PagesSource {
  readonly gen: number
  readonly fresh: readonly string[]
}

export interface BuildOptions {
  readonly pageBytes?: number
  /** Asked at every chunk read: true ends the build with an error (the engine closes). */
  readonly stopped?: () => boolean
  readonly from?: PagesSource
}

export interface PageBuild {
  readonly users: number
  readonly pages: number
  readonly bytes: number
}

/** The directory of a store's page files: next to the store's. */
export function pagesDir(storePath: string): string {
  return `${storePath}-pages`
}

function partitionPrefix(partition: number): string {
  return `p${partition.toString(16).padStart(4, '0')}-`
}

function pageFile(storePath: string, partition: number, gen: number): string {
  return join(pagesDir(storePath), `${partitionPrefix(partition)}${gen.toString(16).padStart(12, '0')}.pages`)
}

/** Deletes page files: one generation of a partition, every generation of a partition (`gen` undefined), or all of them. */
export async function clearProjectionPages(storePath: string, partition?: number, gen?: number): Promise<void> {
  if (partition === undefined) return rm(pagesDir(storePath), { recursive: true, force: true })
  if (gen !== undefined) return rm(pageFile(storePath, partition, gen), { force: true })
  const prefix = partitionPrefix(partition)
  const names = await readdir(pagesDir(storePath)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[]
    throw err
  })
  await Promise.all(names.filter((name) => name.startsWith(prefix)).map((name) => rm(join(pagesDir(storePath), name), { force: true })))
}

/**
 * Copies every projection of a partition into the page file of generation `gen`: as the store
 * holds them now (one iterator: one snapshot), or, with `from`, from the partition's current pages
 * and the `v!` values of the users written since (`pagedProjections`, which a preview reads: the
 * same values), which reads a tenth of the users from LevelDB instead of all of them. The file
 * appears complete or not at all (written aside, then renamed).
 */
export async function buildProjectionPages(store: Store, partition: number, gen: number, options: BuildOptions = {}): Promise<PageBuild> {
  const { pageBytes = PAGE_BYTES, stopped = () => false, from } = options
  const file = pageFile(store.path, partition, gen)
  const aside = `${file}.tmp`
  await mkdir(pagesDir(store.path), { recursive: true })
  const out = await open(aside, 'w')
  let users = 0
  let pages = 0
  let bytes = 0
  // Pages are built one after another in one arena, written to the file when it is full.
  let arena = Buffer.allocUnsafe(WRITE_BYTES + 2 * pageBytes)
  let pos = 0
  let pageStart = -1 // where the open page's length prefix is (-1: none open)
  const closePage = (): void => {
    if (pageStart < 0) return
    arena.writeUInt32LE(pos - pageStart - 4, pageStart)
    pages++
    pageStart = -1
  }
  const flush = async (): Promise<void> => {
    closePage()
    for (let at = 0; at < pos; ) at += (await out.write(arena, at, pos - at)).bytesWritten
    bytes += pos
    pos = 0
  }
  try {
    const entries = from === undefined ? store.projectionValues(partition, BUILD_CHUNK) : pagedProjections(store, partition, from.gen, from.fresh, BUILD_CHUNK)
    const idAt = from === undefined ? ID_AT : 0
    for await (const chunk of entries) {
      if (stopped()) throw new Error('projection pages: the build was stopped')
      for (const [key, value] of chunk) {
        const id = key.slice(idAt)
        const need = 6 + 3 * id.length + value.length
        if (pos + need > arena.length) {
          // Keep whole pages in the file's writes: the open page ends here.
          await flush()
          if (5 + need > arena.length) arena = Buffer.allocUnsafe(2 * (5 + need))
        }
        if (pageStart < 0) {
          pageStart = pos
          arena[pos + 4] = PAGE_FORMAT
          pos += 5
        }
        const idBytes = arena.write(id, pos + 2, 'utf8')
        arena.writeUInt16LE(idBytes, pos)
        pos += 2 + idBytes
        arena.writeUInt32LE(value.length, pos)
        value.copy(arena, pos + 4)
        pos += 4 + value.length
        users++
        if (pos - pageStart >= pageBytes) {
          closePage()
          if (pos >= WRITE_BYTES) await flush()
        }
      }
    }
    await flush()
  } catch (err) {
    await out.close()
    await rm(aside, { force: true })
    throw err
  }
  await out.close()
  await rename(aside, file)
  return { users, pages, bytes }
}

/**
 * A partition's projections in key order, in chunks of [user id, projection], read from the page
 * file of generation `gen` except for the users in `fresh` (written since the pages were built),
 * whose `v!` values are read instead, merged in at their place (`fresh` users without one are
 * skipped: not stored). What a preview scans in place of `Store.projectionValues`.
 *
 * A chunk's values are views of a read buffer: valid until the next chunk is asked for.
 */
export async function* pagedProjections(store: Store, partition: number, gen: number, fresh: readonly string[], chunk: number): AsyncGenerator<[string, EncodedProjection][]> {
  const freshSet = new Set(fresh)
  const freshIds = [...freshSet].sort(compareUtf8)
  let freshValues: (Buffer | undefined)[] = []
  let freshAt = 0 // the next fresh id to merge in, an index into freshIds
  let loadedFrom = 0 // freshValues[i] is the value of freshIds[loadedFrom + i]
  const freshValue = async (i: number): Promise<Buffer | undefined> => {
    if (i >= loadedFrom + freshValues.length) {
      loadedFrom = i
      freshValues = await store.projectionsOf(partition, freshIds.slice(i, i + chunk))
    }
    return freshValues[i - loadedFrom]
  }
  let out: [string, EncodedProjection][] = []
  const file = await open(pageFile(store.path, partition, gen), 'r')
  try {
    let buf = Buffer.allocUnsafe(READ_BYTES)
    let have = 0 // bytes of buf read and not yet parsed, from its start
    for (;;) {
      const { bytesRead } = await file.read(buf, have, buf.length - have, null)
      have += bytesRead
      let at = 0
      // Every whole page in the buffer.
      while (have - at >= 4 && have - at >= 4 + buf.readUInt32LE(at)) {
        const end = at + 4 + buf.readUInt32LE(at)
        if (buf[at + 4] !== PAGE_FORMAT) throw new Error(`projection pages of partition ${partition}: unknown page format ${String(buf[at + 4])}`)
        for (let pos = at + 5; pos < end; ) {
          const idEnd = pos + 2 + buf.readUInt16LE(pos)
          const id = utf8(buf, pos + 2, idEnd)
          const valueEnd = idEnd + 4 + buf.readUInt32LE(idEnd)
          pos = valueEnd
          while (freshAt < freshIds.length && compareUtf8(freshIds[freshAt] as string, id) < 0) {
            const value = await freshValue(freshAt)
            if (value !== undefined) out.push([freshIds[freshAt] as string, value])
            freshAt++
          }
          if (freshSet.size === 0 || !freshSet.has(id)) out.push([id, buf.subarray(idEnd + 4, valueEnd)])
          if (out.length >= chunk) {
            yield out
            out = []
          }
        }
        at = end
      }
      // The buffer is read into again: what was taken from it goes to the scan first.
      if (out.length > 0) {
        yield out
        out = []
      }
      if (bytesRead === 0) {
        if (have > at) throw new Error(`projection pages of partition ${partition}: the file ends inside a page`)
        break
      }
      buf.copy(buf, 0, at, have)
      have -= at
      if (have >= 4 && 4 + buf.readUInt32LE(0) > buf.length) {
        const bigger = Buffer.allocUnsafe(2 * (4 + buf.readUInt32LE(0)))
        buf.copy(bigger, 0, 0, have)
        buf = bigger
      }
    }
  } finally {
    await file.close()
  }
  for (; freshAt < freshIds.length; freshAt++) {
    const value = await freshValue(freshAt)
    if (value !== undefined) out.push([freshIds[freshAt] as string, value])
    if (out.length >= chunk) {
      yield out
      out = []
    }
  }
  if (out.length > 0) yield out
}

/**
 * A UTF-8 string of a Buffer's bytes: Buffer's own native `utf8Slice` when it has it, without the
 * argument handling of `toString` around it (which took half of the time of decoding the ids of a
 * page read, some 130 ms per 1,000,000 users here).
 */
const utf8: (buf: Buffer, start: number, end: number) => string =
  typeof (Buffer.prototype as { utf8Slice?: unknown }).utf8Slice === 'function'
    ? (buf, start, end) => (buf as unknown as { utf8Slice(start: number, end: number): string }).utf8Slice(start, end)
    : (buf, start, end) => buf.toString('utf8', start, end)

/**
 * Orders strings as LevelDB orders their UTF-8 bytes (its keys): UTF-16 code unit order, except
 * that a supplementary character (a surrogate pair, 4 UTF-8 bytes) sorts after U+E000..U+FFFF.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x === y) continue
    if (x >= 0xd800 && y >= 0xd800) {
      const xSurrogate = x < 0xe000
      if (xSurrogate !== y < 0xe000) return xSurrogate ? 1 : -1
    }
    return x - y
  }
  return a.length - b.length
}
