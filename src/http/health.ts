import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { errorResponses, HttpError, HttpErrorCodes } from './errors.js'
import type {} from './server.js'

const StatusSchema = Type.Object({ status: Type.String() }, { additionalProperties: false })

/** Liveness and readiness: `/healthz` answers while the process serves; `/readyz` once the engine is ready. */
export const healthPlugin: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness',
        description: 'Answers 200 while the process serves requests.',
        tags: ['operations'],
        response: { 200: StatusSchema, ...errorResponses },
      },
    },
    async () => ({ status: 'ok' }),
  )
  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Readiness',
        description: 'Answers 200 once the store is open and clocks and positions are restored; 503 `TS_ERR_NOT_READY` before that and while stopping.',
        tags: ['operations'],
        response: { 200: StatusSchema, ...errorResponses },
      },
    },
    async () => {
      if (!app.engine.ready) throw new HttpError(503, HttpErrorCodes.NOT_READY, 'the engine is not ready')
      return { status: 'ready' }
    },
  )
}
