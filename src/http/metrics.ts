import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Registry } from 'prom-client'
import { errorResponses } from './errors.js'

export interface MetricsPluginOptions {
  /** The injected registry (never prom-client's global one). */
  readonly registry: Registry
}

/** `GET /metrics`: the registry in Prometheus text exposition format. Unauthenticated, like most scrape targets. */
export const metricsPlugin: FastifyPluginAsyncTypebox<MetricsPluginOptions> = async (app, { registry }) => {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        description: 'Text exposition format 0.0.4. Metric names and meanings: see src/metrics/metrics.ts.',
        tags: ['operations'],
        response: {
          200: { description: 'The metrics', content: { 'text/plain': { schema: Type.String() } } },
          ...errorResponses,
        },
      },
    },
    async (_request, reply) => {
      const text = await registry.metrics()
      return reply.type(registry.contentType).send(text)
    },
  )
}
