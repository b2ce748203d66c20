/**
 * When the uploader pauses, for how long, and how many uploads it runs at once: pure functions of the pause
 * state, the trouble seen and the clock.
 */
import { backoffMs } from '../core/backoff.js';
import type { ErrorCode } from '../core/errors.js';

/**
 * Failures of the cache or of this machine as a whole, no path's fault: they pause the uploader and use up no
 * path's tries. Nix's database that cannot be read is the machine's trouble, fixed there.
 */
const SHARED_TROUBLE: ReadonlySet<string> = new Set<ErrorCode>([
  'CACHE_UNREACHABLE',
  'CACHE_THROTTLED',
  'CACHE_ACCESS_DENIED',
  'CACHE_NOT_FOUND',
  'CACHE_STORE_DIR_MISMATCH',
  'NIX_STORE_UNREADABLE',
]);

/** Pauses after shared trouble: 1 s, 2 s, … up to a minute (or what Retry-After asks). */
const PAUSE_BACKOFF = { baseMs: 1000, capMs: 60_000 };

export function isSharedTrouble(code: string): boolean {
  return SHARED_TROUBLE.has(code);
}

/** A failure as the policy sees it. */
export interface Trouble {
  code: string;
  message: string;
  /** the wait the server asked for, if it did */
  retryAfterMs?: number | undefined;
}

export interface PauseState {
  /** pauses in a row, without a batch going through in between */
  level: number;
  /** no claims before this (ms since the epoch) */
  pausedUntil: number;
  reason: string | undefined;
  /** uploads at once now */
  jobs: number;
}

export function initialPause(jobs: number): PauseState {
  return { level: 0, pausedUntil: 0, reason: undefined, jobs };
}

/** The trouble of a batch that pauses the uploader, if any: throttling first, as it says most about how to go on. */
export function pausingTrouble<T extends Trouble>(failures: readonly T[]): T | undefined {
  return (
    failures.find((failure) => failure.code === 'CACHE_THROTTLED') ??
    failures.find((failure) => isSharedTrouble(failure.code))
  );
}

/**
 * Shared trouble: wait, longer each time (at least what the server asked); throttling also halves the uploads at
 * once. A pause never ends sooner than one already running. A batch that still got some paths through met a flaky
 * cache, not a down one: its pause stays at the first step.
 */
export function pauseFor(state: PauseState, trouble: Trouble, now: number, madeProgress = false): PauseState {
  const level = madeProgress ? 1 : state.level + 1;
  const waitMs = Math.max(trouble.retryAfterMs ?? 0, backoffMs(level, PAUSE_BACKOFF, 0.5));
  return {
    level,
    pausedUntil: Math.max(state.pausedUntil, now + waitMs),
    reason: `${trouble.code}: ${trouble.message}`,
    jobs: trouble.code === 'CACHE_THROTTLED' ? Math.max(1, Math.floor(state.jobs / 2)) : state.jobs,
  };
}

/** A batch went through: the pause is over, and the uploads at once grow back one step at a time. */
export function recovered(state: PauseState, maxJobs: number): PauseState {
  return { level: 0, pausedUntil: state.pausedUntil, reason: undefined, jobs: Math.min(maxJobs, state.jobs + 1) };
}

/**
 * Trouble that is not the cache's, or before the uploader runs (the queue cannot be written, the cache does not
 * answer yet): the `attempt`th wait in a row, with jitter.
 */
export function retryWaitMs(attempt: number, random: number): number {
  return backoffMs(attempt, PAUSE_BACKOFF, random);
}
