import { TagChangeSchema, type TagChange, type TagValue } from '../contracts/tag-change.js'
import type { MembersPage } from '../engine/engine.js'
import { tagsPlugin } from './tags.js'
import { streamPlugin } from './stream.js'
import type { SseSink } from '../sinks/sse-sink.js'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Registry } from 'prom-client'
import '../contracts/formats.js'
import { InputEventWireSchema } from '../contracts/input-event.js'
import type { Profile } from '../contracts/profile.js'
import { ProfileSchema } from '../contracts/profile.js'
import { TagValueSchema } from '../contracts/tag-change.js'
import type { EngineLike } from '../metrics/metrics.js'
import type { CommitNotifier, HttpIngestSource } from '../sources/http-ingest-source.js'
import { errorsPlugin } from './errors.js'
import { healthPlugin } from './health.js'
import { ingestPlugin } from './ingest.js'
import { catalogPlugin, type CatalogEngine } from './catalog.js'
import type { TagCatalog } from '../tags/catalog.js'
import { metricsPlugin } from './metrics.js'
import type { HttpConfig } from './options.js'
import type { Logger } from '../log.js'
import { usersPlugin } from './users.js'

export { HttpConfigSchema, type HttpConfig } from './options.js'
export { HttpErrorCodes, type HttpErrorCode } from './errors.js'

/** What the HTTP surface needs of the engine (a structural subset of `Engine`). */
export interface ServiceEngine extends EngineLike, CommitNotifier {
  /** A user's profile, its state views evaluated at `asOf` (epoch ms) or the partition's clock. */
  profile(userId: string, asOf?: number): Promise<Profile | undefined>
  /** The user's last tag changes, newest first, as of the last commit. */
  history(userId: string, limit?: number): Promise<TagChange[]>
  /** Users with a tag (or with tag = value), paged, as of the last commit. */
  members(tag: string, options?: { value?: TagValue; cursor?: string; limit?: number }): Promise<MembersPage>
  /** Users per value of a tag, as of the last commit. */
  coverage(tag: string): { value: TagValue; users: number }[]
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The engine, handed to every plugin (decorated at the root). */
    engine: ServiceEngine
    /** The HTTP ingest source that POST /v1/events feeds. */
    ingest: HttpIngestSource
  }
}

export type TagstreamServer = FastifyInstance<Server, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>

export interface BuildServerOptions {
  readonly engine: ServiceEngine
  readonly ingest: HttpIngestSource
  /** The registry `/metrics` exposes (the one `createMetrics` registered on). */
  readonly registry: Registry
  readonly config: Readonly<HttpConfig>
  /**
   * The logger fastify uses (the process's pino logger, or a child of it); none by default. Each
   * request gets a line at debug (and a child logger with its id) only when debug is enabled:
   * at info and above, requests cost no logging at all.
   */
  readonly logger?: Logger
  /** Version shown in the OpenAPI document. */
  readonly version?: string
  /** The sink behind GET /v1/tag-changes/stream (no stream route without it). */
  readonly stream?: SseSink
  /** The tag catalog behind the management routes (GET/PUT /v1/tags, publish, retire, preview); none without it. */
  readonly catalog?: TagCatalog
}

/** fastify logs each request at info; here they are debug lines, so that info stays about the service. */
class DebugRequestLogs extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request')
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }

  override routeNotFound(request: FastifyRequest): void {
    request.log.debug({ method: request.method, url: request.url }, 'route not found')
  }
}

/**
 * The HTTP service: one plugin per area, the engine and the ingest source decorated at the root.
 * Does not listen: the caller does (`await app.listen({ host: config.host, port: config.port })`).
 * The engine outlives the server: closing the server ends intake (`ingest.end()`), and the caller
 * then lets the engine drain and commit what was accepted before stopping it.
 */
export function buildServer(options: BuildServerOptions): TagstreamServer {
  const { engine, ingest, registry, config } = options
  const logger = options.logger
  const requestLogs = logger !== undefined && logger.isLevelEnabled('debug')
  const app = fastify({
    ...(logger === undefined
      ? { logger: false }
      : {
          loggerInstance: logger as FastifyBaseLogger,
          logController: new DebugRequestLogs(),
          // Without request lines, requests share the server's logger instead of a child each.
          ...(requestLogs ? {} : { childLoggerFactory: (parent: FastifyBaseLogger) => parent }),
        }),
    bodyLimit: config.bodyLimitBytes,
    // While closing, requests still on open connections get our answers (reads served, ingest 503
    // TS_ERR_NOT_READY in the one error shape) rather than fastify's own 503 body.
    return503OnClosing: false,
  }).withTypeProvider<TypeBoxTypeProvider>()
  // Queries and params are checked by TypeBox, with the formats the contracts register; no coercion of bodies.
  app.setValidatorCompiler(TypeBoxValidatorCompiler)

  app.decorate('engine', engine)
  app.decorate('ingest', ingest)
  ingest.attach(engine)
  // Closing ends intake first; requests waiting for a commit still get it (the engine runs on).
  app.addHook('preClose', async () => {
    ingest.end()
  })

  // Shared schemas at the root, so that routes and the OpenAPI document can reference them by $id.
  app.addSchema(TagValueSchema)
  app.addSchema(InputEventWireSchema)
  app.addSchema(ProfileSchema)
  app.addSchema(TagChangeSchema)

  app.register(errorsPlugin)
  app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'tagstream',
        description: 'Real-time user tagging: event ingest, profiles, health and metrics. Every error answers `{ error: { code, message, details? } }`.',
        version: options.version ?? '0.1.0',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
      tags: [
        { name: 'ingest', description: 'Send events' },
        { name: 'users', description: 'Read profiles and their history' },
        { name: 'tags', description: 'Segment membership and tag coverage' },
        { name: 'operations', description: 'Health, readiness, metrics' },
      ],
    },
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`),
    },
  })
  if (config.docs) app.register(swaggerUi, { routePrefix: '/docs' })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())

  app.register(healthPlugin)
  app.register(metricsPlugin, { registry })
  app.register(usersPlugin, { readToken: config.readToken })
  app.register(tagsPlugin, { readToken: config.readToken })
  if (options.catalog !== undefined) {
    app.register(catalogPlugin, {
      catalog: options.catalog,
      engine: engine as unknown as CatalogEngine,
      readToken: config.readToken,
      manageToken: config.manageToken,
    })
  }
  if (options.stream !== undefined) app.register(streamPlugin, { sink: options.stream, readToken: config.readToken })
  app.register(ingestPlugin, {
    ingestToken: config.ingestToken,
    commitWaitTimeoutMs: config.commitWaitTimeoutMs,
    retryAfterSeconds: config.retryAfterSeconds,
  })
  return app
}
