import type { TSchema } from '@sinclair/typebox'
import { Value, type ValueError } from '@sinclair/typebox/value'

/** One problem with a value against a schema, pointing at the key. */
export interface SchemaIssue {
  /** Dotted path of the offending key, e.g. `engine.batchSize` or `sources[0].path`. */
  readonly key: string
  readonly message: string
}

/** `/sources/0/path` -> `sources[0].path` */
export function pointerToKey(pointer: string): string {
  if (pointer === '' || pointer === '/') return '(root)'
  return pointer
    .slice(1)
    .split('/')
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, part) => (/^\d+$/.test(part) ? `${acc}[${part}]` : acc === '' ? part : `${acc}.${part}`), '')
}

export interface SchemaIssueOptions {
  /** The property that tells a union's branches apart (`type` for sources and sinks). */
  readonly discriminant: string
  /** The message when no branch has the given discriminant value. */
  readonly unknownDiscriminant: (value: unknown) => string
}

/**
 * Every schema error as an issue naming its key, once. A union fails as a whole: the errors
 * reported are those of the branch the value meant (its discriminant matched; of those, the one
 * with the fewest errors), so that the key named is the real one and not "expected union value".
 */
export function schemaIssues(schema: TSchema, value: unknown, options: SchemaIssueOptions): SchemaIssue[] {
  const out: SchemaIssue[] = []
  for (const error of Value.Errors(schema, value)) collect(error, options, out)
  const seen = new Set<string>()
  return out.filter((i) => {
    const k = `${i.key}\u0000${i.message}`
    if (seen.has(k)) return false
    seen.add(k)
    return true
  })
}

function collect(error: ValueError, options: SchemaIssueOptions, out: SchemaIssue[]): void {
  if (error.errors.length === 0) {
    out.push({ key: pointerToKey(error.path), message: error.message })
    return
  }
  const discriminantPath = `${error.path}/${options.discriminant}`
  const meant = error.errors
    .map((it) => [...it])
    .filter((errs) => !errs.some((e) => e.path === discriminantPath))
    .sort((a, b) => a.length - b.length)[0]
  if (meant === undefined || meant.length === 0) {
    const v = error.value as Record<string, unknown> | undefined
    const message = typeof v === 'object' && v !== null && options.discriminant in v ? options.unknownDiscriminant(v[options.discriminant]) : error.message
    out.push({ key: pointerToKey(error.path), message })
    return
  }
  for (const e of meant) collect(e, options, out)
}
