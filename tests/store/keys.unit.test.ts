import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { encodeDue, partitionRange, timerKey, userKey } from '../../src/store/keys.js'
import { Store } from '../../src/store/store.js'
import { ErrorCodes } from '../../src/errors.js'

describe('store keys', () => {
  it('orders timer keys by due time whatever the user id', () => {
    const keys = [timerKey(1, 1000, '\u{1F600}emoji', 'x'), timerKey(1, 999, 'zzz', 'x'), timerKey(1, 1000, 'a', 'x'), timerKey(1, 10_000_000_000_000, 'a', 'x')]
    expect([...keys].sort()).toEqual([keys[1], keys[2], keys[0], keys[3]])
    expect(encodeDue(8.64e15)).toHaveLength(14)
  })

  it('keeps every key of a partition inside its range', () => {
    const r = partitionRange(3)
    for (const k of [userKey(3, 'u'), timerKey(3, 5, 'u', 't')]) {
      expect(k >= r.gte && k < r.lt).toBe(true)
    }
    expect(userKey(4, 'u') >= r.lt).toBe(true)
  })
})

describe('store', () => {
  it('scans timers due in (after, upto] including unusual user ids', async () => {
    const store = await Store.open(mkdtempSync(join(tmpdir(), 'ts-store-')))
    const users = ['a', 'z!', '\u{1F600}', 'm"q']
    await store.commit(
      users.flatMap((u, i) => [
        { type: 'put' as const, key: timerKey(0, 100 + i, u, 'op\u0000t'), value: store.encode([u, 'op\u0000t']) },
        { type: 'put' as const, key: timerKey(0, 200, u, 'op\u0000t'), value: store.encode([u, 'op\u0000t']) },
      ]),
      true,
    )
    expect((await store.scanTimers(0, -Infinity, 102, 100)).map((e) => [e.due, e.userId])).toEqual([
      [100, 'a'],
      [101, 'z!'],
      [102, '\u{1F600}'],
    ])
    expect((await store.scanTimers(0, 102, 200, 100)).map((e) => e.due)).toEqual([103, 200, 200, 200, 200])
    expect(await store.scanTimers(1, -Infinity, 1e12, 100)).toEqual([])
    await store.close()
  })

  it('finds the first timer due after an instant in the partition, past every unusual user id due at it', async () => {
    const store = await Store.open(mkdtempSync(join(tmpdir(), 'ts-store-')))
    const put = (p: number, due: number, u: string) => ({ type: 'put' as const, key: timerKey(p, due, u, 'op\u0000t'), value: store.encode([u, 'op\u0000t']) })
    // Partition 1's neighbours: its users and clock, partition 2's timers. None is a timer of 1.
    await store.commit(
      [put(1, 100, 'm"q'), put(1, 100, '\u{1F600}'), put(1, 250, 'a'), put(2, 120, 'b'), put(0, 5, 'c')]
        .concat([{ type: 'put' as const, key: userKey(1, 'zz'), value: store.encode({}) }]),
      true,
    )
    expect(await store.nextTimerDue(1, -Infinity)).toBe(100)
    expect(await store.nextTimerDue(1, 99)).toBe(100)
    expect(await store.nextTimerDue(1, 100)).toBe(250)
    expect(await store.nextTimerDue(1, 250)).toBe(Infinity)
    expect(await store.nextTimerDue(3, -Infinity)).toBe(Infinity)
    expect(await store.nextTimerDue(0, 5)).toBe(Infinity)
    await store.close()
  })

  it('refuses a partition count other than the one the store was made with', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-store-'))
    const store = await Store.open(dir)
    await store.ensureMeta(4)
    await expect(store.ensureMeta(8)).rejects.toMatchObject({ code: ErrorCodes.CONFIG_INVALID })
    await expect(Store.open(dir)).rejects.toMatchObject({ code: ErrorCodes.STORE_UNAVAILABLE, retriable: true, details: { reason: 'locked' } })
    await store.close()
    await expect(Store.open(join(dir, 'nothing-here'), { readOnly: true })).rejects.toMatchObject({
      code: ErrorCodes.STORE_UNAVAILABLE,
      retriable: false,
      details: { reason: 'missing' },
    })
  })
})
