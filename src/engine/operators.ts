import { existsSync } from 'node:fs'
import { isAbsolute, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Value } from '@sinclair/typebox/value'
import { ErrorCodes, TagstreamError } from '../errors.js'
import { pointerToKey } from '../config/load.js'
import type { Config, OperatorEntry } from '../config/schema.js'
import type { Operator, OperatorFactory } from '../operator-api.js'

/** Directory of the built-in operators (`operators/` next to `src/`, in source or compiled form). */
const BUILTIN_DIR = fileURLToPath(new URL('../../operators/', import.meta.url))

async function importFactory(specifier: string, where: string): Promise<OperatorFactory> {
  let mod: { default?: OperatorFactory }
  try {
    mod = (await import(specifier)) as { default?: OperatorFactory }
  } catch (err) {
    throw new TagstreamError(ErrorCodes.OPERATOR_NOT_FOUND, `cannot load operator ${where}: ${(err as Error).message}`, { cause: err })
  }
  const factory = mod.default
  if (factory === undefined || typeof factory.create !== 'function' || factory.configSchema === undefined) {
    throw new TagstreamError(ErrorCodes.OPERATOR_NOT_FOUND, `operator ${where} has no default export made with defineOperator()`)
  }
  return factory
}

export async function loadOperatorFactory(entry: OperatorEntry, index: number): Promise<OperatorFactory> {
  if (entry.module !== undefined) {
    const path = isAbsolute(entry.module) ? entry.module : resolve(process.cwd(), entry.module)
    return importFactory(pathToFileURL(path).href, `operators[${index}].module "${entry.module}"`)
  }
  const type = entry.type as string
  if (!/^[a-z][a-z0-9-]*$/.test(type)) {
    throw new TagstreamError(ErrorCodes.OPERATOR_NOT_FOUND, `operators[${index}].type "${type}" is not a built-in operator name`)
  }
  // Compiled code has operators/<type>.js; running from sources (vitest, tsx) has <type>.ts.
  const js = resolve(BUILTIN_DIR, `${type}.js`)
  const file = existsSync(js) ? js : resolve(BUILTIN_DIR, `${type}.ts`)
  if (!existsSync(file)) {
    throw new TagstreamError(ErrorCodes.OPERATOR_NOT_FOUND, `operators[${index}].type "${type}": no built-in operator of that type in operators/`, {
      details: { issues: [{ key: `operators[${index}].type`, message: `unknown operator type "${type}"` }] },
    })
  }
  return importFactory(pathToFileURL(file).href, `operators[${index}].type "${type}"`)
}

/** Validates each operator's own config against its schema (defaults applied) and creates the instances. */
export async function createOperators(config: Readonly<Config>): Promise<Operator[]> {
  const operators: Operator[] = []
  for (const [index, entry] of config.operators.entries()) {
    const factory = await loadOperatorFactory(entry, index)
    const opConfig = Value.Default(factory.configSchema, Value.Clone(entry.config ?? {}))
    const issues = [...Value.Errors(factory.configSchema, opConfig)].map((e) => ({
      key: `operators[${index}].config${e.path === '' ? '' : '.' + pointerToKey(e.path)}`,
      message: e.message,
    }))
    if (issues.length > 0) {
      throw new TagstreamError(
        ErrorCodes.OPERATOR_CONFIG_INVALID,
        `invalid config for operator "${entry.name}":\n${issues.map((i) => `  ${i.key}: ${i.message}`).join('\n')}`,
        { details: { issues } },
      )
    }
    operators.push(factory.create(entry.name, opConfig, { timeZone: config.timeZone }) as Operator)
  }
  const tagOwners = new Map<string, string>()
  for (const op of operators) {
    for (const tag of op.tags) {
      const owner = tagOwners.get(tag.id)
      if (owner !== undefined) {
        throw new TagstreamError(ErrorCodes.CONFIG_INVALID, `tag "${tag.id}" is derived by both operators "${owner}" and "${op.name}"`)
      }
      tagOwners.set(tag.id, op.name)
    }
  }
  return operators
}
