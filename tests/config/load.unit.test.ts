import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { applyEnvOverrides, loadConfig, pointerToKey, validateConfig } from '../../src/config/load.js'
import { ErrorCodes, isTagstreamError } from '../../src/errors.js'

function issuesOf(raw: unknown): { key: string; message: string }[] {
  return validateConfig(raw).issues
}

describe('configuration', () => {
  it('fills every default from an empty config', () => {
    const { config } = validateConfig({})
    expect(config?.engine.batchSize).toBe(4096)
    expect(config?.engine.syncWrites).toBe(true)
    expect(config?.sinks.deadLetter).toEqual({ type: 'ndjson-file', fsync: true })
    expect(config?.sinks.tagChanges).toEqual([{ type: 'ndjson-file', fsync: true }])
    expect(config?.timeZone).toBe('UTC')
  })

  it('names the offending key', () => {
    expect(issuesOf({ engine: { batchSize: 0 } })).toContainEqual(expect.objectContaining({ key: 'engine.batchSize' }))
    expect(issuesOf({ engine: { batchSzie: 10 } })[0]?.key).toBe('engine.batchSzie')
    expect(issuesOf({ timeZone: 'Mars/Olympus' })).toEqual([{ key: 'timeZone', message: 'unknown IANA time zone "Mars/Olympus"' }])
    expect(issuesOf({ sources: [{ name: 'a', type: 'file' }] })).toEqual([{ key: 'sources[0].path', message: 'Expected required property' }, { key: 'sources[0].path', message: 'Expected string' }])
    expect(issuesOf({ sources: [{ name: 'a', type: 'kafkaa' }] })).toEqual([{ key: 'sources[0]', message: 'unknown type "kafkaa"' }])
  })

  it('refuses duplicate names and operators without exactly one of type/module', () => {
    const keys = issuesOf({
      sources: [
        { name: 'a', type: 'file', path: 'x' },
        { name: 'a', type: 'file', path: 'y' },
      ],
      operators: [{ name: 'x' }, { name: 'y', type: 'fact', module: './m.js' }],
    }).map((i) => i.key)
    expect(keys).toEqual(['sources[1].name', 'operators[0]', 'operators[1]'])
  })

  it('applies environment overrides with camelCase levels', () => {
    const raw: Record<string, unknown> = { engine: { batchSize: 10 } }
    const applied = applyEnvOverrides(raw, {
      TAGSTREAM_ENGINE__BATCH_SIZE: '8192',
      TAGSTREAM_TIME_ZONE: 'Europe/Berlin',
      TAGSTREAM_ENGINE__SYNC_WRITES: 'false',
      OTHER: 'x',
    })
    expect(applied.sort()).toEqual(['engine.batchSize', 'engine.syncWrites', 'timeZone'])
    expect(raw).toEqual({ engine: { batchSize: 8192, syncWrites: false }, timeZone: 'Europe/Berlin' })
  })

  it('loads YAML, freezes it, and reports unreadable files with a stable code', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-config-'))
    const good = join(dir, 'good.yaml')
    writeFileSync(good, 'engine:\n  batchSize: 100\n')
    const loaded = loadConfig(good, {})
    expect(loaded.config.engine.batchSize).toBe(100)
    expect(Object.isFrozen(loaded.config.engine)).toBe(true)

    const bad = join(dir, 'bad.yaml')
    writeFileSync(bad, 'engine: [1, 2\n')
    expect(() => loadConfig(bad, {})).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG_UNREADABLE }))

    const invalid = join(dir, 'invalid.yaml')
    writeFileSync(invalid, 'engine:\n  commitIntervalMs: -1\n')
    try {
      loadConfig(invalid, {})
      expect.unreachable()
    } catch (err) {
      expect(isTagstreamError(err, ErrorCodes.CONFIG_INVALID)).toBe(true)
      expect((err as Error).message).toContain('engine.commitIntervalMs')
    }
  })

  it('the shipped configurations are valid', () => {
    for (const file of ['config/tagstream.yaml', 'config/examples/file-replay.yaml']) {
      expect(() => loadConfig(file, {}), file).not.toThrow()
    }
  })

  it('turns JSON pointers into keys', () => {
    expect(pointerToKey('/sources/0/fields/userId')).toBe('sources[0].fields.userId')
    expect(pointerToKey('')).toBe('(root)')
  })
})
