import { Type, type Static } from '@sinclair/typebox'

// ---------------------------------------------------------------------------------------------
// Configuration of the Kafka sinks (part of the config schema; no native module loaded here)
// ---------------------------------------------------------------------------------------------

const LibrdkafkaOverridesSchema = Type.Record(Type.String({ minLength: 1 }), Type.Union([Type.String(), Type.Number(), Type.Boolean()]), {
  default: {},
  description:
    'Extra librdkafka producer properties (CONFIGURATION.md), applied last: security.protocol, sasl.*, ssl.*, batch.size, ... ' +
    'Overriding enable.idempotence or acks weakens the delivery guarantee.',
})

const commonKafkaSinkProperties = {
  type: Type.Literal('kafka'),
  brokers: Type.String({ minLength: 1, description: 'bootstrap.servers: comma-separated host:port list' }),
  topic: Type.String({ minLength: 1, maxLength: 249, pattern: '^[A-Za-z0-9._-]+$' }),
  clientId: Type.String({ minLength: 1, default: 'tagstream' }),
  messageTimeoutMs: Type.Integer({
    minimum: 1000,
    default: 120_000,
    description: 'How long librdkafka retries a message before reporting it failed; bounds how long a flush (and so a commit) can wait',
  }),
  connectTimeoutMs: Type.Integer({ minimum: 100, default: 30_000, description: 'open() fails if the cluster does not answer a metadata request in time' }),
  librdkafka: LibrdkafkaOverridesSchema,
}

export const KafkaTagChangeSinkConfigSchema = Type.Object(
  {
    ...commonKafkaSinkProperties,
    compression: Type.Union([Type.Literal('lz4'), Type.Literal('zstd'), Type.Literal('snappy'), Type.Literal('gzip'), Type.Literal('none')], {
      default: 'lz4',
    }),
    lingerMs: Type.Number({
      minimum: 0,
      maximum: 1000,
      default: 10,
      description: 'Batching delay: larger batches and better compression against latency (a flush waits for it once)',
    }),
  },
  { additionalProperties: false, description: 'Tag changes to a Kafka topic: key = userId, value = the tag change as JSON' },
)
export type KafkaTagChangeSinkConfig = Static<typeof KafkaTagChangeSinkConfigSchema>

export const KafkaDeadLetterSinkConfigSchema = Type.Object(
  {
    ...commonKafkaSinkProperties,
    compression: Type.Union([Type.Literal('lz4'), Type.Literal('zstd'), Type.Literal('snappy'), Type.Literal('gzip'), Type.Literal('none')], {
      default: 'lz4',
    }),
    lingerMs: Type.Number({ minimum: 0, maximum: 1000, default: 10 }),
  },
  {
    additionalProperties: false,
    description: 'Dead letters to a Kafka topic: value = the raw record bytes, reason and coordinates in tagstream-* headers, key = userId when known',
  },
)
export type KafkaDeadLetterSinkConfig = Static<typeof KafkaDeadLetterSinkConfigSchema>
