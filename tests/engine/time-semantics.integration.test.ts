import { describe, expect, it } from 'vitest'
import counter from '../../operators/counter.js'
import lifecycle from '../../operators/lifecycle.js'
import { DAY_MS } from '../../src/operator-api.js'
import { createOperator } from '../operators/harness.js'
import { createFixture } from '../support/engine-fixture.js'

const BERLIN = { timeZone: 'Europe/Berlin' }
const purchase = (id: string, user: string, iso: string) => ({ eventId: id, userId: user, type: 'purchase', ts: Date.parse(iso), properties: { amount: 10 } })
const view = (id: string, user: string, iso: string) => ({ eventId: id, userId: user, type: 'view', ts: Date.parse(iso), properties: {} })

describe('time semantics through the engine', () => {
  it('fires an inactivity transition exactly when the watermark crosses the local-day boundary, across a DST change', async () => {
    const op = createOperator(lifecycle, 'lifecycle', {}, BERLIN)
    // Purchase on 10 March (CET); 30 local days later, 9 April 00:00 CEST, is after the change to summer time.
    const boundary = '2024-04-08T22:00:00.000Z'
    const f = await createFixture([op], { engine: { partitions: 1 }, ...BERLIN })
    f.source.push(purchase('p1', 'alice', '2024-02-01T12:00:00Z'), purchase('p2', 'alice', '2024-03-10T12:00:00Z'))
    // Another user's event moves the clock to 1 ms before the boundary: nothing happens yet.
    f.source.push(view('v1', 'bob', '2024-04-08T21:59:59.999Z'))
    await f.drain()
    const stages = (changes: typeof f.changes.changes) => changes.filter((c) => c.userId === 'alice' && c.tag === 'lifecycle_stage').map((c) => [c.to, c.at, c.cause.kind])
    // (30 days after the first purchase the user was both no longer new and 30 days without a
    // purchase: new -> silent in one step; the March purchase reactivated them.)
    expect(stages(f.changes.changes)).toEqual([
      ['new', '2024-02-01T12:00:00.000Z', 'event'],
      ['silent', '2024-03-01T23:00:00.000Z', 'timer'], // 2 March 00:00 CET: 30 local days after 1 February
      ['reactivated', '2024-03-10T12:00:00.000Z', 'event'],
    ])
    const g = await f.reopen()
    g.source.push(view('v2', 'bob', boundary))
    await g.drain()
    expect(stages(g.changes.changes)).toEqual([['silent', boundary, 'timer']])
    await g.close()
  })

  it('re-emits a tag a late event changes, with the late event as its cause, and dead-letters one past the horizon', async () => {
    const op = createOperator(counter, 'purchases', { eventTypes: ['purchase'], windowDays: 30, tag: 'purchase_frequency', bands: [{ name: 'occasional', min: 1 }, { name: 'regular', min: 3 }] })
    const f = await createFixture([op], { engine: { partitions: 1 }, time: { lateHorizonMs: 10 * DAY_MS } })
    f.source.push(
      purchase('a', 'carol', '2024-05-01T10:00:00Z'),
      purchase('b', 'carol', '2024-05-20T10:00:00Z'),
      view('clock', 'dave', '2024-05-25T00:00:00Z'),
      purchase('late', 'carol', '2024-05-18T09:00:00Z'), // older than the watermark, within the horizon
      purchase('too-late', 'carol', '2024-05-10T09:00:00Z'), // more than 10 days behind the watermark
    )
    await f.drain()
    const last = f.changes.changes.filter((c) => c.userId === 'carol').at(-1)
    expect([last?.from, last?.to, last?.cause, last?.at]).toEqual(['occasional', 'regular', { kind: 'event', eventId: 'late' }, '2024-05-18T09:00:00.000Z'])
    expect(f.deadLetters.deadLetters.map((d) => [d.reason.code, d.eventId])).toEqual([['too_late', 'too-late']])
    await f.close()
  })

  it('ages users on a quiet live stream through the wall clock', async () => {
    const op = createOperator(lifecycle, 'lifecycle', {}, { timeZone: 'UTC' })
    let wall = Date.parse('2030-03-01T12:00:00Z')
    const f = await createFixture([op], { engine: { partitions: 1 } }, { now: () => wall, idleAdvance: true })
    f.source.push(purchase('p', 'erin', '2030-03-01T11:59:59Z'))
    await f.engine.processRecords(f.source, (await f.source.poll(10)) ?? [])
    wall = Date.parse('2030-05-01T00:00:00Z')
    await f.engine.advanceIdlePartitions(wall)
    await f.engine.commit()
    // On 31 March the user is no longer new and 30 days without a purchase: one step to silent.
    expect(f.changes.changes.map((c) => [c.to, c.at, c.cause.kind])).toEqual([
      ['new', '2030-03-01T11:59:59.000Z', 'event'],
      ['silent', '2030-03-31T00:00:00.000Z', 'timer'],
    ])
    await f.close()
  })
})
