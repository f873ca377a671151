/**
 * Scenario 5's limit: start Node, open the LevelDB store (recovering its log after a crash) and read
 * one key. Prints {"openMs":..} measured from process start, then exits.
 *
 *   node dist/bench/bare/open-store.js STORE_DIR
 */
import { ClassicLevel } from 'classic-level'
import { META_KEY } from '../../src/store/keys.js'

async function main(path: string): Promise<void> {
  const db = new ClassicLevel<string, Buffer>(path, { keyEncoding: 'utf8', valueEncoding: 'buffer', createIfMissing: false })
  await db.open()
  await db.get(META_KEY)
  const openMs = performance.now()
  await db.close()
  process.stdout.write(JSON.stringify({ openMs }) + '\n')
}

main(process.argv[2] as string).catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack}\n`)
  process.exit(1)
})
