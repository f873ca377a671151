import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { buildProjectionPages, clearProjectionPages, compareUtf8, pagedProjections, pagesDir } from '../../src/engine/projection-pages.js'
import { projectionKey } from '../../src/store/keys.js'
import { Store } from '../../src/store/store.js'

/** A deterministic generator (mulberry32). */
function random(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// ASCII, 2- and 3-byte characters, characters above the surrogates (U+E000..U+FFFF) and supplementary ones (surrogate pairs).
const ALPHABET = ['a', 'b', 'z', '0', '~', 'é', 'ж', '中', '\ud7ff', '\ue000', '\uffee', '\uffff', '😀', '𝄞', '\u{10ffff}']

function userId(next: () => number): string {
  const n = 1 + Math.floor(next() * 6)
  let id = ''
  for (let i = 0; i < n; i++) id += ALPHABET[Math.floor(next() * ALPHABET.length)]
  return id
}

function value(next: () => number): Buffer {
  const out = Buffer.alloc(20 + Math.floor(next() * 600))
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(next() * 256)
  return out
}

/** The partition's `v!` values in key order, as `id=hex`: what a paged read must give. */
async function projections(store: Store, partition: number): Promise<string[]> {
  const out: string[] = []
  for await (const chunk of store.projectionValues(partition, 1000)) for (const [key, v] of chunk) out.push(`${key.slice('p0000!v!'.length)}=${v.toString('hex')}`)
  return out
}

async function paged(store: Store, partition: number, gen: number, fresh: readonly string[], chunk: number): Promise<string[]> {
  const out: string[] = []
  // Values are views of the read buffer, valid until the next chunk: read as they come.
  for await (const c of pagedProjections(store, partition, gen, fresh, chunk)) for (const [id, v] of c) out.push(`${id}=${v.toString('hex')}`)
  return out
}

describe('projection pages', () => {
  let dir: string
  let store: Store
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ts-pages-'))
    store = await Store.open(join(dir, 'store'))
  })
  afterEach(async () => {
    await store.close()
  })

  it('orders ids as LevelDB orders their UTF-8 bytes', () => {
    const next = random(7)
    const ids = Array.from({ length: 3000 }, () => userId(next))
    const byBytes = [...ids].sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')))
    expect([...ids].sort(compareUtf8)).toEqual(byBytes)
    // The case plain string order gets wrong: a supplementary character sorts after U+FFFF in UTF-8.
    expect(compareUtf8('😀', '\uffff')).toBeGreaterThan(0)
    expect('😀' < '\uffff').toBe(true)
  })

  it('reads what the v! values hold: pages for the users not written since the build, v! values for the fresh ones', async () => {
    const next = random(11)
    const partition = 2
    const stored = new Set<string>()
    while (stored.size < 5000) stored.add(userId(next))
    await store.commit([...stored].map((id) => ({ type: 'put' as const, key: projectionKey(partition, id), value: value(next) })), false)
    // Another partition's values stay out of this one's pages.
    await store.commit([{ type: 'put', key: projectionKey(1, 'a'), value: value(next) }], false)

    // Small pages, and a file (some 1.6 MB) larger than one read of a scan (1 MiB): pages span reads.
    const build = await buildProjectionPages(store, partition, 41, { pageBytes: 1000 })
    expect(build.users).toBe(5000)
    expect(build.pages).toBeGreaterThan(1000)
    expect(build.bytes).toBeGreaterThan(1 << 20)
    expect(await paged(store, partition, 41, [], 1024)).toEqual(await projections(store, partition))

    // Written since the build: changed, deleted, new, written with the same value, and fresh ids never stored.
    const ids = [...stored]
    const changed = ids.filter((_, i) => i % 17 === 0)
    const deleted = ids.filter((_, i) => i % 53 === 1)
    const unchanged = ids.filter((_, i) => i % 97 === 2)
    const created: string[] = []
    while (created.length < 300) {
      const id = userId(next)
      if (!stored.has(id) && !created.includes(id)) created.push(id)
    }
    await store.commit(
      [
        ...changed.map((id) => ({ type: 'put' as const, key: projectionKey(partition, id), value: value(next) })),
        ...deleted.map((id) => ({ type: 'del' as const, key: projectionKey(partition, id) })),
        ...created.map((id) => ({ type: 'put' as const, key: projectionKey(partition, id), value: value(next) })),
      ],
      false,
    )
    const fresh = [...changed, ...deleted, ...unchanged, ...created, 'never-stored', ...created.slice(0, 5)]
    const expected = await projections(store, partition)
    expect(expected.length).toBe(5000 - deleted.length + created.length)
    for (const chunk of [1, 7, 1024]) expect(await paged(store, partition, 41, fresh, chunk)).toEqual(expected)
    // Without the fresh ids the pages give the values as of the build: they are a copy, not the truth.
    expect(await paged(store, partition, 41, [], 1024)).not.toEqual(expected)

    // A build from those pages and the fresh users' values holds what a build from every v! value holds.
    const rebuilt = await buildProjectionPages(store, partition, 42, { pageBytes: 1000, from: { gen: 41, fresh } })
    const full = await buildProjectionPages(store, partition, 43, { pageBytes: 1000 })
    expect(rebuilt).toEqual(full)
    expect(await paged(store, partition, 42, [], 1024)).toEqual(expected)
    expect(readFileSync(join(pagesDir(store.path), 'p0002-00000000002a.pages')).equals(readFileSync(join(pagesDir(store.path), 'p0002-00000000002b.pages')))).toBe(true)
  })

  it('writes a page file whole or not at all, and clears one generation or all of a partition', async () => {
    await store.commit(Array.from({ length: 3000 }, (_, i) => ({ type: 'put' as const, key: projectionKey(0, `u${i}`), value: Buffer.alloc(100, i % 256) })), false)
    let chunks = 0
    await expect(buildProjectionPages(store, 0, 5, { pageBytes: 1000, stopped: () => ++chunks > 2 })).rejects.toThrow('stopped')
    expect(readdirSync(pagesDir(store.path))).toEqual([])
    await buildProjectionPages(store, 0, 6)
    await buildProjectionPages(store, 0, 7)
    await buildProjectionPages(store, 1, 7)
    writeFileSync(join(pagesDir(store.path), 'p0000-000000000001.pages.tmp'), 'left by a crash')
    expect(readdirSync(pagesDir(store.path)).length).toBe(4)
    await clearProjectionPages(store.path, 0, 6)
    expect(readdirSync(pagesDir(store.path)).sort()).toEqual(['p0000-000000000001.pages.tmp', 'p0000-000000000007.pages', 'p0001-000000000007.pages'])
    await clearProjectionPages(store.path, 0)
    expect(readdirSync(pagesDir(store.path))).toEqual(['p0001-000000000007.pages'])
    await clearProjectionPages(store.path)
    expect(existsSync(pagesDir(store.path))).toBe(false)
    // A store that never had pages: nothing to clear.
    await clearProjectionPages(join(dir, 'elsewhere'), 0)
    expect(existsSync(pagesDir(join(dir, 'elsewhere')))).toBe(false)
  })
})
