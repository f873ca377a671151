/**
 * A metric's value from a Prometheus text exposition (`/metrics`): the sum of its series, labelled
 * or not (a counter by reason sums to its total), NaN when it has none.
 */
export function metricValue(text: string, name: string): number {
  let sum = Number.NaN
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue
    const v = Number(line.slice(line.lastIndexOf(' ') + 1))
    sum = Number.isNaN(sum) ? v : sum + v
  }
  return sum
}
