import { describe, expect, it } from 'vitest'
import type { TagChange } from '../../src/contracts/tag-change.js'
import { SseSink, type SseEvent } from '../../src/sinks/sse-sink.js'

/** A change that counts its serializations (JSON.stringify calls toJSON). */
function countedChange(tag: string, counter: { calls: number }): TagChange {
  const change = { id: `u1:${tag}:1`, userId: 'u1', tag, op: 'enter', from: null, to: true, seq: 1 } as unknown as TagChange
  Object.defineProperty(change, 'toJSON', {
    enumerable: false,
    value() {
      counter.calls++
      const { ...plain } = this as Record<string, unknown>
      return plain
    },
  })
  return change
}

describe('SseSink', () => {
  it('serializes a change only when a subscriber needs it, and once for all of them', async () => {
    const sink = new SseSink({ replayWindow: 10 })
    const counter = { calls: 0 }
    sink.write(countedChange('vip', counter))
    await sink.flush()
    // Kept in the window for reconnecting subscribers, not serialized: nobody listens.
    expect(counter.calls).toBe(0)

    const received: string[] = []
    const subscriber = (tags?: string[]) => ({ tags: tags === undefined ? undefined : new Set(tags), send: (e: SseEvent) => received.push(`${e.position} ${e.json}`) })
    sink.subscribe(subscriber(), 0)
    sink.subscribe(subscriber(['vip']), 0)
    const json = JSON.stringify({ id: 'u1:vip:1', userId: 'u1', tag: 'vip', op: 'enter', from: null, to: true, seq: 1 })
    expect(received).toEqual([`1 ${json}`, `1 ${json}`])
    expect(counter.calls).toBe(1)

    sink.write(countedChange('churn_risk', counter))
    await sink.flush()
    // Sent to the subscriber of every tag only.
    expect(received.slice(2)).toEqual([`2 ${JSON.stringify({ id: 'u1:churn_risk:1', userId: 'u1', tag: 'churn_risk', op: 'enter', from: null, to: true, seq: 1 })}`])
    expect(counter.calls).toBe(2)
  })
})
