import { Type, type Static } from '@sinclair/typebox'

/** The `http` section of the configuration: schema and defaults (validated once at start, then frozen). */
export const HttpConfigSchema = Type.Object(
  {
    enabled: Type.Boolean({ default: false, description: 'Serve the HTTP API (ingest, profiles, health, metrics)' }),
    host: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address to listen on; 0.0.0.0 exposes it to the network' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, description: '0 picks a free port' }),
    bodyLimitBytes: Type.Integer({ minimum: 1024, default: 4 * 1024 * 1024, description: 'Largest request body; larger ones get 413 TS_ERR_PAYLOAD_TOO_LARGE' }),
    ingestToken: Type.Optional(
      Type.String({ minLength: 16, description: 'Bearer token required by POST /v1/events (unset: ingest is open; keep host on loopback then)' }),
    ),
    readToken: Type.Optional(Type.String({ minLength: 16, description: 'Bearer token required by the /v1/users and /v1/tags reads (unset: open)' })),
    manageToken: Type.Optional(
      Type.String({ minLength: 16, description: 'Bearer token required by tag management: PUT /v1/tags/:tagId, publish, retire, transition, preview (unset: open)' }),
    ),
    ingestQueueRecords: Type.Integer({
      minimum: 1,
      default: 100_000,
      description: 'Records accepted over HTTP and not yet read by the engine; beyond it, batches get 429 with Retry-After',
    }),
    commitWaitTimeoutMs: Type.Integer({
      minimum: 1,
      default: 30_000,
      description: 'How long POST /v1/events?wait=committed waits for the commit before answering 202 with committed: false',
    }),
    retryAfterSeconds: Type.Integer({ minimum: 1, default: 1, description: 'Retry-After of 429 answers' }),
    streamReplayWindow: Type.Integer({
      minimum: 0,
      default: 10_000,
      description: 'Tag changes kept for GET /v1/tag-changes/stream clients that reconnect with Last-Event-ID',
    }),
    docs: Type.Boolean({ default: true, description: 'Serve the Swagger UI at /docs (the OpenAPI document is always at /openapi.json)' }),
  },
  { default: {}, additionalProperties: false },
)

export type HttpConfig = Static<typeof HttpConfigSchema>
