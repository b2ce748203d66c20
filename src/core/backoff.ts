/** Capped exponential backoff with jitter: how long to wait before try number `attempt + 1`. */
export interface Backoff {
  readonly baseMs: number;
  readonly capMs: number;
}

/**
 * "Equal jitter": half the delay is fixed, half random, so retries of many paths that failed together spread
 * out while none retries sooner than half its step. `random` is in [0, 1).
 */
export function backoffMs(attempt: number, backoff: Backoff, random: number): number {
  const step = Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(step / 2 + (step / 2) * random);
}
