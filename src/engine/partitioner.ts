/**
 * Kafka's default (Java client) partitioner: murmur2 of the key bytes, made positive, modulo the
 * partition count. Embedded sources route users with it, so that a file replay and a Kafka topic
 * fed by a Java producer place a user in the same partition.
 */
const encoder = new TextEncoder()

export function murmur2(data: Uint8Array): number {
  const length = data.length
  const seed = 0x9747b28c
  const m = 0x5bd1e995
  const r = 24
  let h = seed ^ length
  const length4 = length >> 2
  for (let i = 0; i < length4; i++) {
    const i4 = i << 2
    let k = (data[i4]! & 0xff) | ((data[i4 + 1]! & 0xff) << 8) | ((data[i4 + 2]! & 0xff) << 16) | ((data[i4 + 3]! & 0xff) << 24)
    k = Math.imul(k, m)
    k ^= k >>> r
    k = Math.imul(k, m)
    h = Math.imul(h, m)
    h ^= k
  }
  const tail = length4 << 2
  const rest = length % 4
  if (rest === 3) h ^= (data[tail + 2]! & 0xff) << 16
  if (rest >= 2) h ^= (data[tail + 1]! & 0xff) << 8
  if (rest >= 1) {
    h ^= data[tail]! & 0xff
    h = Math.imul(h, m)
  }
  h ^= h >>> 13
  h = Math.imul(h, m)
  h ^= h >>> 15
  return h | 0
}

const ascii = new Uint8Array(256)

export function partitionFor(userId: string, partitions: number): number {
  if (partitions === 1) return 0
  // Per event: ASCII ids (the common case) skip the TextEncoder allocation.
  const n = userId.length
  if (n <= ascii.length) {
    let i = 0
    for (; i < n; i++) {
      const c = userId.charCodeAt(i)
      if (c > 0x7f) break
      ascii[i] = c
    }
    if (i === n) return (murmur2(ascii.subarray(0, n)) & 0x7fffffff) % partitions
  }
  return (murmur2(encoder.encode(userId)) & 0x7fffffff) % partitions
}
