import { Packr } from 'msgpackr'
import type { TagValue } from '../contracts/tag-change.js'
import type { Operator, OperatorContext, PopulationView } from '../operator-api.js'
import type { RuleView, RuleViewPlan } from '../tags/rules.js'
import { isoString } from '../time/iso.js'
import { TIMER_KEY_SEP, type StoredTag, type UserRecord } from './user-record.js'

/**
 * A user's projection: the few values re-scoring sweeps and rule previews need, committed with the
 * user record in the same atomic batch (`p<4hex>!v!<userId>`), so that they scan small values
 * instead of reading and decoding every full record.
 *
 * It holds the user's tag values, the population values of the re-scoring operators, and the
 * operators' rule-visible view fields that a clock change does not move before the user's next
 * timer: fields that do not depend on the clock at all, and an operator's `viewTimerFields`. The
 * view is computed at the partition clock `clock` of the commit; it holds for any instant t with
 * clock <= t < validUntil (the user's first pending timer), since the state does not change before
 * that without the record (and this projection) being written again. Fields that move with the day
 * (`recencyDays`) or the population (`segment`) are left out: rules reading them use full records.
 *
 * A flat binary value, so that a preview or a sweep reads the few fields a rule needs in place,
 * without decoding the rest or building objects per user:
 *
 *   0   format byte: FORMAT_U16 or FORMAT_U32 (the width of the section offsets)
 *   1   clock       float64 LE (NaN: none, the projection never holds)
 *   9   validUntil  float64 LE (NaN: no pending timer)
 *   17  rs          float64 LE (NaN: never swept)
 *   25  section offsets (from the value's start), one per section and one for the end
 *   ..  sections: tags, tt, one per re-scoring operator of the layout, one per projected operator
 *
 *   tags    per online tag: id, value, version (cells), as `rec.tags` without since/quiet
 *   tt      per testing lane value: id, value (cells), as `rec.tt`
 *   scored  empty: no state; else one cell per dimension (null: not scored)
 *   views   empty: no state; else one cell per projected field (null: absent)
 *   (a present section of an operator with no dimensions or fields is one NIL byte)
 *
 * A cell is a type byte and its payload: NIL, FALSE, TRUE, F64, I8/I16/I32 (integers), STR8/STR32
 * (UTF-8 with its byte length) or PACKED (msgpack, for lists and anything else). Numbers are kept
 * exactly (integers only in the integer cells when they fit; -0 and fractions as float64).
 *
 * An operator's view section is kept as bytes per state object: a commit copies the sections of
 * the states an event did not touch instead of computing and encoding them again.
 */
export type EncodedProjection = Buffer

/** The projection as plain values (tests, diagnostics): what the binary value holds. */
export type DecodedProjection = [
  clock: number | null,
  validUntil: number | null,
  rs: number | null,
  tags: Record<string, [TagValue, number]>,
  tt: Record<string, TagValue> | null,
  scored: ((unknown | null)[] | null)[],
  views: (unknown[] | null)[],
]

/** Format bytes; also a layout version: a value of another format is never read as this one. */
const FORMAT_U16 = 0x21
const FORMAT_U32 = 0x22
const HEADER = 25

// Cell type bytes. 0x00-0x7f: the integer itself; 0x80-0xbf: a string of up to 63 UTF-8 bytes.
const FIXSTR = 0x80
const NIL = 0xc0
const FALSE = 0xc1
const TRUE = 0xc2
const F64 = 0xc3
const I8 = 0xc4
const I16 = 0xc5
const I32 = 0xc6
const STR8 = 0xc7
const STR32 = 0xc8
const PACKED = 0xc9
/** A string in the canonical form of `Date.prototype.toISOString` (years 1000-9999), kept as its float64 epoch ms. */
const ISO = 0xca

const TAGS = 0
const TT = 1
const FIRST_SCORED = 2

const packr = new Packr({ useRecords: false, mapsAsObjects: true })

/** A growable scratch buffer the encoder writes into (encoding is synchronous: one per layout). */
class ByteWriter {
  buf: Buffer = Buffer.allocUnsafe(4096)
  pos = 0

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n))
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }

  byte(v: number): void {
    this.ensure(1)
    this.buf[this.pos++] = v
  }

  bytes(src: Buffer, start: number, end: number): void {
    const n = end - start
    this.ensure(n)
    // A few dozen bytes (one operator's view): a loop beats a native copy's call.
    if (n <= 64) {
      const buf = this.buf
      for (let i = 0, at = this.pos; i < n; i++) buf[at + i] = src[start + i] as number
    } else {
      src.copy(this.buf, this.pos, start, end)
    }
    this.pos += n
  }

  /**
   * The bytes written since `from`, kept beyond the next value, as a one-byte (latin1) string: a
   * few dozen bytes on the V8 heap. A small Buffer would be a slice of Node's shared 8 KiB pool,
   * and memos that live as long as their cached states keep whole pools alive (+50 MiB of RSS in
   * the memory bench).
   */
  snapshot(from: number): string {
    return this.buf.toString('latin1', from, this.pos)
  }

  /** Writes bytes kept by `snapshot`. */
  restore(bytes: string): void {
    this.ensure(bytes.length)
    this.pos += this.buf.write(bytes, this.pos, 'latin1')
  }

  cell(v: unknown): void {
    if (v === null || v === undefined) return this.byte(NIL)
    if (v === false) return this.byte(FALSE)
    if (v === true) return this.byte(TRUE)
    if (typeof v === 'number') return this.number(v)
    if (typeof v === 'string') return this.string(v)
    const packed = packr.pack(v)
    this.ensure(5 + packed.length)
    this.buf[this.pos] = PACKED
    this.buf.writeUInt32LE(packed.length, this.pos + 1)
    this.buf.set(packed, this.pos + 5)
    this.pos += 5 + packed.length
  }

  private number(v: number): void {
    this.ensure(9)
    const buf = this.buf
    if (Number.isInteger(v) && !(v === 0 && 1 / v < 0)) {
      if (v >= 0 && v < 0x80) {
        buf[this.pos++] = v
        return
      }
      if (v >= -0x80 && v < 0x80) {
        buf[this.pos] = I8
        buf.writeInt8(v, this.pos + 1)
        this.pos += 2
        return
      }
      if (v >= -0x8000 && v < 0x8000) {
        buf[this.pos] = I16
        buf.writeInt16LE(v, this.pos + 1)
        this.pos += 3
        return
      }
      if (v >= -0x80000000 && v < 0x80000000) {
        buf[this.pos] = I32
        buf.writeInt32LE(v, this.pos + 1)
        this.pos += 5
        return
      }
    }
    buf[this.pos] = F64
    buf.writeDoubleLE(v, this.pos + 1)
    this.pos += 9
  }

  private string(v: string): void {
    const ms = isoMs(v)
    if (!Number.isNaN(ms)) {
      this.ensure(9)
      this.buf[this.pos] = ISO
      this.buf.writeDoubleLE(ms, this.pos + 1)
      this.pos += 9
      return
    }
    // At most 3 bytes per UTF-16 unit: up to 21 units fit a FIXSTR, up to 85 a one-byte length.
    if (v.length <= 21) {
      this.ensure(1 + v.length * 3)
      const buf = this.buf
      // ASCII (tag ids, segment names): written by a loop, the native UTF-8 encoder's call costs more.
      let n = 0
      for (; n < v.length; n++) {
        const c = v.charCodeAt(n)
        if (c >= 0x80) break
        buf[this.pos + 1 + n] = c
      }
      if (n < v.length) n = buf.write(v, this.pos + 1, 'utf8')
      buf[this.pos] = FIXSTR | n
      this.pos += 1 + n
      return
    }
    const n = v.length <= 85 ? -1 : Buffer.byteLength(v, 'utf8')
    if (n < 0x100) {
      this.ensure(2 + v.length * 3)
      this.buf[this.pos] = STR8
      this.buf[this.pos + 1] = this.buf.write(v, this.pos + 2, 'utf8')
      this.pos += 2 + (this.buf[this.pos + 1] as number)
      return
    }
    this.ensure(5 + n)
    this.buf[this.pos] = STR32
    this.buf.writeUInt32LE(n, this.pos + 1)
    this.buf.write(v, this.pos + 5, 'utf8')
    this.pos += 5 + n
  }

  tags(tags: Readonly<Record<string, StoredTag>>): void {
    for (const id in tags) {
      const t = tags[id] as StoredTag
      this.cell(id)
      this.cell(t[0])
      this.cell(t[2])
    }
  }

  testing(tt: Readonly<Record<string, TagValue>> | undefined): void {
    if (tt === undefined) return
    for (const id in tt) {
      this.cell(id)
      this.cell(tt[id])
    }
  }
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

/**
 * The epoch ms of a string in the exact form `toISOString` gives (`YYYY-MM-DDTHH:mm:ss.sssZ`, year
 * 1000-9999, a real calendar date), so that `new Date(ms).toISOString()` gives the string back;
 * NaN for any other string.
 */
export function isoMs(s: string): number {
  if (
    s.length !== 24 ||
    s.charCodeAt(4) !== 45 ||
    s.charCodeAt(7) !== 45 ||
    s.charCodeAt(10) !== 84 ||
    s.charCodeAt(13) !== 58 ||
    s.charCodeAt(16) !== 58 ||
    s.charCodeAt(19) !== 46 ||
    s.charCodeAt(23) !== 90
  ) {
    return NaN
  }
  const year = digits(s, 0, 4)
  const month = digits(s, 5, 2)
  const day = digits(s, 8, 2)
  const hour = digits(s, 11, 2)
  const minute = digits(s, 14, 2)
  const second = digits(s, 17, 2)
  const milli = digits(s, 20, 3)
  if (year < 1000 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59 || milli < 0) return NaN
  const leap = month === 2 && year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)
  if (day > (DAYS_IN_MONTH[month - 1] as number) + (leap ? 1 : 0)) return NaN
  return Date.UTC(year, month - 1, day, hour, minute, second, milli)
}

/** The decimal number of `n` ASCII digits at `at` (-1 when one is not a digit). */
function digits(s: string, at: number, n: number): number {
  let v = 0
  for (let i = at; i < at + n; i++) {
    const d = s.charCodeAt(i) - 48
    if (d < 0 || d > 9) return -1
    v = v * 10 + d
  }
  return v
}

/** Where the cell after the one at `pos` starts. */
function skipCell(buf: Buffer, pos: number): number {
  const t = buf[pos] as number
  if (t < 0x80) return pos + 1
  if (t < NIL) return pos + 1 + (t & 0x3f)
  switch (t) {
    case F64:
    case ISO:
      return pos + 9
    case I8:
      return pos + 2
    case I16:
      return pos + 3
    case I32:
      return pos + 5
    case STR8:
      return pos + 2 + (buf[pos + 1] as number)
    case STR32:
    case PACKED:
      return pos + 5 + buf.readUInt32LE(pos + 1)
    default:
      return pos + 1
  }
}

/** The value of the cell at `pos` (null: NIL). */
function readCell(buf: Buffer, pos: number): unknown {
  const t = buf[pos] as number
  if (t < 0x80) return t
  if (t < NIL) return buf.toString('utf8', pos + 1, pos + 1 + (t & 0x3f))
  switch (t) {
    case NIL:
      return null
    case FALSE:
      return false
    case TRUE:
      return true
    case F64:
      return buf.readDoubleLE(pos + 1)
    case ISO:
      return isoString(buf.readDoubleLE(pos + 1))
    case I8:
      return buf.readInt8(pos + 1)
    case I16:
      return buf.readInt16LE(pos + 1)
    case I32:
      return buf.readInt32LE(pos + 1)
    case STR8:
      return buf.toString('utf8', pos + 2, pos + 2 + (buf[pos + 1] as number))
    case STR32:
      return buf.toString('utf8', pos + 5, pos + 5 + buf.readUInt32LE(pos + 1))
    case PACKED:
      return packr.unpack(buf.subarray(pos + 5, pos + 5 + buf.readUInt32LE(pos + 1)))
    default:
      throw new Error(`projection: unknown cell type ${t} at ${pos}`)
  }
}

/** Whether the cell at `pos` is the string whose UTF-8 bytes are `bytes` (up to 255 of them). */
function cellIs(buf: Buffer, pos: number, bytes: Buffer): boolean {
  const t = buf[pos] as number
  let from: number
  if (t >= FIXSTR && t < NIL) {
    if ((t & 0x3f) !== bytes.length) return false
    from = pos + 1
  } else if (t === STR8) {
    if (buf[pos + 1] !== bytes.length) return false
    from = pos + 2
  } else {
    return false
  }
  for (let i = 0; i < bytes.length; i++) if (buf[from + i] !== bytes[i]) return false
  return true
}

const nullOfNaN = (v: number): number | null => (Number.isNaN(v) ? null : v)

/** The fields of one operator's view kept in projections. */
export interface ProjectedOperator {
  readonly op: Operator
  readonly fields: readonly string[]
  /** `fields` as the set the operator's view is asked for. */
  readonly wanted: ReadonlySet<string>
  readonly index: ReadonlyMap<string, number>
  /** How the keys of the operator's timers in `rec.timers` start (`<operator>\u0000`). */
  readonly prefix: string
}

/** An operator whose re-scored tag values come from its population values alone (see `Operator.rescoreTagValues`). */
export interface RescoredOperator {
  readonly op: Operator
  readonly dimensions: readonly string[]
}

/**
 * What reading a projection needs of its layout: which fields each section holds. A
 * `ProjectionLayout` is one; `projectionShapeOf` rebuilds one from a layout's `id` (plain data, so
 * a worker thread can read projections without the operators that wrote them).
 */
export interface ProjectionShape {
  readonly byName: ReadonlyMap<string, number>
  readonly operators: readonly { readonly fields: readonly string[]; readonly index: ReadonlyMap<string, number> }[]
  readonly rescored: readonly { readonly dimensions: readonly string[] }[]
  viewSection(operator: number): number
}

/** The shape of the layout whose `id` this is (see `ProjectionLayout.id`). */
export function projectionShapeOf(id: string): ProjectionShape {
  const { v, views, scored } = JSON.parse(id) as { v: number; views: [string, string[]][]; scored: [string, string[]][] }
  if (v !== LAYOUT_VERSION) throw new Error(`projection: layout version ${v}, this code reads ${LAYOUT_VERSION}`)
  const rescored = scored.map(([, dimensions]) => ({ dimensions }))
  return {
    byName: new Map(views.map(([name], i) => [name, i])),
    operators: views.map(([, fields]) => ({ fields, index: new Map(fields.map((f, i) => [f, i])) })),
    rescored,
    viewSection: (operator) => FIRST_SCORED + rescored.length + operator,
  }
}

/** Bumped when the encoding changes: stores written with another rebuild their projections at open. */
const LAYOUT_VERSION = 2

export class ProjectionLayout implements ProjectionShape {
  readonly operators: readonly ProjectedOperator[]
  readonly byName: ReadonlyMap<string, number>
  readonly rescored: readonly RescoredOperator[]
  /** Stored with each partition's clock: a partition whose projections were written with another layout is rebuilt. */
  readonly id: string
  /** Sections per value: tags, tt, the re-scoring operators', the projected operators'. */
  readonly sections: number
  /**
   * The encoded view section last computed for an operator state, with the clock then and the
   * operator's own next timer then: an event touches one or two operators of a user, and its
   * commit recomputes only their views.
   */
  private readonly projected = new WeakMap<object, { readonly clock: number; readonly until: number | null; readonly bytes: string }>()
  private readonly writer = new ByteWriter()
  /** Section starts of the value being encoded, relative to the writer's start. */
  private readonly starts: Int32Array

  constructor(operators: readonly Operator[]) {
    this.operators = operators
      .filter((op) => op.viewSchema !== undefined && op.name !== 'tags')
      .map((op) => {
        const clock = op.viewClockFields === undefined ? undefined : new Set(op.viewClockFields)
        const timer = new Set(op.viewTimerFields ?? [])
        // Undeclared clock fields: every field may move with the clock, none is kept.
        const fields = Object.keys(op.viewSchema ?? {}).filter((f) => clock !== undefined && (!clock.has(f) || timer.has(f)))
        return { op, fields, wanted: new Set(fields), index: new Map(fields.map((f, i) => [f, i])), prefix: `${op.name}${TIMER_KEY_SEP}` }
      })
    this.byName = new Map(this.operators.map((o, i) => [o.op.name, i]))
    this.rescored = operators
      .filter((op) => op.rescore === true && op.scoredValues !== undefined && op.rescoreTagValues !== undefined)
      .map((op) => ({ op, dimensions: op.population ?? [] }))
    this.sections = FIRST_SCORED + this.rescored.length + this.operators.length
    this.starts = new Int32Array(this.sections + 1)
    this.id = JSON.stringify({
      v: LAYOUT_VERSION,
      views: this.operators.map((o) => [o.op.name, o.fields]),
      scored: this.rescored.map((r) => [r.op.name, r.dimensions]),
    })
  }

  /** Whether a rule view's field comes from projections. */
  has(variable: string, field: string): boolean {
    const i = this.byName.get(variable)
    return i !== undefined && (this.operators[i] as ProjectedOperator).index.has(field)
  }

  /** The section of a projected operator's view. */
  viewSection(operator: number): number {
    return FIRST_SCORED + this.rescored.length + operator
  }

  /**
   * The projection of a user at the partition clock `clock`. `view(op, state, fields)` is the
   * operator's view at that clock (the engine's call context), of which only `fields` are read.
   */
  project(rec: UserRecord, clock: number, view: (op: Operator, state: unknown, fields: ReadonlySet<string>) => Readonly<Record<string, unknown>>): EncodedProjection {
    const validUntil = nextTimer(rec)
    const w = this.writer
    const starts = this.starts
    w.pos = 0
    starts[TAGS] = w.pos
    w.tags(rec.tags)
    starts[TT] = w.pos
    w.testing(rec.tt)
    let s = FIRST_SCORED
    for (const { op, dimensions } of this.rescored) {
      starts[s++] = w.pos
      const state = rec.ops[op.name]
      if (state === undefined) continue
      const values = op.scoredValues!(state)
      if (dimensions.length === 0) w.byte(NIL)
      for (const d of dimensions) w.cell(values[d] ?? null)
    }
    const held = Number.isFinite(clock)
    let timerKeys: string[] | undefined
    for (const { op, fields, wanted, prefix } of this.operators) {
      starts[s++] = w.pos
      const state = rec.ops[op.name]
      if (state === undefined || !held) continue
      // The fields of a state computed at an earlier clock are what they are now when the
      // operator's own first timer is still the same one, not yet due: the projected fields of an
      // unchanged state do not depend on the clock, or move only when one of the operator's own
      // timers is due (`viewTimerFields`), and operators never mutate a state. Other operators'
      // timers (a user's next timer moves with nearly every purchase) do not matter.
      const keyed = typeof state === 'object' && state !== null
      const memo = keyed ? this.projected.get(state) : undefined
      const until = keyed ? ownNextTimer(rec.timers, timerKeys ??= Object.keys(rec.timers), prefix) : null
      if (memo !== undefined && memo.until === until && memo.clock <= clock && (until === null || clock < until)) {
        w.restore(memo.bytes)
        continue
      }
      const v = op.view === undefined ? (state as Record<string, unknown>) : view(op, state, wanted)
      const from = w.pos
      if (fields.length === 0) w.byte(NIL)
      for (const f of fields) w.cell(v[f])
      if (keyed) this.projected.set(state, { clock, until, bytes: w.snapshot(from) })
    }
    starts[s] = w.pos
    // No clock yet (a store converted before any event time): a projection that never holds.
    return this.assemble(held ? clock : NaN, validUntil ?? NaN, rec.rs ?? NaN, w.buf, 0)
  }

  /**
   * A projection that never holds (an operator's view failed): sweeps and previews read the record.
   * It keeps the record's tags and sweep instant.
   */
  unheld(rec: UserRecord): EncodedProjection {
    const w = this.writer
    const starts = this.starts
    w.pos = 0
    starts[TAGS] = 0
    w.tags(rec.tags)
    starts[TT] = w.pos
    w.testing(rec.tt)
    for (let s = FIRST_SCORED; s <= this.sections; s++) starts[s] = w.pos
    return this.assemble(NaN, NaN, rec.rs ?? NaN, w.buf, 0)
  }

  /**
   * Whether `stored`, the projection of a record whose operator states were `ops`, still has the
   * record's views: the same state objects (operators never mutate one) and the same next timer.
   */
  sameViews(rec: UserRecord, ops: Readonly<Record<string, unknown>>, stored: EncodedProjection): boolean {
    let n = 0
    for (const name in rec.ops) {
      if (rec.ops[name] !== ops[name]) return false
      n++
    }
    if (n !== Object.keys(ops).length) return false
    return nextTimer(rec) === nullOfNaN(stored.readDoubleLE(9))
  }

  /** `stored` with the record's tags, testing values and sweep instant (its views and clock kept, as bytes). */
  withTags(rec: UserRecord, stored: EncodedProjection): EncodedProjection {
    const w = this.writer
    const starts = this.starts
    w.pos = 0
    starts[TAGS] = 0
    w.tags(rec.tags)
    starts[TT] = w.pos
    w.testing(rec.tt)
    const from = sectionStart(stored, FIRST_SCORED)
    const shift = w.pos - from
    for (let s = FIRST_SCORED; s <= this.sections; s++) starts[s] = sectionStart(stored, s) + shift
    w.bytes(stored, from, sectionStart(stored, this.sections))
    return this.assemble(stored.readDoubleLE(1), stored.readDoubleLE(9), rec.rs ?? NaN, w.buf, 0)
  }

  /** One value: the header, the section offsets, then the sections (written at `body` of `src`, as `this.starts` says). */
  private assemble(clock: number, validUntil: number, rs: number, src: Buffer, body: number): EncodedProjection {
    const starts = this.starts
    const sections = this.sections
    const length = (starts[sections] as number) - (starts[0] as number)
    const wide = HEADER + (sections + 1) * 2 + length > 0xffff
    const table = HEADER + (sections + 1) * (wide ? 4 : 2)
    const out = Buffer.allocUnsafe(table + length)
    out[0] = wide ? FORMAT_U32 : FORMAT_U16
    out.writeDoubleLE(clock, 1)
    out.writeDoubleLE(validUntil, 9)
    out.writeDoubleLE(rs, 17)
    const shift = table - (starts[0] as number)
    for (let s = 0; s <= sections; s++) {
      const at = (starts[s] as number) + shift
      if (wide) out.writeUInt32LE(at, HEADER + s * 4)
      else out.writeUInt16LE(at, HEADER + s * 2)
    }
    src.copy(out, table, body + (starts[0] as number), body + (starts[sections] as number))
    return out
  }

  /** Every value of a projection, decoded (tests and diagnostics; sweeps and previews use a ProjectionReader). */
  decode(buf: EncodedProjection): DecodedProjection {
    const [clock, validUntil, rs, tags, tt, sections] = decodeProjection(buf)
    const cells = (section: number, n: number): unknown[] | null => {
      const values = sections[section]
      if (values === undefined || values === null) return null
      // A present section of an operator without fields holds one NIL marker.
      return n === 0 ? [] : values
    }
    return [
      clock,
      validUntil,
      rs,
      tags,
      tt,
      this.rescored.map((o, i) => cells(i, o.dimensions.length)),
      this.operators.map((o, i) => cells(this.rescored.length + i, o.fields.length)),
    ]
  }
}

/**
 * Every value of a projection, without its layout: header, tags, testing values, then the cells of
 * each operator section (null: empty, no state). For tests and diagnostics.
 */
export function decodeProjection(buf: EncodedProjection): [
  clock: number | null,
  validUntil: number | null,
  rs: number | null,
  tags: Record<string, [TagValue, number]>,
  tt: Record<string, TagValue> | null,
  sections: (unknown[] | null)[],
] {
  if (buf[0] !== FORMAT_U16 && buf[0] !== FORMAT_U32) throw new Error(`projection: unknown format ${String(buf[0])}`)
  const count = (sectionStart(buf, 0) - HEADER) / (buf[0] === FORMAT_U16 ? 2 : 4) - 1
  const tags: Record<string, [TagValue, number]> = {}
  for (let pos = sectionStart(buf, TAGS), end = sectionStart(buf, TT); pos < end; ) {
    const id = readCell(buf, pos) as string
    pos = skipCell(buf, pos)
    const value = readCell(buf, pos) as TagValue
    pos = skipCell(buf, pos)
    tags[id] = [value, readCell(buf, pos) as number]
    pos = skipCell(buf, pos)
  }
  let tt: Record<string, TagValue> | null = null
  for (let pos = sectionStart(buf, TT), end = sectionStart(buf, FIRST_SCORED); pos < end; ) {
    tt ??= {}
    const id = readCell(buf, pos) as string
    pos = skipCell(buf, pos)
    tt[id] = readCell(buf, pos) as TagValue
    pos = skipCell(buf, pos)
  }
  const sections: (unknown[] | null)[] = []
  for (let s = FIRST_SCORED; s < count; s++) {
    const end = sectionStart(buf, s + 1)
    let pos = sectionStart(buf, s)
    if (pos === end) {
      sections.push(null)
      continue
    }
    const values: unknown[] = []
    for (; pos < end; pos = skipCell(buf, pos)) values.push(readCell(buf, pos))
    sections.push(values)
  }
  return [nullOfNaN(buf.readDoubleLE(1)), nullOfNaN(buf.readDoubleLE(9)), nullOfNaN(buf.readDoubleLE(17)), tags, tt, sections]
}

/** Where section `s` of a projection starts. */
function sectionStart(buf: Buffer, s: number): number {
  if (buf[0] === FORMAT_U16) {
    const at = HEADER + s * 2
    return (buf[at] as number) | ((buf[at + 1] as number) << 8)
  }
  return buf.readUInt32LE(HEADER + s * 4)
}

/**
 * The UTF-8 bytes of tag ids, as projections hold them (looked up per user in previews and sweeps);
 * null for an id not held as a short string cell (long, or in ISO form): compared decoded.
 */
const idBytes = new Map<string, Buffer | null>()
function bytesOf(id: string): Buffer | null {
  let b = idBytes.get(id)
  if (b === undefined) {
    const bytes = Buffer.from(id, 'utf8')
    b = bytes.length > 0xff || !Number.isNaN(isoMs(id)) ? null : bytes
    if (idBytes.size < 10_000) idBytes.set(id, b)
  }
  return b
}

/**
 * Reads the values of one projection in place, a field at a time; `load` points it at another
 * projection (one reader serves a whole scan, nothing is allocated per user but the values read).
 */
export class ProjectionReader {
  private buf: Buffer = EMPTY
  constructor(readonly layout: ProjectionShape) {}

  load(buf: EncodedProjection): this {
    if (buf[0] !== FORMAT_U16 && buf[0] !== FORMAT_U32) throw new Error(`projection: unknown format ${String(buf[0])}`)
    this.buf = buf
    return this
  }

  get value(): EncodedProjection {
    return this.buf
  }

  get clock(): number | null {
    return nullOfNaN(this.buf.readDoubleLE(1))
  }

  get validUntil(): number | null {
    return nullOfNaN(this.buf.readDoubleLE(9))
  }

  /** The instant of the last sweep applied to the user (null: none). */
  get rs(): number | null {
    return nullOfNaN(this.buf.readDoubleLE(17))
  }

  /** Whether the view holds at instant `at` (computed at or before it, no timer due by then). */
  holdsAt(at: number): boolean {
    const clock = this.buf.readDoubleLE(1)
    if (!(clock <= at)) return false // NaN: never
    const until = this.buf.readDoubleLE(9)
    return Number.isNaN(until) || at < until
  }

  /** Where the value cell of `id` starts in section `section` (tags: `TAGS`, testing: `TT`); -1: absent. */
  private find(section: number, id: string): number {
    const buf = this.buf
    const bytes = bytesOf(id)
    const end = sectionStart(buf, section + 1)
    for (let pos = sectionStart(buf, section); pos < end; ) {
      const hit = bytes === null ? readCell(buf, pos) === id : cellIs(buf, pos, bytes)
      pos = skipCell(buf, pos)
      if (hit) return pos
      pos = skipCell(buf, pos)
      if (section === TAGS) pos = skipCell(buf, pos)
    }
    return -1
  }

  /** An online tag's value (undefined: the user does not have it). */
  tagValue(id: string): TagValue | undefined {
    const at = this.find(TAGS, id)
    return at < 0 ? undefined : (readCell(this.buf, at) as TagValue)
  }

  /** Whether the user has tag `id` with `value` at `version` (value undefined: does not have it). */
  tagHolds(id: string, value: TagValue | undefined, version: number): boolean {
    const at = this.find(TAGS, id)
    if (at < 0) return value === undefined
    return readCell(this.buf, at) === value && readCell(this.buf, skipCell(this.buf, at)) === version
  }

  /** A testing lane's value (null: none). */
  testingValue(id: string): TagValue | null {
    const at = this.find(TT, id)
    return at < 0 ? null : (readCell(this.buf, at) as TagValue)
  }

  /** Every online tag id -> value. */
  allTags(): Record<string, TagValue> {
    const buf = this.buf
    const out: Record<string, TagValue> = {}
    for (let pos = sectionStart(buf, TAGS), end = sectionStart(buf, TT); pos < end; ) {
      const id = readCell(buf, pos) as string
      pos = skipCell(buf, pos)
      out[id] = readCell(buf, pos) as TagValue
      pos = skipCell(buf, pos)
      pos = skipCell(buf, pos)
    }
    return out
  }

  /** Where a section's cells start, or -1 when it is empty (no state for the operator). */
  sectionCells(section: number): number {
    const start = sectionStart(this.buf, section)
    return start === sectionStart(this.buf, section + 1) ? -1 : start
  }

  /** The cell `index` of the cells starting at `start` (null: absent). */
  cell(start: number, index: number): unknown {
    let pos = start
    for (let i = 0; i < index; i++) pos = skipCell(this.buf, pos)
    return readCell(this.buf, pos)
  }

  /** The view fields of one operator as a plain object (absent fields left out), for rule views. */
  operatorView(variable: string): Readonly<Record<string, unknown>> {
    const i = this.layout.byName.get(variable)
    if (i === undefined) return NO_FIELDS
    const start = this.sectionCells(this.layout.viewSection(i))
    if (start < 0) return NO_FIELDS
    const fields = (this.layout.operators[i] as ProjectionShape['operators'][number]).fields
    const out: Record<string, unknown> = {}
    for (let f = 0, pos = start; f < fields.length; f++, pos = skipCell(this.buf, pos)) {
      const v = readCell(this.buf, pos)
      if (v !== null) out[fields[f] as string] = v
    }
    return out
  }

  /** A re-scoring operator's population values (undefined: the user has no state for it). */
  scoredOf(index: number): Readonly<Record<string, number>> | undefined {
    const start = this.sectionCells(FIRST_SCORED + index)
    if (start < 0) return undefined
    const dims = (this.layout.rescored[index] as ProjectionShape['rescored'][number]).dimensions
    const out: Record<string, number> = {}
    for (let d = 0, pos = start; d < dims.length; d++, pos = skipCell(this.buf, pos)) {
      const v = readCell(this.buf, pos)
      if (v !== null) out[dims[d] as string] = v as number
    }
    return out
  }
}

const EMPTY = Buffer.alloc(0)
const NO_FIELDS: Readonly<Record<string, unknown>> = Object.freeze({})

/**
 * The view of one rule built from projections: only the fields it reads, each read in place. For
 * a rule that gives no value when a field it reads is missing (`strict`, no variable read whole),
 * one view object is filled per user and reused: nothing is allocated but the values read.
 * Returns undefined as `ruleViewBuilder` does (a strict rule with a missing field).
 */
export function projectedViewBuilder(plan: RuleViewPlan, layout: ProjectionShape): (r: ProjectionReader) => RuleView | undefined {
  const variables = plan.variables.map(({ variable, whole, read, create }) => {
    if (variable === 'tags') return { variable, whole, create, tags: true as const, section: -1, read: read.map(([field, conv]) => ({ field, conv, index: -1 })) }
    const op = layout.byName.get(variable)
    const fields = op === undefined ? undefined : (layout.operators[op] as ProjectionShape['operators'][number]).index
    // Fields in section order: each is found by skipping cells forward from the previous one.
    const reads = read
      .map(([field, conv]) => {
        const index = fields?.get(field)
        if (index === undefined) throw new Error(`projection: ${variable}.${field} is not projected`)
        return { field, conv, index }
      })
      .sort((a, b) => a.index - b.index)
    return { variable, whole, create, tags: false as const, section: op === undefined ? -1 : layout.viewSection(op), read: reads }
  })
  if (plan.strict && variables.every((v) => !v.whole)) {
    const view: Record<string, Record<string, unknown>> = {}
    const objects = variables.map((v) => {
      const o = v.create()
      for (const { field } of v.read) o[field] = null
      view[v.variable] = o
      return o
    })
    return (r) => {
      for (let i = 0; i < variables.length; i++) {
        const v = variables[i] as (typeof variables)[number]
        const out = objects[i] as Record<string, unknown>
        if (v.tags) {
          for (const { field, conv } of v.read) {
            const value = r.tagValue(field)
            if (value === undefined) return undefined
            out[field] = conv(value)
          }
          continue
        }
        const start = r.sectionCells(v.section)
        if (start < 0) return undefined
        let pos = start
        let at = 0
        for (const { field, conv, index } of v.read) {
          for (; at < index; at++) pos = skipCell(r.value, pos)
          const value = readCell(r.value, pos)
          if (value === null) return undefined
          out[field] = conv(value)
        }
      }
      return view
    }
  }
  return (r) => {
    const view: Record<string, Record<string, unknown>> = {}
    for (const v of variables) {
      const out = v.create()
      if (v.tags) {
        const all = v.whole ? r.allTags() : undefined
        for (const { field, conv } of v.read) {
          const value = all === undefined ? r.tagValue(field) : all[field]
          if (value !== undefined && value !== null) out[field] = conv(value)
          else if (plan.strict && !v.whole) return undefined
        }
      } else {
        const start = r.sectionCells(v.section)
        let pos = start
        let at = 0
        for (const { field, conv, index } of v.read) {
          let value: unknown = null
          if (start >= 0) {
            for (; at < index; at++) pos = skipCell(r.value, pos)
            value = readCell(r.value, pos)
          }
          if (value !== null) out[field] = conv(value)
          else if (plan.strict && !v.whole) return undefined
        }
      }
      view[v.variable] = out
    }
    return view
  }
}

/** The first pending timer of one operator, whose timer keys start with `prefix` (null: none). */
function ownNextTimer(timers: Readonly<Record<string, number>>, keys: readonly string[], prefix: string): number | null {
  let next: number | null = null
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string
    if (!k.startsWith(prefix)) continue
    const due = timers[k] as number
    if (next === null || due < next) next = due
  }
  return next
}

/** The user's first pending timer (null: none): until then a projection's views hold. */
function nextTimer(rec: UserRecord): number | null {
  let next: number | null = null
  for (const k in rec.timers) {
    const due = rec.timers[k] as number
    if (next === null || due < next) next = due
  }
  return next
}

/**
 * The context of `rescoreTagValues` in a sweep: the clock and the population, nothing of a user
 * record (no timers can be set from it).
 */
export class ScoreContext implements OperatorContext {
  operator = ''
  constructor(
    readonly now: number,
    readonly timeZone: string,
    readonly userId: string,
    private readonly populationOf: (operator: string, dimension: string) => PopulationView,
  ) {}

  population(dimension: string): PopulationView {
    return this.populationOf(this.operator, dimension)
  }

  setTimer(): void {
    throw new Error('rescoreTagValues cannot set timers')
  }

  deleteTimer(): void {
    throw new Error('rescoreTagValues cannot delete timers')
  }

  timer(): number | undefined {
    return undefined
  }
}
