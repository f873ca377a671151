import { readFileSync } from 'node:fs'
import { Value } from '@sinclair/typebox/value'
import { Packr } from 'msgpackr'
import { parse as parseYaml, YAMLParseError } from 'yaml'
import { ErrorCodes, TagstreamError } from '../errors.js'
import {
  DEFAULT_REENTRY,
  TagsFileSchema,
  schemaIssues,
  validateDefinition,
  type PublishMode,
  type RuleValidator,
  type TagDefinitionInput,
  type TagIssue,
  type TagKind,
  type TagStatus,
  type TagVersion,
  type TransitionRecord,
} from './catalog-schema.js'

/**
 * The tag catalog (DESIGN.md, Tags; issue 4): every version of every tag definition, its lifecycle
 * and its publication. The HTTP API calls these operations; the engine subscribes with `onChange`
 * to apply a publication without restart.
 *
 * Lifecycle (TAG_TRANSITIONS):
 *   draft   -> testing            evaluated and counted, not emitted
 *   testing -> draft              back to editing (only the latest version: a newer one is the draft)
 *   testing -> online             publish (mode required); the version online before goes offline
 *   testing -> offline            abandon a tested version without publishing it
 *   online  -> offline            retire (mode required)
 *   offline -> online             re-publish, e.g. roll back to an earlier version (mode required)
 * Refused: online -> testing/draft (members would silently stop being emitted: retire instead, then
 * publish), draft -> online (a version is tested before it goes online), offline -> draft/testing
 * (a published or abandoned version is history: define a new version instead).
 * At most one version of a tag is online. Only a draft changes in place; a changed definition of a
 * non-draft latest version becomes version + 1, a draft.
 */

/** Stable codes of the catalog's refusals (defined with every other code in errors.ts). */
export const TagErrorCodes = {
  TAG_INVALID: ErrorCodes.TAG_INVALID,
  TAG_NOT_FOUND: ErrorCodes.TAG_NOT_FOUND,
  TAG_TRANSITION: ErrorCodes.TAG_TRANSITION,
  TAG_VERSION_CONFLICT: ErrorCodes.TAG_VERSION_CONFLICT,
} as const

export type TagErrorCode = (typeof TagErrorCodes)[keyof typeof TagErrorCodes]

export const TAG_TRANSITIONS: Readonly<Record<TagStatus, readonly TagStatus[]>> = Object.freeze({
  draft: ['testing'],
  testing: ['draft', 'online', 'offline'],
  online: ['offline'],
  offline: ['online'],
})

export const CATALOG_PREFIX = 'g!cat!'

/** `g!cat!<tagId>!<version, 8 digits>`: versions of a tag sort together and in order. */
export function catalogKey(id: string, version: number): string {
  return `${CATALOG_PREFIX}${id}!${version.toString().padStart(8, '0')}`
}

/** Every catalog key ('"' is the character after '!'). */
export const CATALOG_RANGE = Object.freeze({ gte: CATALOG_PREFIX, lt: 'g!cat"' })

function tagError(code: TagErrorCode, message: string, details: Record<string, unknown>): TagstreamError {
  return new TagstreamError(code, message, { details })
}

function invalid(message: string, issues: TagIssue[], extra: Record<string, unknown> = {}): TagstreamError {
  const list = issues.map((i) => `  ${i.key}: ${i.message}`).join('\n')
  return tagError(TagErrorCodes.TAG_INVALID, `${message}:\n${list}`, { ...extra, issues })
}

// ---------------------------------------------------------------------------------------------
// Storage

export interface StoredCatalog {
  readonly versions: readonly TagVersion[]
}

/** Where the catalog keeps its versions. `save` writes the given versions (new or replaced) atomically. */
export interface CatalogStorage {
  load(): Promise<StoredCatalog>
  save(changes: readonly TagVersion[]): Promise<void>
}

export class MemoryCatalogStorage implements CatalogStorage {
  private readonly entries = new Map<string, TagVersion>()

  async load(): Promise<StoredCatalog> {
    const keys = [...this.entries.keys()].sort()
    return { versions: keys.map((k) => structuredClone(this.entries.get(k) as TagVersion)) }
  }

  async save(changes: readonly TagVersion[]): Promise<void> {
    for (const v of changes) this.entries.set(catalogKey(v.id, v.version), structuredClone(v))
  }
}

/** The subset of classic-level the catalog needs (a `ClassicLevel<string, Buffer>` fits). */
export interface CatalogLevelDb {
  get(key: string): Promise<Buffer | undefined>
  put(key: string, value: Buffer): Promise<void>
  batch(operations: Array<{ type: 'put'; key: string; value: Buffer }>): Promise<void>
  iterator(options: { gte: string; lt: string }): AsyncIterable<[string, Buffer]>
}

/** The catalog in the engine's LevelDB, under the global `g!cat!` prefix; values are msgpack. */
export class LevelCatalogStorage implements CatalogStorage {
  private readonly packr = new Packr({ useRecords: false, mapsAsObjects: true })

  constructor(private readonly db: CatalogLevelDb) {}

  async load(): Promise<StoredCatalog> {
    const versions: TagVersion[] = []
    for await (const [, value] of this.db.iterator({ ...CATALOG_RANGE })) versions.push(this.packr.unpack(value) as TagVersion)
    return { versions }
  }

  async save(changes: readonly TagVersion[]): Promise<void> {
    if (changes.length === 0) return
    const ops = changes.map((v) => ({ type: 'put' as const, key: catalogKey(v.id, v.version), value: this.packr.pack(v) }))
    const [only] = ops
    if (ops.length === 1 && only !== undefined) await this.db.put(only.key, only.value)
    else await this.db.batch(ops)
  }
}

// ---------------------------------------------------------------------------------------------
// Catalog

/**
 * What the engine is told after a change is stored.
 * - `defined`: a new version (a draft), or a draft edited in place; nothing to evaluate yet.
 * - `status`: a version changed status. `to: 'testing'` starts shadow evaluation; `from: 'testing'`
 *   to draft/offline stops it; `to: 'online'` installs the version (and uninstalls `supersedes`,
 *   the version that was online before, now offline) and re-evaluates stored users, emitting
 *   `entered` (cause definition) when `mode` is announce, enrolling silently otherwise;
 *   `from: 'online', to: 'offline'` removes the tag, emitting `left` when `mode` is announce.
 * - `loaded`: versions inserted or replaced from the tags file.
 */
export type CatalogChange =
  | { readonly type: 'defined'; readonly tag: TagVersion; readonly previous: TagVersion | undefined }
  | {
      readonly type: 'status'
      readonly tag: TagVersion
      readonly from: TagStatus
      readonly to: TagStatus
      readonly mode: PublishMode | undefined
      readonly supersedes: TagVersion | undefined
    }
  | { readonly type: 'loaded'; readonly tags: readonly TagVersion[] }

export type CatalogListener = (change: CatalogChange) => void

export interface TagCatalogOptions {
  /** The rule compiler's check (CEL): its positions become `details.issues[].position`. */
  validateRule?: RuleValidator
  /** Wall clock in ms (timestamps). */
  now?: () => number
  /** Where a listener's exception goes (the change is stored by then). Default: a process warning. */
  onListenerError?: (err: unknown, change: CatalogChange) => void
}

export interface DefineResult {
  readonly tag: TagVersion
  /** created: a new tag (version 1); versioned: a new version; updated: a draft edited; unchanged. */
  readonly outcome: 'created' | 'versioned' | 'updated' | 'unchanged'
}

export interface ListFilter {
  /** A category path prefix: `['value', 'rfm']` or `'value/rfm'`. */
  category?: readonly string[] | string
  status?: TagStatus
  kind?: TagKind
}

export interface CategoryNode {
  readonly name: string
  readonly path: readonly string[]
  /** Tags in this node and below. */
  readonly count: number
  /** Tags placed directly in this node (a leaf category), sorted. */
  readonly tags: readonly string[]
  readonly children: readonly CategoryNode[]
}

export interface LoadReport {
  readonly inserted: readonly TagVersion[]
  readonly replaced: readonly TagVersion[]
  /** Entries whose stored version won (a non-draft differing from the file), and similar notes. */
  readonly warnings: readonly TagIssue[]
}

export const LEAF_MIN_TAGS = 3
export const LEAF_MAX_TAGS = 20

type Content = Pick<TagVersion, 'name' | 'description' | 'owner' | 'category' | 'kind' | 'valueType' | 'rule' | 'reentry'>

function contentOf(def: TagDefinitionInput | TagVersion): Content {
  const c: Content = {
    name: def.name,
    description: def.description,
    owner: def.owner,
    category: [...def.category],
    kind: def.kind,
    valueType: def.valueType,
    reentry: structuredClone(def.reentry ?? DEFAULT_REENTRY),
  }
  if (def.rule !== undefined) c.rule = def.rule
  return c
}

function sameContent(a: Content, b: Content): boolean {
  return JSON.stringify(contentOf(a as TagVersion)) === JSON.stringify(contentOf(b as TagVersion))
}

function categoryMatches(category: readonly string[], prefix: readonly string[]): boolean {
  return prefix.every((seg, i) => category[i] === seg)
}

export class TagCatalog {
  /** Versions per tag id, ascending by version. */
  private readonly tags = new Map<string, TagVersion[]>()
  private readonly listeners = new Set<CatalogListener>()
  private chain: Promise<unknown> = Promise.resolve()
  private readonly now: () => number

  private constructor(
    private readonly storage: CatalogStorage,
    private readonly options: TagCatalogOptions,
  ) {
    this.now = options.now ?? Date.now
  }

  /** Opens the catalog over a storage, reading every stored version. */
  static async open(storage: CatalogStorage, options: TagCatalogOptions = {}): Promise<TagCatalog> {
    const catalog = new TagCatalog(storage, options)
    const stored = await storage.load()
    for (const v of stored.versions) catalog.put(v)
    return catalog
  }

  // ---- reads -------------------------------------------------------------------------------

  /** The current version: the online one, else the latest. With `version`, that version. */
  get(id: string, version?: number): TagVersion {
    const versions = this.tags.get(id)
    if (versions === undefined) throw tagError(TagErrorCodes.TAG_NOT_FOUND, `no tag "${id}"`, { id })
    if (version === undefined) return this.current(versions)
    const found = versions.find((v) => v.version === version)
    if (found === undefined) throw tagError(TagErrorCodes.TAG_NOT_FOUND, `tag "${id}" has no version ${version}`, { id, version })
    return found
  }

  has(id: string): boolean {
    return this.tags.has(id)
  }

  /** Every version of a tag, oldest first. */
  versions(id: string): readonly TagVersion[] {
    const versions = this.tags.get(id)
    if (versions === undefined) throw tagError(TagErrorCodes.TAG_NOT_FOUND, `no tag "${id}"`, { id })
    return [...versions]
  }

  /** The current version of every tag (see `get`) that passes the filter, sorted by id. */
  list(filter: ListFilter = {}): TagVersion[] {
    const prefix = typeof filter.category === 'string' ? filter.category.split('/').filter((s) => s !== '') : filter.category
    const out: TagVersion[] = []
    for (const versions of this.tags.values()) {
      const t = this.current(versions)
      if (prefix !== undefined && !categoryMatches(t.category, prefix)) continue
      if (filter.status !== undefined && t.status !== filter.status) continue
      if (filter.kind !== undefined && t.kind !== filter.kind) continue
      out.push(t)
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  /** What the engine evaluates: every online version (emitted) and every testing version (counted). */
  evaluated(): { online: TagVersion[]; testing: TagVersion[] } {
    const online: TagVersion[] = []
    const testing: TagVersion[] = []
    for (const versions of this.tags.values()) {
      for (const v of versions) {
        if (v.status === 'online') online.push(v)
        else if (v.status === 'testing') testing.push(v)
      }
    }
    const byKey = (a: TagVersion, b: TagVersion) => (a.id === b.id ? a.version - b.version : a.id < b.id ? -1 : 1)
    return { online: online.sort(byKey), testing: testing.sort(byKey) }
  }

  /** The category tree of the current versions, with tag counts; children sorted by name. */
  tree(): CategoryNode[] {
    interface Mut {
      name: string
      path: string[]
      count: number
      tags: string[]
      children: Map<string, Mut>
    }
    const root: Mut = { name: '', path: [], count: 0, tags: [], children: new Map() }
    for (const t of this.list()) {
      let node = root
      for (const seg of t.category) {
        let child = node.children.get(seg)
        if (child === undefined) {
          child = { name: seg, path: [...node.path, seg], count: 0, tags: [], children: new Map() }
          node.children.set(seg, child)
        }
        child.count++
        node = child
      }
      node.tags.push(t.id)
    }
    const freeze = (n: Mut): CategoryNode => ({
      name: n.name,
      path: n.path,
      count: n.count,
      tags: [...n.tags].sort(),
      children: [...n.children.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map(freeze),
    })
    return freeze(root).children as CategoryNode[]
  }

  /** Advice, not refusals: leaf categories outside the 3-20 tags the seeds suggest. */
  lint(): TagIssue[] {
    const out: TagIssue[] = []
    const walk = (nodes: readonly CategoryNode[]) => {
      for (const n of nodes) {
        const k = n.tags.length
        if (k > 0 && (k < LEAF_MIN_TAGS || k > LEAF_MAX_TAGS)) {
          out.push({
            key: `category ${n.path.join('/')}`,
            message: `leaf category has ${k} tag${k === 1 ? '' : 's'}; ${LEAF_MIN_TAGS} to ${LEAF_MAX_TAGS} per leaf keep the tree useful`,
          })
        }
        walk(n.children)
      }
    }
    walk(this.tree())
    return out
  }

  onChange(listener: CatalogListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  // ---- writes ------------------------------------------------------------------------------

  /**
   * Creates a tag (version 1, draft), edits its draft in place, or makes a changed definition of a
   * non-draft latest version into version + 1 (a draft). `def.version`, when given, is the version
   * the edit was based on: anything but the latest is a conflict.
   */
  define(def: unknown, options: { by?: string } = {}): Promise<DefineResult> {
    return this.exclusive(async () => {
      const issues = validateDefinition(def, this.ruleOption())
      const input = def as TagDefinitionInput
      if (issues.length === 0 && input.status !== undefined) {
        issues.push({ key: 'status', message: 'status changes through transition, publish and retire' })
      }
      if (issues.length > 0) {
        const id = typeof (def as { id?: unknown })?.id === 'string' ? (def as { id: string }).id : undefined
        throw invalid(`tag definition${id === undefined ? '' : ` "${id}"`} is invalid`, issues, { id })
      }
      const versions = this.tags.get(input.id)
      const latest = versions?.[versions.length - 1]
      if (input.version !== undefined && input.version !== latest?.version) {
        throw tagError(
          TagErrorCodes.TAG_VERSION_CONFLICT,
          latest === undefined
            ? `tag "${input.id}" does not exist: omit version to create it`
            : `tag "${input.id}" is at version ${latest.version}, the edit was based on version ${input.version}`,
          { id: input.id, expected: input.version, latest: latest?.version ?? null },
        )
      }
      if (latest !== undefined && latest.kind !== input.kind) {
        throw invalid(`tag definition "${input.id}" is invalid`, [{ key: 'kind', message: `the kind of a tag cannot change (it is ${latest.kind})` }], {
          id: input.id,
        })
      }
      const content = contentOf(input)
      const at = this.iso()
      if (latest !== undefined && sameContent(latest, content)) return { tag: latest, outcome: 'unchanged' }
      let tag: TagVersion
      let outcome: DefineResult['outcome']
      if (latest === undefined) {
        tag = { id: input.id, ...content, version: 1, status: 'draft', createdAt: at, updatedAt: at, transitions: [] }
        outcome = 'created'
      } else if (latest.status === 'draft') {
        tag = { ...latest, ...content, updatedAt: at }
        if (content.rule === undefined) delete tag.rule
        outcome = 'updated'
      } else {
        tag = { id: input.id, ...content, version: latest.version + 1, status: 'draft', createdAt: at, updatedAt: at, transitions: [] }
        outcome = 'versioned'
      }
      if (options.by !== undefined && outcome !== 'updated') tag.transitions = [{ to: 'draft', at, by: options.by }]
      await this.storage.save([tag])
      this.put(tag)
      this.emit({ type: 'defined', tag, previous: outcome === 'updated' ? latest : undefined })
      return { tag, outcome }
    })
  }

  /**
   * Moves a version along the lifecycle (see the module comment). Going online, or offline from
   * online, needs `mode`: whether members get `entered` / `left` events or not.
   */
  transition(id: string, version: number, to: TagStatus, options: { mode?: PublishMode; by?: string } = {}): Promise<TagVersion> {
    return this.exclusive(async () => this.doTransition(id, version, to, options))
  }

  /** Puts a version online (from testing, or from offline to roll back); the online version before goes offline. */
  publish(id: string, version: number, mode: PublishMode, by?: string): Promise<TagVersion> {
    return this.transition(id, version, 'online', by === undefined ? { mode } : { mode, by })
  }

  /** Takes the online version of a tag offline. */
  retire(id: string, mode: PublishMode, by?: string): Promise<TagVersion> {
    return this.exclusive(async () => {
      const versions = this.tags.get(id)
      if (versions === undefined) throw tagError(TagErrorCodes.TAG_NOT_FOUND, `no tag "${id}"`, { id })
      const online = versions.find((v) => v.status === 'online')
      if (online === undefined) {
        throw tagError(TagErrorCodes.TAG_TRANSITION, `tag "${id}" has no online version to retire`, { id, from: null, to: 'offline' })
      }
      return this.doTransition(id, online.version, 'offline', by === undefined ? { mode } : { mode, by })
    })
  }

  /**
   * Reads `config/tags.yaml` and merges it with the stored versions (see `loadDefinitions`).
   * Unreadable or unparsable: TS_ERR_CONFIG_UNREADABLE; an invalid entry: TS_ERR_TAG_INVALID.
   */
  loadFile(path: string): Promise<LoadReport> {
    let raw: unknown
    try {
      raw = parseYaml(readFileSync(path, 'utf8')) as unknown
    } catch (err) {
      const where = err instanceof YAMLParseError ? ` at line ${err.linePos?.[0].line}` : ''
      return Promise.reject(
        new TagstreamError(ErrorCodes.CONFIG_UNREADABLE, `tags file ${path} cannot be read${where}: ${(err as Error).message}`, {
          cause: err,
          details: { file: path },
        }),
      )
    }
    return this.loadDefinitions(raw ?? {}, path)
  }

  /**
   * Validates every entry of a tags file (all or nothing; keys like `tags[3].category`) and merges:
   * a tag or version not stored is inserted with the file's status (default draft); a stored
   * draft is replaced by the file's entry (the file wins for drafts); a stored non-draft version
   * is kept (its status changed through the API) and a differing file entry is reported as a
   * warning; stored versions the file does not name are kept.
   */
  loadDefinitions(raw: unknown, source = 'config/tags.yaml'): Promise<LoadReport> {
    return this.exclusive(async () => {
      // An empty file is an empty catalog: `tags` defaults to [].
      const file = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? Value.Default(TagsFileSchema, { ...raw }) : raw
      const issues = schemaIssues(TagsFileSchema, file)
      if (issues.length > 0) throw invalid(`tags file ${source} is invalid`, issues, { file: source })
      const entries = (file as { tags: unknown[] }).tags
      const seen = new Map<string, { kind: TagKind; index: number }>()
      const seenVersion = new Set<string>()
      const onlineIn = new Set<string>()
      // Rules may read tags defined in the same file.
      const pendingTags = entries.flatMap((e) => {
        const d = e as Partial<TagDefinitionInput> | null
        return typeof d?.id === 'string' && (d.valueType === 'string' || d.valueType === 'number' || d.valueType === 'boolean') ? [{ id: d.id, valueType: d.valueType }] : []
      })
      entries.forEach((entry, i) => {
        const own = validateDefinition(entry, { prefix: `tags[${i}]`, ...this.ruleOption(), pendingTags })
        issues.push(...own)
        if (own.length > 0) return
        const def = entry as TagDefinitionInput
        const version = def.version ?? 1
        if (seenVersion.has(`${def.id}@${version}`)) {
          issues.push({ key: `tags[${i}].version`, message: `version ${version} of "${def.id}" is defined twice` })
        }
        seenVersion.add(`${def.id}@${version}`)
        const kind = seen.get(def.id)?.kind ?? this.tags.get(def.id)?.[0]?.kind
        if (kind !== undefined && kind !== def.kind) issues.push({ key: `tags[${i}].kind`, message: `the kind of a tag cannot change (it is ${kind})` })
        if (!seen.has(def.id)) seen.set(def.id, { kind: def.kind, index: i })
        if (def.status === 'online') {
          if (onlineIn.has(def.id)) issues.push({ key: `tags[${i}].status`, message: `another version of "${def.id}" is online in this file` })
          onlineIn.add(def.id)
        }
      })
      if (issues.length > 0) throw invalid(`tags file ${source} is invalid`, issues, { file: source })

      const at = this.iso()
      const inserted: TagVersion[] = []
      const replaced: TagVersion[] = []
      const warnings: TagIssue[] = []
      const changes = new Map<string, TagVersion>()
      const versionsOf = (id: string): TagVersion[] =>
        [...(this.tags.get(id) ?? []).map((v) => changes.get(catalogKey(v.id, v.version)) ?? v), ...inserted.filter((v) => v.id === id)]
      entries.forEach((entry, i) => {
        const def = entry as TagDefinitionInput
        const version = def.version ?? 1
        const status = def.status ?? 'draft'
        const stored = this.tags.get(def.id)?.find((v) => v.version === version)
        const content = contentOf(def)
        if (stored !== undefined && stored.status !== 'draft') {
          if (!sameContent(stored, content) || status !== stored.status) {
            warnings.push({
              key: `tags[${i}]`,
              message: `version ${version} of "${def.id}" is stored as ${stored.status} and kept; define a new version to change it`,
            })
          }
          return
        }
        if (stored !== undefined && sameContent(stored, content) && status === 'draft') return
        let finalStatus = status
        let supersede: TagVersion | undefined
        if (status === 'online') {
          const other = versionsOf(def.id).find((v) => v.status === 'online' && v.version !== version)
          if (other !== undefined && other.version > version) {
            warnings.push({ key: `tags[${i}].status`, message: `version ${other.version} of "${def.id}" is online: version ${version} is loaded offline` })
            finalStatus = 'offline'
          } else supersede = other
        }
        const record: TransitionRecord[] = finalStatus === 'draft' ? [] : [{ from: 'draft', to: finalStatus, at, by: source }]
        const tag: TagVersion = {
          id: def.id,
          ...content,
          version,
          status: finalStatus,
          createdAt: stored?.createdAt ?? at,
          updatedAt: at,
          transitions: [...(stored?.transitions ?? []), ...record],
        }
        if (finalStatus === 'online') tag.publishedBy = source
        if (stored === undefined) inserted.push(tag)
        else {
          replaced.push(tag)
          changes.set(catalogKey(tag.id, tag.version), tag)
        }
        if (supersede !== undefined) {
          const off: TagVersion = {
            ...supersede,
            status: 'offline',
            updatedAt: at,
            transitions: [...supersede.transitions, { from: 'online', to: 'offline', at, by: source, supersededBy: version }],
          }
          const idx = inserted.indexOf(supersede)
          if (idx >= 0) inserted[idx] = off
          else {
            if (!replaced.includes(supersede)) replaced.push(off)
            else replaced[replaced.indexOf(supersede)] = off
            changes.set(catalogKey(off.id, off.version), off)
          }
        }
      })
      const all = [...inserted, ...replaced]
      await this.storage.save(all)
      for (const v of all) this.put(v)
      if (all.length > 0) this.emit({ type: 'loaded', tags: all })
      return { inserted, replaced, warnings }
    })
  }

  // ---- internals ---------------------------------------------------------------------------

  private async doTransition(id: string, version: number, to: TagStatus, options: { mode?: PublishMode; by?: string }): Promise<TagVersion> {
    const tag = this.get(id, version)
    const from = tag.status
    if (!TAG_TRANSITIONS[from].includes(to)) {
      const allowed = TAG_TRANSITIONS[from]
      throw tagError(
        TagErrorCodes.TAG_TRANSITION,
        `version ${version} of tag "${id}" cannot go from ${from} to ${to} (from ${from}: ${allowed.join(', ')})`,
        { id, version, from, to, allowed: [...allowed] },
      )
    }
    const versions = this.tags.get(id) as TagVersion[]
    const latest = versions[versions.length - 1] as TagVersion
    if (to === 'draft' && latest.version !== version) {
      throw tagError(
        TagErrorCodes.TAG_TRANSITION,
        `version ${version} of tag "${id}" cannot go back to draft: version ${latest.version} is newer (edit that one)`,
        { id, version, from, to, latest: latest.version },
      )
    }
    const needsMode = to === 'online' || from === 'online'
    if (needsMode && options.mode === undefined) {
      throw invalid(`${to === 'online' ? 'publishing' : 'retiring'} version ${version} of tag "${id}" needs a mode`, [
        { key: 'mode', message: 'announce (members get events with cause definition) or silent' },
      ])
    }
    if (to !== 'draft' && tag.kind === 'strategy' && tag.rule !== undefined && this.options.validateRule !== undefined && to !== 'offline') {
      // The compiler may have grown stricter since the draft was written: check before evaluating.
      const issues: TagIssue[] = this.options.validateRule(tag.rule).map(({ message, line, column, offset }) => ({
        key: 'rule',
        message: `${message} (line ${line}, column ${column})`,
        position: { line, column, offset },
      }))
      if (issues.length > 0) throw invalid(`version ${version} of tag "${id}" no longer validates`, issues, { id, version })
    }
    const at = this.iso()
    const record: TransitionRecord = { from, to, at }
    if (options.by !== undefined) record.by = options.by
    if (needsMode && options.mode !== undefined) record.mode = options.mode
    const next: TagVersion = { ...tag, status: to, updatedAt: at, transitions: [...tag.transitions, record] }
    if (to === 'online' && options.by !== undefined) next.publishedBy = options.by
    const changes = [next]
    let superseded: TagVersion | undefined
    if (to === 'online') {
      const before = versions.find((v) => v.status === 'online' && v.version !== version)
      if (before !== undefined) {
        const rec: TransitionRecord = { from: 'online', to: 'offline', at, supersededBy: version }
        if (options.by !== undefined) rec.by = options.by
        if (options.mode !== undefined) rec.mode = options.mode
        superseded = { ...before, status: 'offline', updatedAt: at, transitions: [...before.transitions, rec] }
        changes.push(superseded)
      }
    }
    await this.storage.save(changes)
    for (const v of changes) this.put(v)
    this.emit({ type: 'status', tag: next, from, to, mode: needsMode ? options.mode : undefined, supersedes: superseded })
    return next
  }

  private ruleOption(): { validateRule?: RuleValidator } {
    return this.options.validateRule === undefined ? {} : { validateRule: this.options.validateRule }
  }

  private current(versions: readonly TagVersion[]): TagVersion {
    return versions.find((v) => v.status === 'online') ?? (versions[versions.length - 1] as TagVersion)
  }

  private put(v: TagVersion): void {
    const versions = this.tags.get(v.id)
    if (versions === undefined) {
      this.tags.set(v.id, [v])
      return
    }
    const i = versions.findIndex((x) => x.version === v.version)
    if (i >= 0) versions[i] = v
    else {
      versions.push(v)
      versions.sort((a, b) => a.version - b.version)
    }
  }

  private emit(change: CatalogChange): void {
    for (const l of this.listeners) {
      try {
        l(change)
      } catch (err) {
        if (this.options.onListenerError !== undefined) this.options.onListenerError(err, change)
        else process.emitWarning(`tag catalog listener failed: ${(err as Error).message}`)
      }
    }
  }

  private iso(): string {
    return new Date(this.now()).toISOString()
  }

  /** Operations run one at a time: two defines must not both make version n + 1. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn)
    this.chain = run.catch(() => undefined)
    return run
  }
}
