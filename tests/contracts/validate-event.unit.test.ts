import { describe, expect, it } from 'vitest'
import { Value } from '@sinclair/typebox/value'
import { pack } from 'msgpackr'
import {
  DEFAULT_FIELD_NAMES,
  InputEventWireSchema,
  RejectReasons,
  createEventDecoder,
  parseIsoTimestamp,
  type DecodeResult,
} from '../../src/contracts/index.js'

const NOW = Date.UTC(2025, 0, 15, 12, 0, 0)
const base = {
  fields: DEFAULT_FIELD_NAMES,
  format: 'json' as const,
  maxRecordBytes: 1024,
  maxIdLength: 32,
  maxFutureMs: 86_400_000,
  timestampUnit: 'ms' as const,
}
const decodeJson = createEventDecoder(base)
const json = (v: unknown) => decodeJson(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)), NOW)
const valid = { eventId: 'e1', userId: 'u1', type: 'purchase', ts: NOW - 1000, properties: { amount: 12.5 } }

function reason(r: DecodeResult): string | undefined {
  return r.ok ? undefined : `${r.rejection.code}${r.rejection.field ? `:${r.rejection.field}` : ''}`
}

describe('input event decoding and validation', () => {
  it('accepts a valid event and normalizes it', () => {
    const r = json(valid)
    expect(r).toEqual({ ok: true, event: { ...valid } })
  })

  it('accepts ISO-8601 times, with and without offsets, and date-only as UTC midnight', () => {
    expect(json({ ...valid, ts: '2025-01-15T10:00:00Z' })).toMatchObject({ ok: true, event: { ts: Date.UTC(2025, 0, 15, 10) } })
    expect(json({ ...valid, ts: '2025-01-15T11:00:00+01:00' })).toMatchObject({ ok: true, event: { ts: Date.UTC(2025, 0, 15, 10) } })
    expect(json({ ...valid, ts: '2025-01-15T10:00:00.250' })).toMatchObject({ ok: true, event: { ts: Date.UTC(2025, 0, 15, 10, 0, 0, 250) } })
    expect(json({ ...valid, ts: '2010-12-01' })).toMatchObject({ ok: true, event: { ts: Date.UTC(2010, 11, 1) } })
  })

  it('defaults missing properties to an empty object', () => {
    const { properties: _, ...noProps } = valid
    expect(json(noProps)).toMatchObject({ ok: true, event: { properties: {} } })
  })

  it.each([
    ['{"eventId": "e1", "userId"', 'invalid_json'],
    ['\u0001\u0002\u00ff garbage', 'invalid_json'],
    ['[1,2,3]', 'not_an_object'],
    ['"just a string"', 'not_an_object'],
    ['null', 'not_an_object'],
    [{ ...valid, userId: undefined }, 'missing_field:userId'],
    [{ ...valid, userId: '' }, 'missing_field:userId'],
    [{ ...valid, userId: 42 }, 'wrong_type:userId'],
    [{ ...valid, eventId: undefined }, 'missing_field:eventId'],
    [{ ...valid, eventId: { id: 1 } }, 'wrong_type:eventId'],
    [{ ...valid, type: undefined }, 'missing_field:type'],
    [{ ...valid, type: true }, 'wrong_type:type'],
    [{ ...valid, userId: 'x'.repeat(33) }, 'field_too_long:userId'],
    [{ ...valid, ts: undefined }, 'missing_field:ts'],
    [{ ...valid, ts: 'yesterday' }, 'invalid_timestamp:ts'],
    [{ ...valid, ts: '2025-02-30' }, 'invalid_timestamp:ts'],
    [{ ...valid, ts: '2025-13-01T00:00:00Z' }, 'invalid_timestamp:ts'],
    [{ ...valid, ts: -5 }, 'invalid_timestamp:ts'],
    [{ ...valid, ts: true }, 'invalid_timestamp:ts'],
    [{ ...valid, ts: '2400-01-01T00:00:00Z' }, 'timestamp_in_future:ts'],
    [{ ...valid, ts: NOW + 86_400_001 }, 'timestamp_in_future:ts'],
    [{ ...valid, properties: [1, 2] }, 'wrong_type:properties'],
    [{ ...valid, properties: 'city=Berlin' }, 'wrong_type:properties'],
  ])('rejects %j as %s', (input, expected) => {
    expect(reason(json(input))).toBe(expected)
  })

  it('rejects an oversized record before decoding it', () => {
    const big = JSON.stringify({ ...valid, properties: { blob: 'x'.repeat(2000) } })
    expect(reason(json(big))).toBe(RejectReasons.RECORD_TOO_LARGE)
  })

  it('keeps the ids of a rejected record when it had them', () => {
    const r = json({ ...valid, ts: 'soon' })
    expect(r).toMatchObject({ ok: false, eventId: 'e1', userId: 'u1' })
  })

  it('reads configured field names and epoch seconds', () => {
    const decode = createEventDecoder({
      ...base,
      fields: { eventId: 'id', userId: 'uid', type: 'event', ts: 'time', properties: 'props' },
      timestampUnit: 's',
    })
    const r = decode(Buffer.from(JSON.stringify({ id: 'a', uid: 'b', event: 'view', time: 1736942400, props: { x: 1 } })), NOW)
    expect(r).toEqual({ ok: true, event: { eventId: 'a', userId: 'b', type: 'view', ts: 1736942400000, properties: { x: 1 } } })
  })

  it('decodes msgpack, and rejects broken msgpack with its own reason', () => {
    const decode = createEventDecoder({ ...base, format: 'msgpack' })
    expect(decode(pack(valid), NOW)).toEqual({ ok: true, event: valid })
    expect(reason(decode(Buffer.from([0xc1, 0xff, 0x00]), NOW))).toBe(RejectReasons.INVALID_MSGPACK)
    expect(reason(decode(pack([1, 2]), NOW))).toBe(RejectReasons.NOT_AN_OBJECT)
  })

  it('agrees with the published JSON schema on what a valid event looks like', () => {
    expect(Value.Check(InputEventWireSchema, valid)).toBe(true)
    expect(Value.Check(InputEventWireSchema, { ...valid, userId: 42 })).toBe(false)
    expect(Value.Check(InputEventWireSchema, { ...valid, properties: [1] })).toBe(false)
  })

  it('parses strict ISO-8601 only', () => {
    expect(parseIsoTimestamp('2024-03-31T02:30:00+02:00')).toBe(Date.UTC(2024, 2, 31, 0, 30))
    expect(parseIsoTimestamp('March 7, 2024')).toBeNaN()
    expect(parseIsoTimestamp('2024-3-7')).toBeNaN()
  })
})
