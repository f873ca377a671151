/**
 * CEL library comparison for strategy-tag rules: `@marcbachmann/cel-js` (kept) vs `@bufbuild/cel`.
 *
 *   npx tsx bench/cel.bench.ts            # 1M evaluations per rule and library
 *   EVALS=200000 npx tsx bench/cel.bench.ts
 *
 * `@bufbuild/cel` is not a dependency of tagstream (see src/tags/rules.ts for the choice); it is loaded
 * dynamically and skipped when absent. To re-run the comparison: `npm install --no-save @bufbuild/cel`.
 *
 * Prints: compile time per rule, evaluations/s over EVALS evaluations cycling through 1024 varying views,
 * and a spec-coverage probe table (expected = cel-spec behaviour).
 */
import { Environment } from '@marcbachmann/cel-js'

const EVALS = Number(process.env.EVALS ?? 1_000_000)
const VIEWS = 1024

// ---- the typed profile view used by the rules -------------------------------------------------------

interface BenchView {
  rfm: { monetary90d: number; frequency: bigint; recencyDays: bigint; monetary: number }
  lifecycle: { stage: string }
  tags: { city?: string; vip: boolean; interests: string[] }
}

const STAGES = ['new', 'active', 'at_risk', 'churned'] as const
const CITIES = ['Berlin', 'Paris', 'Rome', 'Madrid', 'Lisbon'] as const
const INTERESTS = ['shoes', 'books', 'garden', 'games'] as const

/** Deterministic varying inputs (LCG), half the users without a city. */
function makeViews(n: number): BenchView[] {
  let seed = 42
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed / 0x7fffffff
  }
  const out: BenchView[] = []
  for (let i = 0; i < n; i++) {
    const tags: BenchView['tags'] = { vip: rnd() < 0.2, interests: INTERESTS.filter(() => rnd() < 0.4) }
    if (rnd() < 0.5) tags.city = CITIES[Math.floor(rnd() * CITIES.length)] as string
    out.push({
      rfm: {
        monetary90d: Math.round(rnd() * 300000) / 100,
        frequency: BigInt(Math.floor(rnd() * 10)),
        recencyDays: BigInt(Math.floor(rnd() * 400)),
        monetary: Math.round(rnd() * 900000) / 100,
      },
      lifecycle: { stage: STAGES[Math.floor(rnd() * STAGES.length)] as string },
      tags,
    })
  }
  return out
}

const RULES: ReadonlyArray<{ name: string; expr: string }> = [
  { name: 'threshold && stage', expr: 'rfm.monetary90d >= 1000.0 && lifecycle.stage == "at_risk"' },
  { name: 'in-list && int', expr: 'tags.city in ["Berlin", "Paris"] && rfm.frequency > 3' },
  { name: 'has() + startsWith', expr: 'has(tags.city) && tags.city.startsWith("Ber") && !tags.vip' },
  { name: 'contains + exists', expr: 'lifecycle.stage.contains("risk") || tags.interests.exists(i, i == "shoes")' },
  { name: 'arith + ternary', expr: '(rfm.recencyDays < 30 ? rfm.monetary : rfm.monetary90d) / 2.0 > 500.0' },
]

// ---- library adapters ------------------------------------------------------------------------------

type Evaluator = (vars: Record<string, unknown>) => unknown
interface Lib {
  name: string
  compile(expr: string): Evaluator
  /** Outcome of evaluating an expression once, as text: `value:<v>`, `error:<msg>`, `parse-error:<msg>`. */
  probe(expr: string, vars: Record<string, unknown>): string
  /** Whether the library refuses the expression before evaluation (type check), or `n/a`. */
  checks(expr: string): string
}

function fmtValue(v: unknown): string {
  if (typeof v === 'bigint') return `${v}`
  if (typeof v === 'string') return JSON.stringify(v)
  if (Array.isArray(v)) return `[${v.map(fmtValue).join(',')}]`
  if (v instanceof Date) return v.toISOString()
  if (v !== null && typeof v === 'object' && 'toString' in v && v.constructor !== Object) return String(v)
  return String(v)
}

function firstLine(msg: string): string {
  return (msg.split('\n')[0] ?? '').slice(0, 60)
}

function marcbachmannLib(): Lib {
  const typed = new Environment()
    .registerVariable({
      name: 'rfm',
      schema: { monetary90d: 'double', frequency: 'int', recencyDays: 'int', monetary: 'double' },
    })
    .registerVariable({ name: 'lifecycle', schema: { stage: 'string' } })
    .registerVariable({ name: 'tags', schema: { city: 'string', vip: 'bool', interests: 'list<string>' } })
  const dyn = new Environment({ unlistedVariablesAreDyn: true, enableOptionalTypes: true })
  return {
    name: '@marcbachmann/cel-js',
    compile(expr) {
      const fn = typed.parse(expr)
      const checked = fn.check()
      if (!checked.valid) throw checked.error
      // Evaluation errors (e.g. `tags.city` for a user without a city) are results, as in @bufbuild/cel.
      return (vars) => {
        try {
          return fn(vars)
        } catch (e) {
          return e
        }
      }
    },
    probe(expr, vars) {
      let fn: Evaluator
      try {
        fn = dyn.parse(expr) as Evaluator
      } catch (e) {
        return `parse-error:${firstLine((e as Error).message)}`
      }
      try {
        return `value:${fmtValue(fn(vars))}`
      } catch (e) {
        return `error:${firstLine((e as Error).message)}`
      }
    },
    checks(expr) {
      const r = typed.check(expr)
      return r.valid ? `ok (${r.type})` : `refused: ${firstLine(r.error?.message ?? "")}`
    },
  }
}

/** Minimal typing of the parts of `@bufbuild/cel` the bench uses (loaded dynamically: not a dependency). */
interface BufCel {
  run(expr: string, bindings?: Record<string, unknown>, opts?: { funcs?: unknown[] }): unknown
  plan(env: unknown, parsed: unknown): Evaluator
  parse(expr: string): unknown
  celEnv(opts?: { funcs?: unknown[] }): unknown
  isCelError(v: unknown): v is Error
}

async function bufbuildLib(): Promise<Lib | undefined> {
  const base = '@bufbuild/cel'
  let cel: BufCel
  let strings: unknown[]
  try {
    cel = (await import(base)) as BufCel
    strings = ((await import(`${base}/ext`)) as { strings: unknown[] }).strings
  } catch {
    return undefined
  }
  const env = cel.celEnv({ funcs: strings })
  return {
    name: '@bufbuild/cel',
    compile(expr) {
      const fn = cel.plan(env, cel.parse(expr))
      return fn
    },
    probe(expr, vars) {
      let parsed: unknown
      try {
        parsed = cel.parse(expr)
      } catch (e) {
        return `parse-error:${firstLine((e as Error).message)}`
      }
      try {
        const r = cel.plan(env, parsed)(vars)
        return cel.isCelError(r) ? `error:${firstLine(r.message)}` : `value:${fmtValue(r)}`
      } catch (e) {
        return `THROWS:${firstLine((e as Error).message)}`
      }
    },
    checks() {
      return 'n/a (no public checker)'
    },
  }
}

// ---- measurements ----------------------------------------------------------------------------------

function timeCompile(lib: Lib, expr: string): number {
  const n = 2000
  const t0 = process.hrtime.bigint()
  // A distinct source text each time (trailing spaces) so no parse cache can answer.
  for (let i = 0; i < n; i++) lib.compile(expr + ' '.repeat(i % 64) + (i >= 64 ? ` && true`.repeat(1 + (i % 3)) : ''))
  return Number(process.hrtime.bigint() - t0) / n / 1000 // µs per compile
}

function timeEval(lib: Lib, expr: string, views: BenchView[]): { perSec: number; trues: number; errors: number } {
  const fn = lib.compile(expr)
  const vs = views as unknown as Record<string, unknown>[]
  for (let i = 0; i < 50_000; i++) fn(vs[i & (VIEWS - 1)] as Record<string, unknown>)
  let trues = 0
  let errors = 0
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < EVALS; i++) {
    const r = fn(vs[i & (VIEWS - 1)] as Record<string, unknown>)
    if (r === true) trues++
    else if (r instanceof Error) errors++
  }
  const ns = Number(process.hrtime.bigint() - t0)
  return { perSec: (EVALS / ns) * 1e9, trues, errors }
}

interface Probe {
  area: string
  expr: string
  vars?: Record<string, unknown>
  /** Expected outcome per cel-spec: `value:<v>` or `error` (any evaluation error) or `parse-error`. */
  expect: string
}

const PROBES: Probe[] = [
  { area: 'has() present', expr: 'has(m.a)', vars: { m: { a: 1n } }, expect: 'value:true' },
  { area: 'has() absent', expr: 'has(m.b)', vars: { m: { a: 1n } }, expect: 'value:false' },
  { area: 'all()', expr: '[1, 2, 3].all(x, x > 0)', expect: 'value:true' },
  { area: 'exists()', expr: '[1, 2, 3].exists(x, x == 2)', expect: 'value:true' },
  { area: 'exists_one()', expr: '[1, 2, 3].exists_one(x, x > 2)', expect: 'value:true' },
  { area: 'map()', expr: '[1, 2, 3].map(x, x * 2) == [2, 4, 6]', expect: 'value:true' },
  { area: 'filter()', expr: '[1, 2, 3].filter(x, x > 1).size()', expect: 'value:2' },
  { area: 'int division truncates', expr: '7 / 2', expect: 'value:3' },
  { area: 'double division', expr: '7.0 / 2.0', expect: 'value:3.5' },
  { area: 'int + double: no overload', expr: '1 + 1.5', expect: 'error' },
  { area: 'heterogeneous <', expr: '1 < 1.5', expect: 'value:true' },
  { area: 'heterogeneous ==', expr: '2.0 == 2', expect: 'value:true' },
  { area: 'in list', expr: '"a" in ["a", "b"]', expect: 'value:true' },
  { area: 'in map (keys)', expr: '"k" in {"k": 1}', expect: 'value:true' },
  { area: 'startsWith/endsWith', expr: '"Berlin".startsWith("Ber") && "Berlin".endsWith("lin")', expect: 'value:true' },
  { area: 'contains', expr: '"at_risk".contains("risk")', expect: 'value:true' },
  { area: 'matches (RE2)', expr: '"abc-123".matches("^[a-z]+-\\\\d+$")', expect: 'value:true' },
  { area: 'ext lowerAscii()', expr: '"ABC".lowerAscii()', expect: 'value:"abc"' },
  { area: 'size() code points', expr: 'size("héllo")', expect: 'value:5' },
  {
    area: 'timestamp compare',
    expr: 'timestamp("2024-01-02T00:00:00Z") > timestamp("2024-01-01T00:00:00Z")',
    expect: 'value:true',
  },
  {
    area: 'timestamp - timestamp',
    expr: 'timestamp("2024-01-02T00:00:00Z") - timestamp("2024-01-01T00:00:00Z") == duration("24h")',
    expect: 'value:true',
  },
  {
    area: 'timestamp + duration',
    expr: 'timestamp("2024-01-01T00:00:00Z") + duration("36h") == timestamp("2024-01-02T12:00:00Z")',
    expect: 'value:true',
  },
  { area: 'duration accessor', expr: 'duration("90m").getMinutes()', expect: 'value:90' },
  { area: 'int / 0', expr: '1 / 0', expect: 'error' },
  { area: 'int % 0', expr: '1 % 0', expect: 'error' },
  { area: 'double / 0.0 = +Inf', expr: '1.0 / 0.0', expect: 'value:Infinity' },
  { area: 'int overflow +', expr: '9223372036854775807 + 1', expect: 'error' },
  { area: 'int overflow -', expr: '-9223372036854775808 - 1', expect: 'error' },
  { area: 'int overflow *', expr: '4611686018427387904 * 2', expect: 'error' },
  { area: 'uint arithmetic', expr: '1u + 2u == 3u', expect: 'value:true' },
  { area: 'null literal eq', expr: 'null == null', expect: 'value:true' },
  { area: 'null field == null', expr: 'm.x == null', vars: { m: { x: null } }, expect: 'value:true' },
  { area: 'missing key error', expr: 'm.y == 1', vars: { m: { x: 1n } }, expect: 'error' },
  { area: '&& absorbs error', expr: 'false && (1 / 0 > 0)', expect: 'value:false' },
  { area: '|| commutative absorb', expr: '(1 / 0 > 0) || true', expect: 'value:true' },
  { area: 'conversions', expr: 'int("42") == 42 && double(3) == 3.0 && string(7) == "7"', expect: 'value:true' },
  { area: 'type()', expr: 'type(1) == int && type("a") == string', expect: 'value:true' },
  { area: 'ternary', expr: 'true ? "y" : "n"', expect: 'value:"y"' },
  { area: 'list concat/index', expr: '([1] + [2])[1]', expect: 'value:2' },
  { area: 'optional .?', expr: 'm.?y.orValue(5)', vars: { m: { x: 1n } }, expect: 'value:5' },
  { area: 'bad syntax', expr: 'a >= ', expect: 'parse-error' },
  { area: 'type error (1 + "a")', expr: '1 + "a"', expect: 'error' },
]

/** Check-time probes against the typed rule schema (the bench view above). */
const CHECK_PROBES: ReadonlyArray<{ area: string; expr: string }> = [
  { area: 'well-typed rule', expr: 'rfm.monetary90d >= 1000.0 && lifecycle.stage == "at_risk"' },
  { area: 'unknown field', expr: 'rfm.monetary91d > 1.0' },
  { area: 'unknown variable', expr: 'loyalty.tier == "gold"' },
  { area: 'double == string', expr: 'rfm.monetary90d == "x"' },
  { area: 'int + double', expr: 'rfm.frequency + rfm.monetary > 3.0' },
  { area: 'non-bool && operand', expr: 'rfm.frequency && true' },
  { area: 'literal int / 0', expr: 'rfm.frequency / 0 > 1' },
]

function pad(s: string, n: number): string {
  return s.length >= n ? s.slice(0, n) : s + ' '.repeat(n - s.length)
}

function matches(actual: string, expect: string): boolean {
  if (expect === 'error') return actual.startsWith('error:')
  if (expect === 'parse-error') return actual.startsWith('parse-error:')
  return actual === expect
}

async function main(): Promise<void> {
  const libs: Lib[] = [marcbachmannLib()]
  const buf = await bufbuildLib()
  if (buf === undefined) console.log('@bufbuild/cel not installed: only @marcbachmann/cel-js is measured (npm install --no-save @bufbuild/cel)\n')
  else libs.push(buf)

  const views = makeViews(VIEWS)
  console.log(`Node ${process.version}, ${EVALS.toLocaleString('en')} evaluations per rule over ${VIEWS} varying views\n`)
  console.log(`${pad('rule', 22)} ${libs.map((l) => `${pad(l.name, 22)}`).join(' ')}`)
  console.log(`${pad('', 22)} ${libs.map(() => pad('compile µs | evals/s', 22)).join(' ')}`)
  for (const rule of RULES) {
    const cells: string[] = []
    let outcome: string | undefined
    for (const lib of libs) {
      const c = timeCompile(lib, rule.expr)
      const e = timeEval(lib, rule.expr, views)
      const o = `${e.trues} true, ${e.errors} errors`
      if (outcome !== undefined && outcome !== o) cells.push(pad(`MISMATCH ${o} vs ${outcome}`, 22))
      else cells.push(pad(`${c.toFixed(1).padStart(7)} | ${Math.round(e.perSec).toLocaleString('en').padStart(11)}`, 22))
      outcome = o
    }
    console.log(`${pad(rule.name, 22)} ${cells.join(' ')}  (${outcome ?? ''})`)
  }

  console.log(`\nSpec coverage (✓ = as cel-spec; expected outcome in brackets)\n`)
  let score = libs.map(() => 0)
  for (const p of PROBES) {
    const cells = libs.map((lib, i) => {
      const a = lib.probe(p.expr, p.vars ?? {})
      const ok = matches(a, p.expect)
      if (ok) score = score.map((s, j) => (j === i ? s + 1 : s))
      return pad(`${ok ? '✓' : '✗'} ${a}`, 46)
    })
    console.log(`${pad(p.area, 26)} ${pad(`[${p.expect}]`, 18)} ${cells.join(' ')}`)
  }
  console.log(`${pad('TOTAL', 45)} ${libs.map((l, i) => pad(`${score[i]}/${PROBES.length} ${l.name}`, 46)).join(' ')}`)

  console.log(`\nCheck time (typed profile view; refusing before any evaluation)\n`)
  for (const p of CHECK_PROBES) {
    console.log(`${pad(p.area, 22)} ${pad(p.expr, 48)} ${libs.map((l) => pad(l.checks(p.expr), 60)).join(' ')}`)
  }
}

await main()
