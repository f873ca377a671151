'use strict'
/**
 * Runs librdkafka's mock cluster in its own process (started by `kafka-mock.ts`).
 *
 * The mock cluster lives inside a client handle: creating any client with `test.mock.num.brokers`
 * starts the brokers on ephemeral 127.0.0.1 ports and logs, at NOTICE level (facility MOCK),
 *   "Mock cluster enabled: original bootstrap.servers and security.protocol ignored and replaced with <addr>"
 * where <addr> is a comma-separated broker list. We read that line from the client's log callback,
 * print `{"bootstrap":"<addr>"}` as one JSON line on stdout, and keep the handle alive.
 *
 * Usage: node kafka-mock-process.cjs [numBrokers]
 * Exits when stdin closes (the parent died or called stop()), on SIGTERM/SIGINT, or when the parent
 * process disappears (checked every second, in case stdin was not a pipe).
 */
const Kafka = require('@confluentinc/kafka-javascript')

const brokers = Number(process.argv[2] ?? '1')
const parentPid = process.ppid
let announced = false
let exiting = false

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const client = new Kafka.Producer({
  'test.mock.num.brokers': brokers,
  // Ignored by the mock (it replaces both), but librdkafka wants a value.
  'bootstrap.servers': 'mock:9092',
  'client.id': 'tagstream-kafka-mock',
  // The MOCK line is NOTICE (5); the default log_level (6) passes it. No `debug` needed.
  log_level: 6,
})

client.on('event.log', (e) => {
  if (announced) return
  const m = /Mock cluster enabled: .* replaced with (\S+)/.exec(String(e && e.message))
  if (m) {
    announced = true
    emit({ bootstrap: m[1], brokers, pid: process.pid })
  }
})
client.on('event.error', (err) => {
  process.stderr.write(`kafka-mock: client error: ${err && err.message}\n`)
})

// connect() installs the log callback on the native handle (and connects to the mock itself,
// which proves the brokers answer). The log line is delivered during connect.
client.connect({ timeout: 10_000 }, (err) => {
  if (err) {
    emit({ error: `mock client cannot connect: ${err.message}` })
    shutdown(1)
  } else if (!announced) {
    emit({ error: 'mock cluster started but its bootstrap log line was not seen' })
    shutdown(1)
  }
})

function shutdown(code) {
  if (exiting) return
  exiting = true
  // Do not wait for a graceful disconnect: the mock dies with the handle either way.
  setTimeout(() => process.exit(code), 2000).unref()
  try {
    client.disconnect(500, () => process.exit(code))
  } catch {
    process.exit(code)
  }
}

process.stdin.on('end', () => shutdown(0))
process.stdin.on('error', () => shutdown(0))
process.stdin.resume()
process.on('SIGTERM', () => shutdown(0))
process.on('SIGINT', () => shutdown(0))
setInterval(() => {
  try {
    process.kill(parentPid, 0)
  } catch {
    shutdown(0)
  }
}, 1000)
