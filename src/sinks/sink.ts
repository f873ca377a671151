import type { DeadLetter } from '../contracts/dead-letter.js'
import type { TagChange } from '../contracts/tag-change.js'

/**
 * Where tag changes go. `write` is synchronous and only buffers (the per-event path never awaits);
 * `flush` makes everything written so far durable or delivered, and is awaited by the commit
 * before the store write: a change is never recorded as done before its sink has it.
 */
export interface TagChangeSink {
  readonly name: string
  write(change: TagChange): void
  flush(): Promise<void>
  close(): Promise<void>
}

export interface DeadLetterSink {
  readonly name: string
  write(deadLetter: DeadLetter): void
  flush(): Promise<void>
  close(): Promise<void>
}
