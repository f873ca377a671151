import { describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config/load.js'
import { isTagstreamError } from '../src/errors.js'
import { createLogger, silentLogger, type LogLevel } from '../src/log.js'

function capture(level?: LogLevel): { logger: ReturnType<typeof createLogger>; raw: string[] } {
  const raw: string[] = []
  const logger = createLogger({ ...(level ? { level } : {}), destination: { write: (s: string) => void raw.push(s) } })
  return { logger, raw }
}

describe('createLogger', () => {
  it('writes one JSON object per line: level name, ISO time, pid, fields, message', () => {
    const { logger, raw } = capture()
    logger.info({ partitions: 4, store: '/data/store' }, 'engine ready')
    expect(raw).toHaveLength(1)
    const line = raw[0] as string
    expect(line.endsWith('\n')).toBe(true)
    expect(line.indexOf('\n')).toBe(line.length - 1)
    const parsed = JSON.parse(line) as Record<string, unknown>
    expect(Object.keys(parsed)).toEqual(['level', 'time', 'pid', 'partitions', 'store', 'msg'])
    expect(parsed).toEqual({ level: 'info', time: parsed.time, pid: process.pid, partitions: 4, store: '/data/store', msg: 'engine ready' })
    expect(new Date(parsed.time as string).toISOString()).toBe(parsed.time)
  })

  it('defaults to info: debug lines are dropped, warn and above kept', () => {
    const { logger, raw } = capture()
    expect(logger.level).toBe('info')
    logger.debug('hidden')
    logger.trace('hidden')
    logger.warn('shown')
    logger.error('shown too')
    expect(raw.map((l) => (JSON.parse(l) as { level: string }).level)).toEqual(['warn', 'error'])
  })

  it('follows the configured level, including silent, and a level changed after creation', () => {
    const debug = capture('debug')
    debug.logger.debug({ url: '/v1/users/a' }, 'request completed')
    expect(JSON.parse(debug.raw[0] as string)).toEqual(expect.objectContaining({ level: 'debug', url: '/v1/users/a' }))
    const silent = capture('silent')
    silent.logger.fatal('nothing')
    expect(silent.raw).toEqual([])
    const later = capture()
    later.logger.level = 'error'
    later.logger.warn('dropped')
    later.logger.error('kept')
    expect(later.raw).toHaveLength(1)
    expect(silentLogger().isLevelEnabled('fatal')).toBe(false)
  })

  it('serializes errors under err with type, message, stack and their own fields', () => {
    const { logger, raw } = capture()
    const err = Object.assign(new Error('disk full'), { code: 'TS_ERR_SINK_FAILED' })
    logger.error({ err }, 'commit failed')
    const parsed = JSON.parse(raw[0] as string) as { err: Record<string, unknown> }
    expect(parsed.err.type).toBe('Error')
    expect(parsed.err.message).toBe('disk full')
    expect(parsed.err.code).toBe('TS_ERR_SINK_FAILED')
    expect(String(parsed.err.stack)).toContain('disk full')
  })
})

describe('log configuration', () => {
  it('defaults to level info and progress lines every 10 s', () => {
    expect(loadConfig(undefined, {}).config.log).toEqual({ level: 'info', progressIntervalMs: 10_000 })
  })

  it('takes the level from the environment (TAGSTREAM_LOG__LEVEL)', () => {
    const loaded = loadConfig(undefined, { TAGSTREAM_LOG__LEVEL: 'debug', TAGSTREAM_LOG__PROGRESS_INTERVAL_MS: '2500' })
    expect(loaded.config.log).toEqual({ level: 'debug', progressIntervalMs: 2500 })
    expect(loaded.envOverrides).toEqual(expect.arrayContaining(['log.level', 'log.progressIntervalMs']))
  })

  it('refuses an unknown level, naming the key', () => {
    let caught: unknown
    try {
      loadConfig(undefined, { TAGSTREAM_LOG__LEVEL: 'verbose' })
    } catch (err) {
      caught = err
    }
    expect(isTagstreamError(caught, 'TS_ERR_CONFIG_INVALID')).toBe(true)
    const issues = (caught as { details: { issues: { key: string }[] } }).details.issues
    expect(issues.map((i) => i.key)).toEqual(['log.level'])
  })
})
