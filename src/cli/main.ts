#!/usr/bin/env node
import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { loadConfig } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { parseIsoTimestamp } from '../contracts/validate-event.js'
import { ProfileReader } from '../engine/profiles.js'
import { createOperators } from '../engine/operators.js'
import { ErrorCodes, TagstreamError, isTagstreamError } from '../errors.js'
import { createLogger, stderrDestination } from '../log.js'
import { Operations, ProgressReporter, TerminalStatus } from '../progress.js'
import { openCatalog, openRuntime, storePath, type Runtime } from '../runtime.js'
import { FileSource } from '../sources/file-source.js'
import { MemoryCatalogStorage } from '../tags/catalog.js'
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
  tagstream generate --brokers HOST:PORT --topic T [-X key=value]... [same options]
                                                     produce it to a Kafka topic, a record per message,
                                                     keyed by userId (-X: librdkafka producer properties)

--config defaults to ${DEFAULT_CONFIG} when it exists, else built-in defaults.
Environment overrides: TAGSTREAM_<KEY>__<SUBKEY>=value (e.g. TAGSTREAM_ENGINE__BATCH_SIZE=8192).
Logs: JSON lines on stderr, level from log.level (TAGSTREAM_LOG__LEVEL=debug); stdout carries results only.
`

/**
 * On a terminal, log lines and the progress bar share stderr through one status line; otherwise
 * logs are plain JSON lines. The level is `info` until the configuration says otherwise.
 */
const terminal = process.stderr.isTTY ? new TerminalStatus(process.stderr) : undefined
const logger = createLogger({ destination: terminal ?? stderrDestination() })

function configFrom(path: string | undefined): Readonly<Config> {
  const chosen = path ?? (existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : undefined)
  const loaded = loadConfig(chosen)
  logger.level = loaded.config.log.level
  logger.debug({ path: loaded.path ?? null, envOverrides: loaded.envOverrides }, 'configuration loaded')
  return loaded.config
}

function progressFor(config: Readonly<Config>): ProgressReporter {
  return new ProgressReporter({ logger, ...(terminal ? { terminal } : {}), logIntervalMs: config.log.progressIntervalMs })
}

/**
 * Stops the runtime on SIGTERM/SIGINT: intake stops, the batch finishes and commits; bounded in
 * time. Listening starts before the runtime opens (a store open or a restore can take seconds), so
 * a signal during start-up stops the process cleanly right after it, instead of killing it.
 */
function onSignals(): { readonly signalled: boolean; attach(runtime: Runtime): void } {
  let runtime: Runtime | undefined
  let pending: NodeJS.Signals | undefined
  const state = {
    signalled: false,
    attach(r: Runtime): void {
      runtime = r
      if (pending !== undefined) stop(r, pending)
    },
  }
  const stop = (r: Runtime, signal: NodeJS.Signals): void => {
    const timeoutMs = r.config.engine.shutdownTimeoutMs
    logger.info({ signal, timeoutMs }, 'signal received, finishing the batch and committing')
    const timeout = setTimeout(() => {
      logger.error({ signal, timeoutMs }, 'shutdown took longer than the timeout, exiting without the last commit')
      process.exit(1)
    }, timeoutMs)
    timeout.unref()
    void r.stop()
  }
  const handler = (signal: NodeJS.Signals) => {
    if (state.signalled) {
      logger.warn({ signal }, 'second signal, exiting now without the last commit')
      process.exit(130)
    }
    state.signalled = true
    if (runtime === undefined) {
      pending = signal
      logger.info({ signal }, 'signal received while starting; stopping once started')
    } else stop(runtime, signal)
  }
  process.on('SIGTERM', handler)
  process.on('SIGINT', handler)
  return state
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
    usersRescoredFromProjections: s.usersRescoredFromProjections,
    sweepStepMs: Math.round(s.sweepStepMs),
    lastSweepMs: s.lastSweepMs,
    seconds: Number(seconds.toFixed(3)),
    eventsPerSecond: Math.round(s.recordsIn / Math.max(seconds, 1e-9)),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
  }
}

async function cmdRun(values: { config?: string }): Promise<void> {
  const config = configFrom(values.config)
  const signals = onSignals()
  const runtime = await openRuntime(config, { live: true, logger, progress: progressFor(config) })
  signals.attach(runtime)
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
  const url = address && typeof address === 'object' ? `http://${address.address}:${address.port}` : undefined
  logger.info(
    { store: runtime.store.path, ...(url ? { url, docs: `${url}/docs`, metrics: `${url}/metrics` } : {}) },
    `running${url ? `; API on ${url} (/docs, /metrics)` : ''}; Ctrl-C to stop`,
  )
  await engine.run({ untilEnd: false })
  await runtime.close()
  logger.info('stopped cleanly')
}

async function cmdReplay(files: string[], values: { config?: string }): Promise<void> {
  if (files.length === 0) throw new TagstreamError(ErrorCodes.USAGE, 'replay needs at least one FILE')
  for (const f of files) {
    if (!existsSync(f)) throw new TagstreamError(ErrorCodes.USAGE, `no such file: ${f}`)
  }
  const startedAt = Date.now()
  const config = configFrom(values.config)
  const signals = onSignals()
  const runtime = await openRuntime(config, { live: false, replayFiles: files, logger, progress: progressFor(config) })
  signals.attach(runtime)
  // Progress in bytes of the files, read at each sample from the sources' positions (a resumed
  // replay starts part-way).
  const readers = runtime.sources.filter((s): s is FileSource => s instanceof FileSource)
  const replay = runtime.progress.start(Operations.REPLAY, {
    unit: 'bytes',
    total: readers.reduce((n, r) => n + r.bytesTotal, 0),
    done: () => readers.reduce((n, r) => n + r.bytesRead, 0),
    fields: { files: files.length },
  })
  try {
    await runtime.engine.run({ untilEnd: true })
  } catch (err) {
    replay.finish('failed')
    throw err
  }
  replay.finish(signals.signalled ? 'stopped' : 'completed')
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
      logger.warn({ userId }, 'no profile for this user')
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
  const operators = await createOperators(config)
  // The tags file too: every definition, and every rule against the configured operators' views.
  const warnings: string[] = []
  const catalog = await openCatalog(config, new MemoryCatalogStorage(), operators, (w) => warnings.push(w))
  const tags = catalog.list().length
  process.stdout.write(JSON.stringify({ valid: true, tags, warnings: [...warnings, ...catalog.lint().map((i) => `${i.key}: ${i.message}`)], config }, null, 2) + '\n')
}

async function cmdGenerate(values: Record<string, string | boolean | string[] | undefined>): Promise<void> {
  const { out, brokers, topic } = values
  const toKafka = brokers !== undefined || topic !== undefined
  if (toKafka && out !== undefined) throw new TagstreamError(ErrorCodes.USAGE, 'generate writes to --out FILE or to --brokers and --topic, not both')
  if (toKafka && (typeof brokers !== 'string' || typeof topic !== 'string')) throw new TagstreamError(ErrorCodes.USAGE, 'generate to Kafka needs both --brokers HOST:PORT and --topic T')
  if (!toKafka && typeof out !== 'string') throw new TagstreamError(ErrorCodes.USAGE, 'generate needs --out FILE, or --brokers HOST:PORT and --topic T')
  const num = (k: string, d: number) => {
    const v = values[k]
    if (v === undefined) return d
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) throw new TagstreamError(ErrorCodes.USAGE, `--${k} must be a number`)
    return n
  }
  const format = values.format ?? 'ndjson'
  if (format !== 'ndjson' && format !== 'msgpack') throw new TagstreamError(ErrorCodes.USAGE, `--format must be ndjson or msgpack, got "${String(format)}"`)
  const workload = {
    seed: num('seed', 42),
    users: num('users', 10_000),
    events: num('events', 100_000),
    days: num('days', 120),
    duplicateRatio: num('duplicate-ratio', 0.01),
    lateRatio: num('late-ratio', 0.01),
    invalidRatio: num('invalid-ratio', 0),
  }
  if (toKafka) {
    const librdkafka: Record<string, string> = {}
    for (const setting of (values.X as string[] | undefined) ?? []) {
      const eq = setting.indexOf('=')
      if (eq <= 0) throw new TagstreamError(ErrorCodes.USAGE, `-X takes key=value (a librdkafka property), got "${setting}"`)
      librdkafka[setting.slice(0, eq)] = setting.slice(eq + 1)
    }
    // Loaded only here: the other commands never need the native Kafka client.
    const { produceWorkload } = await import('../workload/kafka-producer.js')
    const result = await produceWorkload({ brokers: brokers as string, topic: topic as string, format, librdkafka }, workload)
    process.stdout.write(JSON.stringify(result) + '\n')
    return
  }
  const write = format === 'msgpack' ? writeMsgpackFile : writeNdjsonFile
  const result = await write(out as string, workload)
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
      brokers: { type: 'string' },
      topic: { type: 'string' },
      X: { type: 'string', short: 'X', multiple: true },
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
  terminal?.clear()
  if (isTagstreamError(err)) {
    // `error` carries the stable code and the details (e.g. the config keys at fault) for machines.
    const error = typeof err.toJSON === 'function' ? err.toJSON() : { code: err.code, message: err.message }
    logger.fatal({ error }, err.message)
    process.exit(err.code === ErrorCodes.USAGE || err.code === ErrorCodes.CONFIG_INVALID || err.code === ErrorCodes.OPERATOR_CONFIG_INVALID || err.code === ErrorCodes.TAG_INVALID ? 2 : 1)
  }
  logger.fatal({ err }, `unexpected error: ${(err as Error).message ?? String(err)}`)
  process.exit(1)
})
