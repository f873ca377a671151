import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { SseEvent, SseSink } from '../sinks/sse-sink.js'
import { bearerGuard } from './auth.js'
import { errorResponses } from './errors.js'
import type {} from './server.js'

export interface StreamPluginOptions {
  readonly sink: SseSink
  readonly readToken?: string | undefined
  /** Comment line sent this often so that proxies keep the connection open. */
  readonly heartbeatMs?: number
}

/** `GET /v1/tag-changes/stream`: tag changes as server-sent events, filterable, resumable. */
export const streamPlugin: FastifyPluginAsyncTypebox<StreamPluginOptions> = async (app, options) => {
  const guard = bearerGuard(options.readToken, 'tagstream')
  if (guard !== undefined) app.addHook('onRequest', guard)
  const { sink } = options
  const heartbeatMs = options.heartbeatMs ?? 15_000
  // Open streams never end by themselves: closing the server ends them first, or it would wait forever.
  const open = new Set<() => void>()
  app.addHook('preClose', async () => {
    for (const end of open) end()
  })

  app.get(
    '/v1/tag-changes/stream',
    {
      schema: {
        summary: 'Tag changes as server-sent events',
        description:
          'Each event: `id` (stream position), `event: tag-change`, `data` (the tag change JSON). Reconnect with `Last-Event-ID` to ' +
          'get what was missed while it is in the replay window; a `gap` event says when it was not. Deduplicate by the change `id`.',
        tags: ['tags'],
        ...(guard === undefined ? {} : { security: [{ bearerAuth: [] }] }),
        querystring: Type.Object({ tag: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])) }),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]+$' })) }),
        response: { ...errorResponses },
      },
    },
    (request, reply) => {
      const { tag } = request.query
      const tags = tag === undefined ? undefined : new Set(Array.isArray(tag) ? tag : tag.split(','))
      const lastEventId = request.headers['last-event-id']
      const raw = reply.raw
      reply.hijack()
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      })
      raw.write(': tagstream tag-change stream\n\n')
      const send = (event: SseEvent): void => {
        raw.write(`id: ${event.position}\nevent: tag-change\ndata: ${event.json}\n\n`)
      }
      const after = lastEventId === undefined ? undefined : Number(lastEventId)
      // Said before the replay: the client knows at once that it must resynchronize (e.g. read the membership routes).
      if (after !== undefined && !sink.covers(after)) raw.write(`event: gap\ndata: ${JSON.stringify({ after })}\n\n`)
      const { unsubscribe } = sink.subscribe({ tags, send }, after)
      const heartbeat = setInterval(() => raw.write(': heartbeat\n\n'), heartbeatMs)
      heartbeat.unref()
      const end = (): void => {
        raw.end()
      }
      open.add(end)
      raw.once('close', () => {
        clearInterval(heartbeat)
        unsubscribe()
        open.delete(end)
      })
    },
  )
}
