/**
 * Small, fast, seeded pseudo-random numbers for the workload generator. Everything here is
 * deterministic for a seed: no Math.random, no clock.
 *
 * The generator is sfc32 (Chris Doty-Humphrey's Small Fast Chaotic PRNG, 128-bit state,
 * 32-bit output), seeded through splitmix32 so that nearby seeds give unrelated streams.
 */

const TWO_POW_32 = 4_294_967_296

/** splitmix32 step: a good 32-bit mixer, used only to expand the seed into sfc32's state. */
function splitmix32(state: number): [next: number, out: number] {
  const next = (state + 0x9e3779b9) | 0
  let z = next
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  z ^= z >>> 16
  return [next, z >>> 0]
}

export class Prng {
  private a: number
  private b: number
  private c: number
  private d: number

  /**
   * @param seed any finite number (integers up to 2^53 keep all their bits; fractions are truncated)
   * @param stream a second number to derive independent streams from one seed
   */
  constructor(seed: number, stream = 0) {
    if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`)
    const whole = Math.trunc(seed)
    const lo = whole >>> 0
    const hi = Math.floor(whole / TWO_POW_32) >>> 0
    let s = (lo ^ Math.imul(hi, 0x27d4eb2d) ^ Math.imul(stream >>> 0, 0x165667b1)) | 0
    let out: number
    ;[s, out] = splitmix32(s)
    this.a = out
    ;[s, out] = splitmix32(s ^ hi)
    this.b = out
    ;[s, out] = splitmix32(s)
    this.c = out
    ;[s, out] = splitmix32(s ^ stream)
    this.d = out
    for (let i = 0; i < 16; i++) this.nextU32()
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const a = this.a
    const b = this.b
    const c = this.c
    const d = (this.d + 1) | 0
    const t = (((a + b) | 0) + d) | 0
    this.a = b ^ (b >>> 9)
    this.b = (c + (c << 3)) | 0
    this.c = (((c << 21) | (c >>> 11)) + t) | 0
    this.d = d
    return t >>> 0
  }

  /** Uniform float in [0, 1). */
  next(): number {
    return this.nextU32() / TWO_POW_32
  }

  /** Uniform integer in [0, n) (n >= 1, n <= 2^32). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }

  /** Uniform integer in [min, max], both inclusive. */
  range(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }

  /** Uniform float in [min, max). */
  uniform(min: number, max: number): number {
    return min + this.next() * (max - min)
  }

  /** true with probability p. */
  chance(p: number): boolean {
    return this.next() < p
  }

  /** A uniformly chosen element (the array must not be empty). */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T
  }

  /** Standard normal deviate (Box-Muller; one value per call, no cached spare, so the stream stays simple). */
  normal(): number {
    const u1 = 1 - this.next() // (0, 1]
    const u2 = this.next()
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2)
  }

  /** Log-normal deviate with the given median and log-space standard deviation. */
  logNormal(median: number, sigma: number): number {
    return median * Math.exp(sigma * this.normal())
  }

  /** Exponential deviate with the given mean. */
  exponential(mean: number): number {
    return -Math.log(1 - this.next()) * mean
  }

  /** Log-uniform deviate in [min, max) (min > 0): as many small values per decade as large ones. */
  logUniform(min: number, max: number): number {
    return min * Math.exp(this.next() * Math.log(max / min))
  }

  /** Fisher-Yates shuffle in place. */
  shuffle<T extends { [i: number]: unknown; length: number }>(items: T): T {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1))
      const tmp = items[i]
      items[i] = items[j]
      items[j] = tmp
    }
    return items
  }
}

/**
 * Samples indices in proportion to fixed weights: precomputed cumulative distribution,
 * binary search per draw (O(log n)).
 */
export class CdfSampler {
  private readonly cdf: Float64Array
  readonly size: number

  constructor(weights: ArrayLike<number>) {
    const n = weights.length
    if (n === 0) throw new RangeError('CdfSampler needs at least one weight')
    const cdf = new Float64Array(n)
    let total = 0
    for (let i = 0; i < n; i++) {
      const w = weights[i] as number
      if (!(w >= 0) || !Number.isFinite(w)) throw new RangeError(`weight ${i} is not a finite non-negative number: ${w}`)
      total += w
      cdf[i] = total
    }
    if (total <= 0) throw new RangeError('CdfSampler needs a positive total weight')
    for (let i = 0; i < n; i++) cdf[i] = (cdf[i] as number) / total
    cdf[n - 1] = 1
    this.cdf = cdf
    this.size = n
  }

  /** Probability of index i. */
  probability(i: number): number {
    const cdf = this.cdf
    return (cdf[i] as number) - (i === 0 ? 0 : (cdf[i - 1] as number))
  }

  sample(prng: Prng): number {
    const x = prng.next()
    const cdf = this.cdf
    let lo = 0
    let hi = cdf.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((cdf[mid] as number) > x) hi = mid
      else lo = mid + 1
    }
    return lo
  }
}

/**
 * Zipf(-Mandelbrot) weights 1/(rank + 1 + offset)^exponent for ranks 0..n-1. An offset > 0 flattens
 * the head (the heaviest few are less extreme) and keeps the power-law tail.
 */
export function zipfWeights(n: number, exponent: number, offset = 0): Float64Array {
  const w = new Float64Array(n)
  for (let i = 0; i < n; i++) w[i] = 1 / Math.pow(i + 1 + offset, exponent)
  return w
}

/** A sampler over ranks 0..n-1 with Zipf(-Mandelbrot) probabilities (rank 0 is the most likely). */
export function zipfSampler(n: number, exponent: number, offset = 0): CdfSampler {
  return new CdfSampler(zipfWeights(n, exponent, offset))
}
