import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { TagValue } from '../contracts/tag-change.js'
import type { RulePreview } from '../engine/engine.js'
import { ErrorCodes, isTagstreamError } from '../errors.js'
import {
  PublishRequestSchema,
  RetireRequestSchema,
  TagDefinitionInputSchema,
  TagVersionSchema,
  type TagVersion,
} from '../tags/catalog-schema.js'
import type { TagCatalog } from '../tags/catalog.js'
import { TagStatusSchema as CatalogStatusSchema } from '../config/schema.js'
import { bearerGuard } from './auth.js'
import { errorResponses, HttpError, HttpErrorCodes } from './errors.js'
import type {} from './server.js'

/** What the catalog routes need of the engine besides the ServiceEngine reads. */
export interface CatalogEngine {
  preview(expression: string, options?: { sample?: number; maxValues?: number }): Promise<RulePreview>
  testingCoverage(tag: string): { value: TagValue; users: number }[]
  definitionPasses(): { tag: string; lane: string; version: number | null; mode: 'announce' | 'silent'; partitionsDone: number; partitions: number }[]
}

export interface CatalogPluginOptions {
  readonly catalog: TagCatalog
  readonly engine: CatalogEngine
  /** Bearer token of the reads (GET); undefined: open. */
  readonly readToken?: string | undefined
  /** Bearer token of the changes (PUT, publish, retire, transition, preview); undefined: open. */
  readonly manageToken?: string | undefined
}

const TagValueRef = Type.Unsafe<TagValue>(Type.Ref('TagValue'))
const TagParams = Type.Object({ tagId: Type.String({ minLength: 1, maxLength: 128 }) })
const Coverage = Type.Object({
  users: Type.Integer({ description: 'Users with any value' }),
  values: Type.Array(Type.Object({ value: TagValueRef, users: Type.Integer() })),
})
const Pass = Type.Object({
  tag: Type.String(),
  lane: Type.String({ description: '<tag> for the online version, <tag>~testing for the testing one' }),
  version: Type.Union([Type.Integer(), Type.Null()], { description: 'null: the lane is being removed (retire)' }),
  mode: Type.Union([Type.Literal('announce'), Type.Literal('silent')]),
  partitionsDone: Type.Integer(),
  partitions: Type.Integer(),
})
const TagDetail = Type.Object({
  tag: TagVersionSchema,
  versions: Type.Array(TagVersionSchema),
  coverage: Coverage,
  testingCoverage: Type.Optional(Coverage),
  passes: Type.Array(Pass, { description: 'Re-evaluations of the stored users in progress for this tag' }),
})
const ChangeResponse = Type.Object({
  tag: TagVersionSchema,
  outcome: Type.Optional(Type.String()),
  passes: Type.Array(Pass),
})
/** A definition as PUT to /v1/tags/:tagId: the id comes from the path. */
const DefinitionBody = Type.Omit(TagDefinitionInputSchema, ['id', 'status'])

function coverageOf(values: { value: TagValue; users: number }[]) {
  return { users: values.reduce((n, v) => n + v.users, 0), values }
}

/** Catalog refusals as HTTP: not found 404, invalid 400, conflicts (transition, version) 409. */
function catalogError(err: unknown): never {
  if (isTagstreamError(err)) {
    const details = (err as { details?: Record<string, unknown> }).details
    const opts = details === undefined ? {} : { details }
    if (err.code === ErrorCodes.TAG_NOT_FOUND) throw new HttpError(404, err.code, err.message, opts)
    if (err.code === ErrorCodes.TAG_INVALID) throw new HttpError(400, err.code, err.message, opts)
    if (err.code === ErrorCodes.TAG_TRANSITION || err.code === ErrorCodes.TAG_VERSION_CONFLICT) throw new HttpError(409, err.code, err.message, opts)
  }
  throw err
}

/**
 * Tag management: the catalog (definitions, versions, category tree), publication and retirement
 * with their re-evaluation passes, and dry-run previews of candidate rules. Changes take effect in
 * the running engine without a restart; a publication answers once the version is stored, and the
 * pass that re-evaluates the stored users shows in `passes` until it is done.
 */
export const catalogPlugin: FastifyPluginAsyncTypebox<CatalogPluginOptions> = async (app, options) => {
  const { catalog, engine } = options
  const readGuard = bearerGuard(options.readToken, 'tagstream')
  const manageGuard = bearerGuard(options.manageToken, 'tagstream')
  const readSecurity = readGuard === undefined ? {} : { security: [{ bearerAuth: [] }] }
  const manageSecurity = manageGuard === undefined ? {} : { security: [{ bearerAuth: [] }] }
  const readHooks = readGuard === undefined ? {} : { onRequest: readGuard }
  const manageHooks = manageGuard === undefined ? {} : { onRequest: manageGuard }
  const passesOf = (id: string) => engine.definitionPasses().filter((p) => p.tag === id)
  // The engine installs a catalog change between batches; the pass list shows it from then on.
  const settle = () => new Promise((r) => setTimeout(r, 0))

  app.get(
    '/v1/tags',
    {
      ...readHooks,
      schema: {
        summary: 'The tag catalog: the current version of every tag',
        tags: ['tags'],
        ...readSecurity,
        querystring: Type.Object({
          category: Type.Optional(Type.String({ description: 'Category path prefix, e.g. value/customer' })),
          status: Type.Optional(CatalogStatusSchema),
          kind: Type.Optional(Type.Union([Type.Literal('fact'), Type.Literal('model'), Type.Literal('strategy')])),
        }),
        response: {
          200: Type.Object({
            tags: Type.Array(Type.Intersect([TagVersionSchema, Type.Object({ users: Type.Integer({ description: 'Users with the tag now' }) })])),
            tree: Type.Array(Type.Unknown(), { description: 'The category tree with tag counts' }),
            advice: Type.Array(Type.Object({ key: Type.String(), message: Type.String() })),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { category, status, kind } = request.query
      const tags = catalog.list({ ...(category !== undefined ? { category } : {}), ...(status ? { status } : {}), ...(kind ? { kind } : {}) })
      return {
        tags: tags.map((t: TagVersion) => ({ ...t, users: coverageOf(app.engine.coverage(t.id)).users })),
        tree: catalog.tree() as unknown[],
        advice: catalog.lint(),
      }
    },
  )

  app.get(
    '/v1/tags/:tagId',
    {
      ...readHooks,
      schema: {
        summary: 'A tag: its definition, every version, coverage and value distribution',
        tags: ['tags'],
        ...readSecurity,
        params: TagParams,
        response: { 200: TagDetail, ...errorResponses },
      },
    },
    async (request) => {
      const { tagId } = request.params
      let tag: TagVersion
      let versions: readonly TagVersion[]
      try {
        tag = catalog.get(tagId)
        versions = catalog.versions(tagId)
      } catch (err) {
        catalogError(err)
      }
      const testing = versions.some((v) => v.status === 'testing') ? { testingCoverage: coverageOf(engine.testingCoverage(tagId)) } : {}
      return { tag, versions: [...versions], coverage: coverageOf(app.engine.coverage(tagId)), ...testing, passes: passesOf(tagId) }
    },
  )

  app.put(
    '/v1/tags/:tagId',
    {
      ...manageHooks,
      schema: {
        summary: 'Define a tag: create it, edit its draft, or make a new version of it',
        description:
          'A changed definition of a tag whose latest version is not a draft becomes a new draft version. Pass `version` (the version the edit is based on) for optimistic concurrency: 409 when another edit came first. A rule that does not compile is refused with its position.',
        tags: ['tags'],
        ...manageSecurity,
        params: TagParams,
        body: DefinitionBody,
        querystring: Type.Object({ by: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })) }),
        response: { 200: ChangeResponse, 201: ChangeResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { tagId } = request.params
      try {
        const by = request.query.by
        const result = await catalog.define({ ...request.body, id: tagId }, by === undefined ? {} : { by })
        reply.code(result.outcome === 'created' || result.outcome === 'versioned' ? 201 : 200)
        return { tag: result.tag, outcome: result.outcome, passes: passesOf(tagId) }
      } catch (err) {
        catalogError(err)
      }
    },
  )

  app.post(
    '/v1/tags/:tagId/transition',
    {
      ...manageHooks,
      schema: {
        summary: 'Move a version along draft -> testing -> online -> offline (testing starts shadow evaluation)',
        tags: ['tags'],
        ...manageSecurity,
        params: TagParams,
        body: Type.Object(
          { version: Type.Integer({ minimum: 1 }), to: CatalogStatusSchema, mode: Type.Optional(PublishRequestSchema.properties.mode), by: Type.Optional(Type.String({ minLength: 1 })) },
          { additionalProperties: false },
        ),
        response: { 200: ChangeResponse, ...errorResponses },
      },
    },
    async (request) => {
      const { tagId } = request.params
      const { version, to, mode, by } = request.body
      try {
        const tag = await catalog.transition(tagId, version, to, { ...(mode ? { mode } : {}), ...(by ? { by } : {}) })
        await settle()
        return { tag, passes: passesOf(tagId) }
      } catch (err) {
        catalogError(err)
      }
    },
  )

  app.post(
    '/v1/tags/:tagId/publish',
    {
      ...manageHooks,
      schema: {
        summary: 'Put a version online; stored users are re-evaluated without stopping ingestion',
        description:
          'mode announce: users who match at publication get `entered` (or `changed`) events with cause `definition`; silent: they are enrolled without events. The version online before goes offline.',
        tags: ['tags'],
        ...manageSecurity,
        params: TagParams,
        body: PublishRequestSchema,
        response: { 200: ChangeResponse, ...errorResponses },
      },
    },
    async (request) => {
      const { tagId } = request.params
      const { version, mode, by } = request.body
      try {
        const tag = await catalog.publish(tagId, version, mode, by)
        await settle()
        return { tag, passes: passesOf(tagId) }
      } catch (err) {
        catalogError(err)
      }
    },
  )

  app.post(
    '/v1/tags/:tagId/retire',
    {
      ...manageHooks,
      schema: {
        summary: 'Take the online version offline; members leave the tag',
        description: 'mode announce: members get `left` events with cause `definition`; silent: they are dropped without events.',
        tags: ['tags'],
        ...manageSecurity,
        params: TagParams,
        body: RetireRequestSchema,
        response: { 200: ChangeResponse, ...errorResponses },
      },
    },
    async (request) => {
      const { tagId } = request.params
      try {
        const tag = await catalog.retire(tagId, request.body.mode, request.body.by)
        await settle()
        return { tag, passes: passesOf(tagId) }
      } catch (err) {
        catalogError(err)
      }
    },
  )

  app.post(
    '/v1/tags/preview',
    {
      ...manageHooks,
      schema: {
        summary: 'Dry run of a candidate rule over every stored user; changes nothing',
        description: 'How many users match, a sample of their ids, and the distribution of values. A rule that does not compile gets 400 with its position.',
        tags: ['tags'],
        ...manageSecurity,
        body: Type.Object(
          {
            rule: Type.String({ minLength: 1, maxLength: 10_000 }),
            sample: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, default: 20 })),
            maxValues: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 20 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            expression: Type.String(),
            resultType: Type.String(),
            users: Type.Integer(),
            matched: Type.Integer(),
            sample: Type.Array(Type.String()),
            values: Type.Array(Type.Object({ value: Type.Union([Type.String(), Type.Number(), Type.Boolean()]), users: Type.Integer() })),
            errors: Type.Record(Type.String(), Type.Integer()),
            elapsedMs: Type.Integer(),
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      if (!app.engine.ready) throw new HttpError(503, HttpErrorCodes.NOT_READY, 'the engine is not ready', { retriable: true })
      const { rule, sample, maxValues } = request.body
      try {
        const result = await engine.preview(rule, { sample: sample ?? 20, maxValues: maxValues ?? 20 })
        return { ...result, sample: [...result.sample], values: [...result.values] }
      } catch (err) {
        catalogError(err)
      }
    },
  )
}
