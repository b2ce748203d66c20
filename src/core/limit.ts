/** Runs at most `limit` tasks at once, in the order they were queued. */
export class Limiter {
  private running = 0;
  // A queue read from `head`: Array#shift copies the whole array, which a million waiting tasks make quadratic.
  private waiting: (() => void)[] = [];
  private head = 0;

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running += 1;
    try {
      return await task();
    } finally {
      this.next();
    }
  }

  private next(): void {
    const resume = this.waiting[this.head];
    if (resume === undefined) {
      this.running -= 1;
      return;
    }
    this.head += 1;
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
    resume();
  }
}

/**
 * Applies `task` to every index below `count`, at most `limit` at once, in order; rejects with the first failure
 * after all settle. Only `limit` promises exist at a time, however large `count` is.
 */
export async function forEachLimit(
  count: number,
  limit: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { reason: unknown } | undefined;
  const worker = async () => {
    while (next < count) {
      const index = next++;
      try {
        await task(index);
      } catch (err) {
        failure ??= { reason: err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failure !== undefined) throw failure.reason;
}

/** Applies `task` to every item, at most `limit` at once; rejects with the first failure after all settle. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  await forEachLimit(items.length, limit, async (index) => {
    results[index] = await task(items[index] as T);
  });
  return results;
}
