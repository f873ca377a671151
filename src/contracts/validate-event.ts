import { Unpackr } from 'msgpackr'
import {
  RejectReasons,
  type FieldNames,
  type InputEvent,
  type Rejection,
} from './input-event.js'

export type PayloadFormat = 'json' | 'msgpack'

export interface EventValidationOptions {
  readonly fields: FieldNames
  readonly format: PayloadFormat
  /** Records larger than this are rejected before decoding. */
  readonly maxRecordBytes: number
  /** Longest accepted `eventId` / `userId` / `type`, in UTF-16 code units. */
  readonly maxIdLength: number
  /** How far ahead of the wall clock an event time may be. */
  readonly maxFutureMs: number
  /** Unit of numeric timestamps on the wire. */
  readonly timestampUnit: 'ms' | 's'
}

export type DecodeResult =
  | { readonly ok: true; readonly event: InputEvent }
  | { readonly ok: false; readonly rejection: Rejection; readonly eventId?: string; readonly userId?: string }

/** Strict ISO-8601: a calendar date, optionally a time, optionally an offset (none means UTC). */
const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?)?$/

/** Parses an ISO-8601 date or date-time to epoch ms; NaN when it is not one. A missing offset means UTC. */
export function parseIsoTimestamp(text: string): number {
  const m = ISO_8601.exec(text)
  if (m === null) return NaN
  const [, y, mo, d, h = '00', mi = '00', s = '00', frac, offset] = m
  const month = Number(mo)
  const day = Number(d)
  if (month < 1 || month > 12 || day < 1 || day > 31 || Number(h) > 23 || Number(mi) > 59 || Number(s) > 60) {
    return NaN
  }
  const ms = frac === undefined ? 0 : Math.floor(Number(`0.${frac}`) * 1000)
  let t = Date.UTC(Number(y), month - 1, day, Number(h), Number(mi), Number(s), ms)
  // Date.UTC rolls 2023-02-30 over to March: a date that does not exist is not a timestamp.
  if (new Date(t).getUTCDate() !== day) return NaN
  if (offset !== undefined && offset !== 'Z') {
    const sign = offset[0] === '-' ? -1 : 1
    const digits = offset.slice(1).replace(':', '')
    t -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4))) * 60_000
  }
  return t
}

const MAX_EPOCH_MS = 8.64e15

/**
 * Builds the decoder and validator of one source, once, at configuration time: the returned
 * function does no lookups of options per record. It never throws; every failure is a Rejection.
 */
export function createEventDecoder(options: EventValidationOptions): (raw: Uint8Array, wallNow: number) => DecodeResult {
  const { fields, maxRecordBytes, maxIdLength, maxFutureMs } = options
  const tsScale = options.timestampUnit === 's' ? 1000 : 1
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })
  const utf8 = new TextDecoder('utf-8', { fatal: true })

  const decodePayload =
    options.format === 'msgpack'
      ? (raw: Uint8Array): unknown => unpackr.unpack(raw)
      : (raw: Uint8Array): unknown => JSON.parse(decodeUtf8(raw))
  // Buffer's decoder is several times faster than a fatal TextDecoder; it replaces invalid bytes
  // with U+FFFD, so only text containing U+FFFD is checked again strictly.
  function decodeUtf8(raw: Uint8Array): string {
    const text = Buffer.isBuffer(raw) ? raw.toString('utf8') : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8')
    if (text.includes('\ufffd')) utf8.decode(raw)
    return text
  }
  const decodeFailure = options.format === 'msgpack' ? RejectReasons.INVALID_MSGPACK : RejectReasons.INVALID_JSON

  function reject(code: Rejection['code'], message: string, field?: keyof FieldNames, rec?: Record<string, unknown>): DecodeResult {
    const rejection: Rejection = field === undefined ? { code, message } : { code, message, field }
    const eventId = rec?.[fields.eventId]
    const userId = rec?.[fields.userId]
    return {
      ok: false,
      rejection,
      ...(typeof eventId === 'string' ? { eventId } : {}),
      ...(typeof userId === 'string' ? { userId } : {}),
    }
  }

  function idField(rec: Record<string, unknown>, field: 'eventId' | 'userId' | 'type'): string | DecodeResult {
    const v = rec[fields[field]]
    if (v === undefined || v === null || v === '') {
      return reject(RejectReasons.MISSING_FIELD, `required field "${fields[field]}" is missing or empty`, field, rec)
    }
    if (typeof v !== 'string') {
      return reject(RejectReasons.WRONG_TYPE, `field "${fields[field]}" must be a string, got ${typeName(v)}`, field, rec)
    }
    if (v.length > maxIdLength) {
      return reject(RejectReasons.FIELD_TOO_LONG, `field "${fields[field]}" is longer than ${maxIdLength}`, field, rec)
    }
    return v
  }

  return function decodeEvent(raw: Uint8Array, wallNow: number): DecodeResult {
    if (raw.byteLength > maxRecordBytes) {
      return reject(RejectReasons.RECORD_TOO_LARGE, `record of ${raw.byteLength} bytes exceeds ${maxRecordBytes}`)
    }
    let decoded: unknown
    try {
      decoded = decodePayload(raw)
    } catch (err) {
      return reject(decodeFailure, `cannot decode ${options.format}: ${(err as Error).message}`)
    }
    if (typeof decoded !== 'object' || decoded === null || Array.isArray(decoded) || decoded instanceof Uint8Array) {
      return reject(RejectReasons.NOT_AN_OBJECT, `record must be an object, got ${typeName(decoded)}`)
    }
    const rec = decoded as Record<string, unknown>
    const eventId = idField(rec, 'eventId')
    if (typeof eventId !== 'string') return eventId
    const userId = idField(rec, 'userId')
    if (typeof userId !== 'string') return userId
    const type = idField(rec, 'type')
    if (typeof type !== 'string') return type

    const rawTs = rec[fields.ts]
    let ts: number
    if (typeof rawTs === 'number') {
      ts = Math.floor(rawTs * tsScale)
    } else if (typeof rawTs === 'string' && rawTs !== '') {
      ts = parseIsoTimestamp(rawTs)
    } else if (rawTs === undefined || rawTs === null || rawTs === '') {
      return reject(RejectReasons.MISSING_FIELD, `required field "${fields.ts}" is missing`, 'ts', rec)
    } else {
      return reject(RejectReasons.INVALID_TIMESTAMP, `field "${fields.ts}" must be epoch ${options.timestampUnit} or ISO-8601, got ${typeName(rawTs)}`, 'ts', rec)
    }
    if (!Number.isFinite(ts) || ts < 0 || ts > MAX_EPOCH_MS) {
      return reject(RejectReasons.INVALID_TIMESTAMP, `field "${fields.ts}" is not a valid time: ${JSON.stringify(rawTs)}`, 'ts', rec)
    }
    if (ts > wallNow + maxFutureMs) {
      return reject(
        RejectReasons.TIMESTAMP_IN_FUTURE,
        `event time ${new Date(ts).toISOString()} is more than ${maxFutureMs} ms ahead of the wall clock`,
        'ts',
        rec,
      )
    }

    const rawProps = rec[fields.properties]
    let properties: Record<string, unknown>
    if (rawProps === undefined || rawProps === null) {
      properties = EMPTY
    } else if (typeof rawProps === 'object' && !Array.isArray(rawProps) && !(rawProps instanceof Uint8Array)) {
      properties = rawProps as Record<string, unknown>
    } else {
      return reject(RejectReasons.WRONG_TYPE, `field "${fields.properties}" must be an object, got ${typeName(rawProps)}`, 'properties', rec)
    }
    return { ok: true, event: { eventId, userId, type, ts, properties } }
  }
}

const EMPTY: Record<string, unknown> = Object.freeze({}) as Record<string, unknown>

function typeName(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'array'
  if (v instanceof Uint8Array) return 'binary'
  return typeof v
}
