import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { stringify } from 'yaml'
import { beforeAll, describe, expect, it } from 'vitest'
import { assertBuilt, runCli, writeConfig } from '../support/cli.js'

const tag = (id: string, extra: Record<string, unknown>) => ({
  id,
  name: id,
  description: id,
  owner: 'tests',
  category: ['test', 'rules'],
  kind: 'strategy',
  valueType: 'boolean',
  ...extra,
})

describe('validate-config checks the tags file against the configured operators', () => {
  beforeAll(assertBuilt)

  it('accepts the shipped configuration and counts its tags', async () => {
    const r = await runCli(['validate-config', '--config', 'config/tagstream.yaml'])
    expect(r.code).toBe(0)
    const out = JSON.parse(r.stdout) as { valid: boolean; tags: number }
    expect(out.valid).toBe(true)
    expect(out.tags).toBeGreaterThanOrEqual(10)
  })

  it('refuses a rule reading a field no operator has, naming the entry and the position', async () => {
    const { configPath } = writeConfig()
    const tagsPath = join(dirname(configPath), 'tags.yaml')
    writeFileSync(tagsPath, stringify({ tags: [tag('ok', { rule: 'purchases.total >= 2' }), tag('bad', { rule: 'purchases.total >= 2 && views.totl > 1' })] }))
    writeConfig({ catalog: { file: tagsPath } }, dirname(configPath))
    const r = await runCli(['validate-config', '--config', configPath])
    expect(r.code).toBe(2)
    const err = JSON.parse(r.stderr.trim().split('\n').pop() as string) as { error: { code: string; issues: { key: string; position: { column: number } }[] } }
    expect(err.error.code).toBe('TS_ERR_TAG_INVALID')
    expect(err.error.issues).toHaveLength(1)
    expect(err.error.issues[0]).toMatchObject({ key: 'tags[1].rule', position: { line: 1, column: 31 } })
  })
})
