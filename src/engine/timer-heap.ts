/** A timer to fire: ordered by due time, then user id, then timer key, so firing order is deterministic. */
export interface TimerEntry {
  readonly due: number
  readonly userId: string
  /** `<operator>\u0000<name>` */
  readonly timer: string
}

function before(a: TimerEntry, b: TimerEntry): boolean {
  if (a.due !== b.due) return a.due < b.due
  if (a.userId !== b.userId) return a.userId < b.userId
  return a.timer < b.timer
}

/** Binary min-heap of timer entries. */
export class TimerHeap {
  private readonly items: TimerEntry[] = []

  get size(): number {
    return this.items.length
  }

  peek(): TimerEntry | undefined {
    return this.items[0]
  }

  /**
   * Visits every entry due at or before `upTo`, in no particular order, without popping: a walk
   * down the heap that stops at entries due later (their subtrees are all due later too).
   */
  forEachDue(upTo: number, visit: (entry: TimerEntry) => void): void {
    const items = this.items
    if (items.length === 0 || (items[0] as TimerEntry).due > upTo) return
    const stack = [0]
    while (stack.length > 0) {
      const i = stack.pop() as number
      const e = items[i]
      if (e === undefined || e.due > upTo) continue
      visit(e)
      stack.push(2 * i + 1, 2 * i + 2)
    }
  }

  push(entry: TimerEntry): void {
    const items = this.items
    items.push(entry)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      const p = items[parent] as TimerEntry
      if (!before(entry, p)) break
      items[i] = p
      i = parent
    }
    items[i] = entry
  }

  pop(): TimerEntry | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (top === undefined || last === undefined || items.length === 0) return top
    let i = 0
    const n = items.length
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      let child = l
      if (r < n && before(items[r] as TimerEntry, items[l] as TimerEntry)) child = r
      const c = items[child] as TimerEntry
      if (!before(c, last)) break
      items[i] = c
      i = child
    }
    items[i] = last
    return top
  }

  clear(): void {
    this.items.length = 0
  }
}
