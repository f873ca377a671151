#!/usr/bin/env node
import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { loadConfig } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { parseIsoTimestamp } from '../contracts/validate-event.js'
import { ProfileReader } from '../engine/profiles.js'
import { createOperators } from '../engine/operators.js'
import { ErrorCodes, TagstreamError, isTagstreamError } from '../errors.js'
import { openRuntime, storePath, type Runtime } from '../runtime.js'
import { writeMsgpackFile, writeNdjsonFile } from '../workload/generator.js'

const DEFAULT_CONFIG = 'config/tagstream.yaml'

const USAGE = `tagstream: real-time user tags

Usage:
  tagstream run [--config FILE]                      run the engine as a service
  tagstream replay FILE... [--config FILE]           process NDJSON files to their end, commit, print a summary
  tagstream profile USER_ID [--as-of ISO] [--config FILE]
                                                     print a user's profile as JSON
  tagstream profile --all [--config FILE]            every stored profile, one JSON line each
  tagstream validate-config [--config FILE]          check a configuration and print it with defaults
  tagstream generate --out FILE [--events N] [--users N] [--seed N] [--days N] [--format ndjson|msgpack]
                                                     write a deterministic workload as NDJSON, or as
                                                     length-prefixed msgpack records (4-byte big-endian length)

--config defaults to ${DEFAULT_CONFIG} when it exists, else built-in defaults.
Environment overrides: TAGSTREAM_<KEY>__<SUBKEY>=value (e.g. TAGSTREAM_ENGINE__BATCH_SIZE=8192).
`

function configFrom(path: string | undefined): Readonly<Config> {
  const chosen = path ?? (existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : undefined)
  return loadConfig(chosen).config
}

/** Stops the runtime on SIGTERM/SIGINT: intake stops, the batch finishes and commits; bounded in time. */
function onSignals(runtime: Runtime): void {
  let signalled = false
  const handler = (signal: NodeJS.Signals) => {
    if (signalled) {
      process.stderr.write(`tagstream: second ${signal}, exiting now\n`)
      process.exit(130)
    }
    signalled = true
    process.stderr.write(`tagstream: ${signal} received, finishing the batch and committing\n`)
    const timeout = setTimeout(() => {
      process.stderr.write(`tagstream: shutdown took longer than ${runtime.config.engine.shutdownTimeoutMs} ms, exiting without the last commit\n`)
      process.exit(1)
    }, runtime.config.engine.shutdownTimeoutMs)
    timeout.unref()
    void runtime.stop()
  }
  process.on('SIGTERM', handler)
  process.on('SIGINT', handler)
}

function summary(runtime: Runtime, startedAt: number): Record<string, unknown> {
  const s = runtime.engine.stats
  const seconds = (Date.now() - startedAt) / 1000
  const invalid = Object.values(s.invalid).reduce((a, b) => a + b, 0)
  return {
    records: s.recordsIn,
    eventsApplied: s.eventsApplied,
    invalid,
    invalidByReason: Object.fromEntries(Object.entries(s.invalid).filter(([, n]) => n > 0)),
    duplicates: s.duplicates,
    tagChanges: s.tagChanges,
    timersFired: s.timersFired,
    users: runtime.engine.userCount,
    commits: s.commits,
    sweeps: s.sweepsCompleted,
    usersRescored: s.usersRescored,
    lastSweepMs: s.lastSweepMs,
    seconds: Number(seconds.toFixed(3)),
    eventsPerSecond: Math.round(s.recordsIn / Math.max(seconds, 1e-9)),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
  }
}

async function cmdRun(values: { config?: string }): Promise<void> {
  const runtime = await openRuntime(configFrom(values.config), { live: true })
  onSignals(runtime)
  const engine = runtime.engine
  runtime.stdout?.start(() => {
    const s = engine.stats
    return {
      events: s.recordsIn,
      invalid: Object.values(s.invalid).reduce((a, b) => a + b, 0),
      duplicates: s.duplicates,
      users: engine.userCount,
      tagChanges: s.tagChanges,
    }
  })
  const address = runtime.http?.server.address()
  const api = address && typeof address === 'object' ? `; API on http://${address.address}:${address.port} (/docs, /metrics)` : ''
  process.stderr.write(`tagstream: running, store ${runtime.store.path}${api}; Ctrl-C to stop\n`)
  await engine.run({ untilEnd: false })
  await runtime.close()
  process.stderr.write('tagstream: stopped cleanly\n')
}

async function cmdReplay(files: string[], values: { config?: string }): Promise<void> {
  if (files.length === 0) throw new TagstreamError(ErrorCodes.USAGE, 'replay needs at least one FILE')
  for (const f of files) {
    if (!existsSync(f)) throw new TagstreamError(ErrorCodes.USAGE, `no such file: ${f}`)
  }
  const startedAt = Date.now()
  const runtime = await openRuntime(configFrom(values.config), { live: false, replayFiles: files })
  onSignals(runtime)
  await runtime.engine.run({ untilEnd: true })
  const result = summary(runtime, startedAt)
  await runtime.close()
  process.stdout.write(JSON.stringify(result) + '\n')
}

async function cmdProfile(userId: string | undefined, values: { config?: string; all?: boolean; 'as-of'?: string }): Promise<void> {
  const config = configFrom(values.config)
  let asOf: number | undefined
  if (values['as-of'] !== undefined) {
    asOf = parseIsoTimestamp(values['as-of'])
    if (Number.isNaN(asOf)) throw new TagstreamError(ErrorCodes.USAGE, `--as-of must be ISO-8601, got "${values['as-of']}"`)
  }
  if (!values.all && userId === undefined) throw new TagstreamError(ErrorCodes.USAGE, 'profile needs USER_ID or --all')
  const reader = await ProfileReader.open(config, storePath(config))
  try {
    if (values.all) {
      const lines: string[] = []
      for await (const profile of reader.all(asOf)) {
        lines.push(JSON.stringify(profile))
        if (lines.length >= 1000) {
          await writeOut(lines.join('\n') + '\n')
          lines.length = 0
        }
      }
      if (lines.length > 0) await writeOut(lines.join('\n') + '\n')
      return
    }
    const profile = await reader.get(userId as string, asOf)
    if (profile === undefined) {
      process.stderr.write(`tagstream: no profile for user "${userId}"\n`)
      process.exitCode = 3
      return
    }
    process.stdout.write(JSON.stringify(profile, null, 2) + '\n')
  } finally {
    await reader.close()
  }
}

function writeOut(text: string): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(text)) resolve()
    else process.stdout.once('drain', () => resolve())
  })
}

async function cmdValidate(values: { config?: string }): Promise<void> {
  const config = configFrom(values.config)
  await createOperators(config)
  process.stdout.write(JSON.stringify({ valid: true, config }, null, 2) + '\n')
}

async function cmdGenerate(values: Record<string, string | boolean | undefined>): Promise<void> {
  const out = values.out
  if (typeof out !== 'string') throw new TagstreamError(ErrorCodes.USAGE, 'generate needs --out FILE')
  const num = (k: string, d: number) => {
    const v = values[k]
    if (v === undefined) return d
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) throw new TagstreamError(ErrorCodes.USAGE, `--${k} must be a number`)
    return n
  }
  const format = values.format ?? 'ndjson'
  if (format !== 'ndjson' && format !== 'msgpack') throw new TagstreamError(ErrorCodes.USAGE, `--format must be ndjson or msgpack, got "${String(format)}"`)
  const write = format === 'msgpack' ? writeMsgpackFile : writeNdjsonFile
  const result = await write(out, {
    seed: num('seed', 42),
    users: num('users', 10_000),
    events: num('events', 100_000),
    days: num('days', 120),
    duplicateRatio: num('duplicate-ratio', 0.01),
    lateRatio: num('late-ratio', 0.01),
    invalidRatio: num('invalid-ratio', 0),
  })
  process.stdout.write(JSON.stringify(result) + '\n')
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      all: { type: 'boolean' },
      'as-of': { type: 'string' },
      out: { type: 'string' },
      events: { type: 'string' },
      users: { type: 'string' },
      seed: { type: 'string' },
      days: { type: 'string' },
      'duplicate-ratio': { type: 'string' },
      'late-ratio': { type: 'string' },
      'invalid-ratio': { type: 'string' },
      format: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help || command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(USAGE)
    return
  }
  switch (command) {
    case 'run':
      return cmdRun(values)
    case 'replay':
      return cmdReplay(positionals, values)
    case 'profile':
      return cmdProfile(positionals[0], values)
    case 'validate-config':
      return cmdValidate(values)
    case 'generate':
      return cmdGenerate(values)
    default:
      throw new TagstreamError(ErrorCodes.USAGE, `unknown command "${command}"\n\n${USAGE}`)
  }
}

// `tagstream profile --all | head` closes the pipe early: that is the reader being done, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0)
  throw err
})

main(process.argv.slice(2)).catch((err: unknown) => {
  if (isTagstreamError(err)) {
    process.stderr.write(`tagstream: ${err.message}\n`)
    process.stderr.write(JSON.stringify({ error: err.toJSON() }) + '\n')
    process.exit(err.code === ErrorCodes.USAGE || err.code === ErrorCodes.CONFIG_INVALID || err.code === ErrorCodes.OPERATOR_CONFIG_INVALID ? 2 : 1)
  }
  process.stderr.write(`tagstream: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
