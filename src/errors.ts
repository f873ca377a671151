/**
 * One error base class with stable, documented codes (see README "Error codes").
 * Classify by `code`, never by `instanceof`: errors cross module and process boundaries.
 */
export const ErrorCodes = {
  /** The configuration file or an override does not match the schema. */
  CONFIG_INVALID: 'TS_ERR_CONFIG_INVALID',
  /** The configuration file cannot be read or parsed as YAML. */
  CONFIG_UNREADABLE: 'TS_ERR_CONFIG_UNREADABLE',
  /** An operator named in the configuration cannot be found or loaded. */
  OPERATOR_NOT_FOUND: 'TS_ERR_OPERATOR_NOT_FOUND',
  /** An operator's own configuration does not match its schema. */
  OPERATOR_CONFIG_INVALID: 'TS_ERR_OPERATOR_CONFIG_INVALID',
  /** The store could not be opened (locked by another process, corrupt, ...). */
  STORE_UNAVAILABLE: 'TS_ERR_STORE_UNAVAILABLE',
  /** A sink could not flush: the commit is not made and the batch will be retried after restart. */
  SINK_FAILED: 'TS_ERR_SINK_FAILED',
  /** A source cannot deliver its records (Kafka: group, metadata or offset failures; history gone). */
  SOURCE_FAILED: 'TS_ERR_SOURCE_FAILED',
  /** A command-line invocation was malformed. */
  USAGE: 'TS_ERR_USAGE',
  /** The engine was used after close, or before open. */
  ENGINE_STATE: 'TS_ERR_ENGINE_STATE',
  /** A tag definition (or the tags file) does not validate: `details.issues` point at the keys. */
  TAG_INVALID: 'TS_ERR_TAG_INVALID',
  /** No tag with that id, or no such version of it. */
  TAG_NOT_FOUND: 'TS_ERR_TAG_NOT_FOUND',
  /** The tag lifecycle does not allow that status change. */
  TAG_TRANSITION: 'TS_ERR_TAG_TRANSITION',
  /** A tag edit was based on a version that is no longer the latest. */
  TAG_VERSION_CONFLICT: 'TS_ERR_TAG_VERSION_CONFLICT',
} as const

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes]

export interface TagstreamErrorOptions {
  cause?: unknown
  /** Whether retrying the same operation may succeed (a transient condition). */
  retriable?: boolean
  /** Structured details for machine readers (e.g. the config key at fault). */
  details?: Record<string, unknown>
}

export class TagstreamError extends Error {
  readonly code: ErrorCode
  readonly retriable: boolean
  readonly details: Record<string, unknown>

  constructor(code: ErrorCode, message: string, options: TagstreamErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'TagstreamError'
    this.code = code
    this.retriable = options.retriable ?? false
    this.details = options.details ?? {}
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, retriable: this.retriable, ...this.details }
  }
}

export function isTagstreamError(err: unknown, code?: ErrorCode): err is TagstreamError {
  if (typeof err !== 'object' || err === null) return false
  const c = (err as { code?: unknown }).code
  if (typeof c !== 'string' || !c.startsWith('TS_ERR_')) return false
  return code === undefined || c === code
}
