import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifySchemaCompiler } from 'fastify'
import type { RejectReason } from '../contracts/input-event.js'
import { RejectReasons } from '../contracts/input-event.js'
import { bearerGuard } from './auth.js'
import { errorResponses, HttpError, HttpErrorCodes } from './errors.js'
import type {} from './server.js'

export interface IngestPluginOptions {
  /** Bearer token POST /v1/events requires; undefined: open. */
  readonly ingestToken?: string | undefined
  readonly commitWaitTimeoutMs: number
  readonly retryAfterSeconds: number
}

export const NDJSON = 'application/x-ndjson'

const EventResultSchema = Type.Object(
  {
    index: Type.Integer({ minimum: 0, description: 'Position of the event in the batch (array element, or non-blank NDJSON line)' }),
    ok: Type.Boolean({ description: 'true: accepted for processing (engine-side outcomes, e.g. duplicates, are not reported here)' }),
    code: Type.Optional(Type.String({ description: 'Why it was rejected: a reason of the input contract, e.g. missing_field' })),
    message: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
)
export type EventResult = Static<typeof EventResultSchema>

const IngestResponseSchema = Type.Object(
  {
    accepted: Type.Integer({ minimum: 0, description: 'Events taken into the queue' }),
    rejected: Type.Integer({ minimum: 0, description: 'Events refused as invalid (never retried: fix them)' }),
    committed: Type.Boolean({
      description: 'true when every accepted event is known to be committed (wait=committed, or nothing accepted)',
    }),
    results: Type.Array(EventResultSchema),
  },
  { additionalProperties: false },
)
export type IngestResponse = Static<typeof IngestResponseSchema>

const QuerySchema = Type.Object({
  wait: Type.Optional(
    Type.Literal('committed', { description: 'Answer once the accepted events are committed (durable), or after commitWaitTimeoutMs with committed: false' }),
  ),
})

/** The body is the source's business: fastify hands it over as bytes and does not validate it. */
const skipBodyValidation: FastifySchemaCompiler<unknown> = (route) =>
  route.httpPart === 'body' ? () => true : TypeBoxValidatorCompiler(route as Parameters<typeof TypeBoxValidatorCompiler>[0])

function isBlank(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = buf[i]
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d && c !== 0x0a) return false
  }
  return true
}

/** NDJSON: one record per line; blank lines are not records; a CR before the LF is dropped. */
export function splitNdjson(body: Buffer): Buffer[] {
  const out: Buffer[] = []
  let start = 0
  while (start < body.length) {
    let end = body.indexOf(0x0a, start)
    if (end === -1) end = body.length
    const stop = end > start && body[end - 1] === 0x0d ? end - 1 : end
    if (!isBlank(body, start, stop)) out.push(body.subarray(start, stop))
    start = end + 1
  }
  return out
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

function malformed(err: unknown): HttpError {
  return new HttpError(400, HttpErrorCodes.MALFORMED_JSON, `the body is not valid JSON: ${(err as Error).message}`)
}

/**
 * JSON: an array of events (each element becomes one record), or one event (the body is the record,
 * judged by the source's decoder like any other).
 */
export function splitJson(body: Buffer): Buffer[] {
  let i = 0
  while (i < body.length && isBlank(body, i, i + 1)) i++
  if (i === body.length) return []
  if (body[i] !== 0x5b) return [body]
  let text = body.toString('utf8')
  let parsed: unknown
  try {
    // Buffer's decoder replaces invalid bytes; only text that has a replacement is checked strictly.
    if (text.includes('\ufffd')) text = strictUtf8.decode(body)
    parsed = JSON.parse(text)
  } catch (err) {
    throw malformed(err)
  }
  return (parsed as unknown[]).map((item) => Buffer.from(JSON.stringify(item)))
}

/** `POST /v1/events`: validates each event with the source's decoder, offers the valid ones to the queue. */
export const ingestPlugin: FastifyPluginAsyncTypebox<IngestPluginOptions> = async (app, options) => {
  const guard = bearerGuard(options.ingestToken, 'tagstream-ingest')
  if (guard !== undefined) app.addHook('onRequest', guard)
  const security = guard === undefined ? undefined : [{ bearerAuth: [] }]
  const retryAfter = String(options.retryAfterSeconds)

  // This scope reads bodies as bytes: the records go to the engine as they came.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser(['application/json', NDJSON], { parseAs: 'buffer' }, (_request, body, done) => done(null, body))

  app.post(
    '/v1/events',
    {
      validatorCompiler: skipBodyValidation,
      schema: {
        summary: 'Send events',
        description: [
          'One event object, a JSON array of events, or NDJSON (`content-type: application/x-ndjson`, one event per line).',
          'Each event is validated like any source record and answered in `results`; the valid ones are queued as one batch.',
          'Status: 200 when nothing remains pending (all committed with `wait=committed`, or nothing accepted);',
          '202 when accepted events are queued but not known to be committed (an in-memory queue: use `wait=committed` for durability;',
          'resending is safe, events are deduplicated by id).',
          '429 `TS_ERR_SATURATED` with `Retry-After` when the queue is full (nothing of the batch was taken);',
          '413 `TS_ERR_PAYLOAD_TOO_LARGE` when the body, or the number of events, exceeds the limits;',
          '400 `TS_ERR_MALFORMED_JSON` when a JSON body does not parse.',
        ].join(' '),
        tags: ['ingest'],
        ...(security === undefined ? {} : { security }),
        querystring: QuerySchema,
        body: {
          content: {
            'application/json': {
              schema: Type.Union([Type.Ref('InputEvent'), Type.Array(Type.Ref('InputEvent'))]),
            },
            [NDJSON]: { schema: Type.String({ description: 'One InputEvent JSON object per line' }) },
          },
        },
        response: {
          200: IngestResponseSchema,
          202: IngestResponseSchema,
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const ingest = app.ingest
      if (!ingest.accepting) throw new HttpError(503, HttpErrorCodes.NOT_READY, 'ingest is not accepting events (not open yet, or shutting down)', { retriable: true })
      const body = request.body as Buffer
      const contentType = request.headers['content-type'] ?? ''
      const ndjson = contentType.toLowerCase().startsWith(NDJSON)
      const records = ndjson ? splitNdjson(body) : splitJson(body)
      if (records.length === 0) throw new HttpError(400, HttpErrorCodes.BAD_REQUEST, 'the body holds no events')

      const wallNow = Date.now()
      const results: EventResult[] = new Array(records.length)
      const valid: Buffer[] = []
      const invalid: RejectReason[] = []
      for (let i = 0; i < records.length; i++) {
        const record = records[i] as Buffer
        const decoded = ingest.decode(record, wallNow)
        if (decoded.ok) {
          results[i] = { index: i, ok: true }
          valid.push(record)
        } else {
          const { code, message } = decoded.rejection
          // A single JSON event that does not parse is a malformed body, as for an array.
          if (!ndjson && records.length === 1 && code === RejectReasons.INVALID_JSON) throw malformed({ message: message.replace(/^cannot decode json: /, '') })
          results[i] = { index: i, ok: false, code, message }
          invalid.push(code)
        }
      }

      let committed = valid.length === 0
      if (valid.length > 0) {
        const offer = ingest.offer(valid)
        if (!offer.accepted) {
          const details = { queued: offer.queued, capacity: offer.capacity, events: valid.length }
          if (offer.reason === 'full') {
            throw new HttpError(429, HttpErrorCodes.SATURATED, 'the ingest queue is full; retry later', {
              details,
              retriable: true,
              headers: { 'retry-after': retryAfter },
            })
          }
          if (offer.reason === 'too_large') {
            throw new HttpError(413, HttpErrorCodes.PAYLOAD_TOO_LARGE, `a batch of ${valid.length} events exceeds the ingest queue (${offer.capacity}); split it`, {
              details,
            })
          }
          throw new HttpError(503, HttpErrorCodes.NOT_READY, 'ingest is not accepting events (shutting down)', { retriable: true })
        }
        if (request.query.wait === 'committed') {
          // Stop waiting when the client goes away, or after the configured time.
          const gone = new AbortController()
          const onClose = () => gone.abort(new Error('client closed the connection'))
          reply.raw.once('close', onClose)
          try {
            await ingest.waitCommitted(offer.lastPosition, AbortSignal.any([gone.signal, AbortSignal.timeout(options.commitWaitTimeoutMs)]))
            committed = true
          } catch {
            committed = false
          } finally {
            reply.raw.off('close', onClose)
          }
        }
      }
      for (const code of invalid) ingest.countInvalid(code)
      const answer: IngestResponse = { accepted: valid.length, rejected: invalid.length, committed, results }
      return reply.code(committed ? 200 : 202).send(answer)
    },
  )
}
