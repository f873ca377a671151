import { readFileSync } from 'node:fs'
import type { TObject, TUnion } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { pointerToKey, schemaIssues, type SchemaIssue } from './schema-issues.js'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { ErrorCodes, TagstreamError } from '../errors.js'
import '../contracts/formats.js'
import { ConfigSchema, DeadLetterSinkSchema, SourceConfigSchema, TagChangeSinkSchema, type Config } from './schema.js'

/** One problem with a configuration, pointing at the key. */
export type ConfigIssue = SchemaIssue

/** Prefix of environment overrides: `TAGSTREAM_ENGINE__BATCH_SIZE=8192` sets `engine.batchSize`. */
export const ENV_PREFIX = 'TAGSTREAM_'

export { pointerToKey }

function camel(segment: string): string {
  return segment.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase())
}

/**
 * Applies `TAGSTREAM_A__B_C=value` overrides: `__` separates levels, `_` inside a level becomes
 * camelCase. Values are parsed as YAML scalars (numbers, booleans) or JSON-like YAML flow values.
 */
export function applyEnvOverrides(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): string[] {
  const applied: string[] = []
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue
    const path = name.slice(ENV_PREFIX.length).split('__').map(camel)
    if (path.some((p) => p === '')) continue
    let node: Record<string, unknown> = raw
    for (const part of path.slice(0, -1)) {
      const next = node[part]
      if (typeof next !== 'object' || next === null || Array.isArray(next)) node[part] = {}
      node = node[part] as Record<string, unknown>
    }
    node[path[path.length - 1] as string] = parseYaml(value) as unknown
    applied.push(path.join('.'))
  }
  return applied
}

/** Validates a raw configuration object: defaults applied, every issue collected. */
export function validateConfig(raw: unknown): { config: Config; issues: [] } | { config: undefined; issues: ConfigIssue[] } {
  const cloned = Value.Clone(raw ?? {}) as Record<string, unknown>
  // TypeBox fills a union's defaults only when some branch already matches: fill each item from
  // the branch its `type` names, so that errors speak of what is really wrong.
  if (typeof cloned === 'object' && cloned !== null) {
    defaultTypedItems(SourceConfigSchema, cloned.sources)
    const sinks = cloned.sinks as Record<string, unknown> | undefined
    if (typeof sinks === 'object' && sinks !== null) {
      defaultTypedItems(TagChangeSinkSchema, sinks.tagChanges)
      if (typeof sinks.deadLetter === 'object' && sinks.deadLetter !== null) {
        const one = [sinks.deadLetter]
        defaultTypedItems(DeadLetterSinkSchema, one)
        sinks.deadLetter = one[0]
      }
    }
  }
  const withDefaults = Value.Default(ConfigSchema, cloned)
  const issues = schemaIssues(ConfigSchema, withDefaults, {
    discriminant: 'type',
    unknownDiscriminant: (type) => `unknown type ${JSON.stringify(type)}`,
  })
  if (issues.length > 0) return { config: undefined, issues }
  const config = withDefaults as Config
  const semantic = checkSemantics(config)
  if (semantic.length > 0) return { config: undefined, issues: semantic }
  return { config, issues: [] }
}

function defaultTypedItems(union: TUnion, items: unknown): void {
  if (!Array.isArray(items)) return
  items.forEach((item, i) => {
    if (typeof item !== 'object' || item === null) return
    const branch = union.anyOf.find((b) => (b as TObject).properties?.type?.const === (item as { type?: unknown }).type)
    if (branch !== undefined) items[i] = Value.Default(branch, item)
  })
}

function checkSemantics(config: Config): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: config.timeZone })
  } catch {
    issues.push({ key: 'timeZone', message: `unknown IANA time zone "${config.timeZone}"` })
  }
  const names = new Set<string>()
  config.sources.forEach((s, i) => {
    if (names.has(s.name)) issues.push({ key: `sources[${i}].name`, message: `duplicate source name "${s.name}"` })
    names.add(s.name)
  })
  const opNames = new Set<string>()
  config.operators.forEach((op, i) => {
    if (opNames.has(op.name)) issues.push({ key: `operators[${i}].name`, message: `duplicate operator name "${op.name}"` })
    opNames.add(op.name)
    if ((op.type === undefined) === (op.module === undefined)) {
      issues.push({ key: `operators[${i}]`, message: 'exactly one of "type" and "module" must be set' })
    }
  })
  return issues
}

export interface LoadedConfig {
  readonly config: Readonly<Config>
  readonly path: string | undefined
  readonly envOverrides: readonly string[]
}

/** Reads, overrides from the environment, validates and deep-freezes a configuration. */
export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let raw: Record<string, unknown> = {}
  if (path !== undefined) {
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      throw new TagstreamError(ErrorCodes.CONFIG_UNREADABLE, `cannot read config ${path}: ${(err as Error).message}`, { cause: err })
    }
    try {
      const parsed = parseYaml(text) as unknown
      if (parsed !== null && parsed !== undefined) {
        if (typeof parsed !== 'object' || Array.isArray(parsed)) {
          throw new TagstreamError(ErrorCodes.CONFIG_INVALID, `config ${path} must be a YAML mapping`, {
            details: { issues: [{ key: '(root)', message: 'must be a mapping' }] },
          })
        }
        raw = parsed as Record<string, unknown>
      }
    } catch (err) {
      if (err instanceof TagstreamError) throw err
      const where = err instanceof YAMLParseError ? ` at line ${err.linePos?.[0].line}` : ''
      throw new TagstreamError(ErrorCodes.CONFIG_UNREADABLE, `config ${path} is not valid YAML${where}: ${(err as Error).message}`, { cause: err })
    }
  }
  const envOverrides = applyEnvOverrides(raw, env)
  const result = validateConfig(raw)
  if (result.config === undefined) {
    const list = result.issues.map((i) => `  ${i.key}: ${i.message}`).join('\n')
    throw new TagstreamError(ErrorCodes.CONFIG_INVALID, `invalid configuration${path ? ` in ${path}` : ''}:\n${list}`, {
      details: { issues: result.issues },
    })
  }
  return { config: deepFreeze(result.config), path, envOverrides }
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}
