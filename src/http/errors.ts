import { Type, type Static } from '@sinclair/typebox'
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify'
import fp from 'fastify-plugin'
import { isTagstreamError, type ErrorCode } from '../errors.js'

/**
 * Stable codes of the HTTP surface, beside the core ones in `src/errors.ts` (same `TS_ERR_` prefix,
 * so `isTagstreamError` classifies both). Every error answer has the shape of `ErrorResponseSchema`.
 */
export const HttpErrorCodes = {
  /** The request does not match the route's schema (query, params), or its body is empty. */
  BAD_REQUEST: 'TS_ERR_BAD_REQUEST',
  /** A `application/json` body is not valid JSON (NDJSON lines are judged one by one instead). */
  MALFORMED_JSON: 'TS_ERR_MALFORMED_JSON',
  /** The route needs a bearer token and none, or a wrong one, was given. */
  UNAUTHORIZED: 'TS_ERR_UNAUTHORIZED',
  /** No such route, or no such user. */
  NOT_FOUND: 'TS_ERR_NOT_FOUND',
  /** The body is larger than `http.bodyLimitBytes`, or a batch has more records than the ingest queue holds. */
  PAYLOAD_TOO_LARGE: 'TS_ERR_PAYLOAD_TOO_LARGE',
  /** The body's content type is not one the route accepts. */
  UNSUPPORTED_MEDIA_TYPE: 'TS_ERR_UNSUPPORTED_MEDIA_TYPE',
  /** The ingest queue is full: nothing of the batch was taken; retry after `Retry-After` seconds. */
  SATURATED: 'TS_ERR_SATURATED',
  /** The engine is not open yet, or is shutting down. */
  NOT_READY: 'TS_ERR_NOT_READY',
  /** An unexpected failure; the details are in the server log, not in the answer. */
  INTERNAL: 'TS_ERR_INTERNAL',
} as const

export type HttpErrorCode = (typeof HttpErrorCodes)[keyof typeof HttpErrorCodes]

export const ErrorResponseSchema = Type.Object(
  {
    error: Type.Object(
      {
        code: Type.String({ pattern: '^TS_ERR_[A-Z_]+$', description: 'Stable, machine-readable code' }),
        message: Type.String(),
        details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      },
      { additionalProperties: false },
    ),
  },
  { $id: 'Error', additionalProperties: false, description: 'The one error shape of every route' },
)
export type ErrorResponse = Static<typeof ErrorResponseSchema>

/** Response schemas every route declares for its failures (shared schema `Error`). */
export const errorResponses = {
  '4xx': Type.Unsafe<ErrorResponse>(Type.Ref('Error', { description: 'Client error' })),
  '5xx': Type.Unsafe<ErrorResponse>(Type.Ref('Error', { description: 'Server error' })),
} as const

export interface HttpErrorOptions {
  readonly details?: Record<string, unknown>
  readonly headers?: Readonly<Record<string, string>>
  readonly retriable?: boolean
  readonly cause?: unknown
}

/** An error answered as `{ error: { code, message, details? } }` with its HTTP status. */
export class HttpError extends Error {
  /** One of `HttpErrorCodes`, or a core `ErrorCodes` value passed through. */
  readonly code: HttpErrorCode | ErrorCode
  readonly statusCode: number
  readonly details: Record<string, unknown> | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly retriable: boolean

  constructor(statusCode: number, code: HttpErrorCode | ErrorCode, message: string, options: HttpErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'HttpError'
    this.statusCode = statusCode
    this.code = code
    this.details = options.details
    this.headers = options.headers ?? {}
    this.retriable = options.retriable ?? false
  }
}

export function errorBody(code: string, message: string, details?: Record<string, unknown>): ErrorResponse {
  return { error: details === undefined ? { code, message } : { code, message, details } }
}

export function sendError(reply: FastifyReply, err: HttpError): FastifyReply {
  for (const [name, value] of Object.entries(err.headers)) reply.header(name, value)
  return reply.code(err.statusCode).send(errorBody(err.code, err.message, err.details))
}

/** fastify's own codes, mapped once to ours. */
const FASTIFY_CODES: Readonly<Record<string, HttpErrorCode>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: HttpErrorCodes.PAYLOAD_TOO_LARGE,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: HttpErrorCodes.UNSUPPORTED_MEDIA_TYPE,
  FST_ERR_CTP_INVALID_TYPE: HttpErrorCodes.UNSUPPORTED_MEDIA_TYPE,
  FST_ERR_CTP_EMPTY_JSON_BODY: HttpErrorCodes.BAD_REQUEST,
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: HttpErrorCodes.BAD_REQUEST,
  FST_ERR_CTP_INVALID_JSON_BODY: HttpErrorCodes.MALFORMED_JSON,
  FST_ERR_VALIDATION: HttpErrorCodes.BAD_REQUEST,
}

/** Maps anything thrown in a route (ours, fastify's, a core `TagstreamError`, a bug) to status and body. */
export function toHttpError(err: FastifyError | Error): HttpError {
  if (err instanceof HttpError) return err
  const fe = err as Partial<FastifyError>
  if (fe.validation !== undefined) {
    const issues = fe.validation.map((v) => ({ path: v.instancePath, message: v.message ?? 'invalid' }))
    return new HttpError(400, HttpErrorCodes.BAD_REQUEST, `invalid ${fe.validationContext ?? 'request'}: ${issues.map((i) => `${i.path || '/'} ${i.message}`).join('; ')}`, {
      details: { issues },
    })
  }
  const mapped = fe.code === undefined ? undefined : FASTIFY_CODES[fe.code]
  if (mapped !== undefined) return new HttpError(fe.statusCode ?? 400, mapped, err.message, { details: { cause: fe.code } })
  if (err instanceof SyntaxError && fe.statusCode === 400) return new HttpError(400, HttpErrorCodes.MALFORMED_JSON, err.message)
  const status = fe.statusCode
  if (status !== undefined && status >= 400 && status < 500) {
    return new HttpError(status, HttpErrorCodes.BAD_REQUEST, err.message, fe.code === undefined ? {} : { details: { cause: fe.code } })
  }
  if (isTagstreamError(err)) {
    // A core error (store unavailable, engine closed): its code is stable and worth passing on.
    const retriable = (err as { retriable?: unknown }).retriable === true
    return new HttpError(retriable ? 503 : 500, err.code, err.message, { retriable, cause: err })
  }
  return new HttpError(500, HttpErrorCodes.INTERNAL, 'internal error', { cause: err })
}

/**
 * The error and not-found handlers of the whole server (not encapsulated: registered first, every
 * route's failures come here), and the shared `Error` schema.
 */
export const errorsPlugin = fp(
  async function errors(app: FastifyInstance): Promise<void> {
    app.addSchema(ErrorResponseSchema)
    app.setErrorHandler((err: FastifyError, request, reply) => {
      const httpErr = toHttpError(err)
      if (httpErr.statusCode >= 500) request.log.error({ err, method: request.method, url: request.url }, 'request failed')
      // Refusals are the client's business (and 429s come by the thousand under load): debug.
      else request.log.debug({ method: request.method, url: request.url, statusCode: httpErr.statusCode, code: httpErr.code, message: httpErr.message }, 'request refused')
      return sendError(reply, httpErr)
    })
    app.setNotFoundHandler((request, reply) =>
      sendError(reply, new HttpError(404, HttpErrorCodes.NOT_FOUND, `no route ${request.method} ${request.url.split('?')[0] ?? ''}`)),
    )
  },
  { name: 'tagstream-errors', fastify: '5.x' },
)
