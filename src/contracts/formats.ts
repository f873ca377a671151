import { FormatRegistry } from '@sinclair/typebox'
import { parseIsoTimestamp } from './validate-event.js'

/** String formats the schemas use, registered once for TypeBox's validator. */
if (!FormatRegistry.Has('date-time')) {
  FormatRegistry.Set('date-time', (value) => !Number.isNaN(parseIsoTimestamp(value)))
}
