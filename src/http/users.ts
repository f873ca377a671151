import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import type { ProfileSchema } from '../contracts/profile.js'
import { parseIsoTimestamp } from '../contracts/validate-event.js'
import { bearerGuard } from './auth.js'
import { errorResponses, HttpError, HttpErrorCodes } from './errors.js'
import type {} from './server.js'

export interface UsersPluginOptions {
  /** Bearer token the routes require; undefined: open. */
  readonly readToken?: string | undefined
}

const ParamsSchema = Type.Object({ userId: Type.String({ minLength: 1, maxLength: 256 }) })
const QuerySchema = Type.Object({
  asOf: Type.Optional(
    Type.String({
      minLength: 1,
      description: 'ISO-8601 date or date-time (no offset: UTC) at which time-relative views (recency, windows) are evaluated; default: the partition clock',
      examples: ['2025-03-01T00:00:00Z'],
    }),
  ),
})

/** Profile reads. */
export const usersPlugin: FastifyPluginAsyncTypebox<UsersPluginOptions> = async (app, options) => {
  const guard = bearerGuard(options.readToken, 'tagstream')
  if (guard !== undefined) app.addHook('onRequest', guard)
  const security = guard === undefined ? undefined : [{ bearerAuth: [] }]

  app.get(
    '/v1/users/:userId',
    {
      schema: {
        summary: "A user's profile",
        description: "The user's tags (value, since, version) and each operator's view of the user's state.",
        tags: ['users'],
        ...(security === undefined ? {} : { security }),
        params: ParamsSchema,
        querystring: QuerySchema,
        response: { 200: Type.Unsafe<Static<typeof ProfileSchema>>(Type.Ref('Profile')), ...errorResponses },
      },
    },
    async (request) => {
      const { userId } = request.params
      const { asOf } = request.query
      let asOfMs: number | undefined
      if (asOf !== undefined) {
        asOfMs = parseIsoTimestamp(asOf)
        if (Number.isNaN(asOfMs)) {
          throw new HttpError(400, HttpErrorCodes.BAD_REQUEST, `asOf must be an ISO-8601 date or date-time, got ${JSON.stringify(asOf)}`, {
            details: { field: 'asOf' },
          })
        }
      }
      if (!app.engine.ready) throw new HttpError(503, HttpErrorCodes.NOT_READY, 'the engine is not ready', { retriable: true })
      const profile = await app.engine.profile(userId, asOfMs)
      if (profile === undefined) throw new HttpError(404, HttpErrorCodes.NOT_FOUND, `no user ${JSON.stringify(userId)}`, { details: { userId } })
      return profile
    },
  )
}
