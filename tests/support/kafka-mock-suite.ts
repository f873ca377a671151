import { afterAll, beforeAll } from 'vitest'
import { assertBuilt } from './cli.js'
import { startKafkaMock, type KafkaMock } from './kafka-mock.js'

/**
 * A librdkafka mock cluster for the tests of one `describe`: the CLI checked built and the cluster
 * started before them, stopped after. Read `bootstrap` inside the tests. (Apart from kafka-mock.ts,
 * which the bench imports outside vitest.)
 */
export function mockClusterForTests(): { readonly bootstrap: string } {
  let mock: KafkaMock | undefined
  beforeAll(async () => {
    assertBuilt()
    mock = await startKafkaMock()
  })
  afterAll(async () => {
    await mock?.stop()
  })
  return {
    get bootstrap(): string {
      if (mock === undefined) throw new Error('the mock cluster starts before the tests (beforeAll)')
      return mock.bootstrap
    },
  }
}
