import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { TagChangeWire, TagValue } from '../contracts/tag-change.js'
import { bearerGuard } from './auth.js'
import { errorResponses, HttpError, HttpErrorCodes } from './errors.js'
import type {} from './server.js'

export interface TagsPluginOptions {
  /** Bearer token the routes require; undefined: open. */
  readonly readToken?: string | undefined
}

// Shared schemas are registered at the root (server.ts) and referenced by $id, never inlined twice.
const TagValueRef = Type.Unsafe<TagValue>(Type.Ref('TagValue'))
const TagChangeRef = Type.Unsafe<TagChangeWire>(Type.Ref('TagChange'))

const TagParams = Type.Object({ tagId: Type.String({ minLength: 1, maxLength: 128 }) })
const UserParams = Type.Object({ userId: Type.String({ minLength: 1, maxLength: 256 }) })

const CoverageResponse = Type.Object({
  tag: Type.String(),
  users: Type.Integer({ description: 'Users with any value of the tag' }),
  values: Type.Array(Type.Object({ value: TagValueRef, users: Type.Integer() })),
})

const MembersResponse = Type.Object({
  tag: Type.String(),
  users: Type.Array(Type.Object({ userId: Type.String(), value: TagValueRef })),
  cursor: Type.Optional(Type.String({ description: 'Pass back as ?cursor= for the next page; absent on the last page' })),
})

const HistoryResponse = Type.Object({ userId: Type.String(), changes: Type.Array(TagChangeRef) })

/** Segment membership, tag coverage and user history: reads of what the last commit stored. */
export const tagsPlugin: FastifyPluginAsyncTypebox<TagsPluginOptions> = async (app, options) => {
  const guard = bearerGuard(options.readToken, 'tagstream')
  if (guard !== undefined) app.addHook('onRequest', guard)
  const security = guard === undefined ? {} : { security: [{ bearerAuth: [] }] }
  const ready = (): void => {
    if (!app.engine.ready) throw new HttpError(503, HttpErrorCodes.NOT_READY, 'the engine is not ready', { retriable: true })
  }

  app.get(
    '/v1/tags/:tagId/coverage',
    {
      schema: {
        summary: 'How many users have each value of a tag',
        tags: ['tags'],
        ...security,
        params: TagParams,
        response: { 200: CoverageResponse, ...errorResponses },
      },
    },
    async (request) => {
      ready()
      const values = app.engine.coverage(request.params.tagId)
      return { tag: request.params.tagId, users: values.reduce((n, v) => n + v.users, 0), values }
    },
  )

  app.get(
    '/v1/tags/:tagId/users',
    {
      schema: {
        summary: 'Users with a tag (segment membership), paged',
        description: 'All users with the tag, or with `value`. Consistent with the stored tags after every commit.',
        tags: ['tags'],
        ...security,
        params: TagParams,
        querystring: Type.Object({
          value: Type.Optional(Type.String({ description: 'The value, as text (numbers and booleans as they print)' })),
          cursor: Type.Optional(Type.String()),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 100 })),
        }),
        response: { 200: MembersResponse, ...errorResponses },
      },
    },
    async (request) => {
      ready()
      const { tagId } = request.params
      const { value, cursor, limit } = request.query
      // A query string is text: find the typed value it names among the tag's values.
      let typed: TagValue | undefined
      if (value !== undefined) typed = app.engine.coverage(tagId).find((c) => String(c.value) === value)?.value ?? value
      let page
      try {
        page = await app.engine.members(tagId, { ...(typed !== undefined ? { value: typed } : {}), ...(cursor ? { cursor } : {}), limit: limit ?? 100 })
      } catch (err) {
        throw new HttpError(400, HttpErrorCodes.BAD_REQUEST, (err as Error).message, { details: { field: 'cursor' } })
      }
      return { tag: tagId, users: [...page.users], ...(page.cursor !== undefined ? { cursor: page.cursor } : {}) }
    },
  )

  app.get(
    '/v1/users/:userId/history',
    {
      schema: {
        summary: "A user's last tag changes, newest first",
        description: 'Why did this user get that message: the changes with their causes and evidence.',
        tags: ['users'],
        ...security,
        params: UserParams,
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })) }),
        response: { 200: HistoryResponse, ...errorResponses },
      },
    },
    async (request) => {
      ready()
      const { userId } = request.params
      const changes = await app.engine.history(userId, request.query.limit)
      return { userId, changes }
    },
  )
}
