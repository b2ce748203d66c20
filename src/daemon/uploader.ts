import type { Logger } from 'pino';
import { whenAborted } from '../core/abort.js';
import { CachectlError, errorText } from '../core/errors.js';
import type { DaemonState } from '../queue/daemon-record.js';
import { isDiskTrouble } from '../queue/database.js';
import {
  initialPause,
  isSharedTrouble,
  pauseFor,
  pausingTrouble,
  recovered,
  retryWaitMs,
  type PauseState,
  type Trouble,
} from './policy.js';

/** A fallback in case a file-change event is missed; wake-ups normally come from the watcher. */
const IDLE_CHECK_MS = 10_000;

/** What became of a claimed batch of root paths. */
export interface BatchOutcome {
  /** the roots that failed, with why */
  failures: ReadonlyMap<string, Trouble>;
  /** false when the batch failed as a whole before anything was uploaded */
  completed: boolean;
  /** the roots the batch uploaded */
  uploadedRoots: readonly string[];
}

/** The uploader's work, handed to it: the queue and the push behind plain functions. */
export interface UploaderWork<Outcome extends BatchOutcome> {
  /** Answers when the cache can be written; throws what keeps it from being written. */
  ready(): Promise<void>;
  /** Takes in what hooks queued; never throws. */
  takeIn(): void;
  /** Claims due root paths (their try counts now). */
  claim(): string[];
  /** Uploads the closures of `roots`, `jobs` NARs at once, until done or `signal` abandons it; never throws. */
  upload(roots: readonly string[], jobs: number, signal: AbortSignal): Promise<Outcome>;
  /**
   * Records the outcome in the queue: uploaded roots done, failed ones failed or back to pending. With
   * `resumeAt`, the uploader pauses until then, and roots that failed by shared trouble wait for it without
   * using up a try.
   */
  record(roots: readonly string[], outcome: Outcome, resumeAt: number | undefined): void;
  /** Hands claimed roots back to the queue without using up a try. */
  release(roots: readonly string[]): void;
  /** When the earliest pending path is due, if any is pending. */
  nextDueAt(): number | undefined;
}

export interface UploaderOptions {
  /** uploads at once, when nothing throttles */
  jobs: number;
  /** abandons the batch in flight: its uploads stop and its roots go back to the queue */
  signal: AbortSignal;
  /** the queue file, for messages */
  queueFile: string;
  log: Logger;
  now: () => number;
  random: () => number;
  /** sleeps up to `ms`; `wake()` ends the sleep (or the next one) early */
  sleep: (ms: number) => Promise<void>;
  wake: () => void;
  /** called on every change of state */
  onState: (state: DaemonState) => void;
  /** called on every pause for shared trouble, with its error code */
  onPause: (code: string) => void;
}

/**
 * The uploader loop: waits until the cache answers, then takes in, claims, uploads and records, pausing on
 * shared trouble, until `stop()`. A stop lets the batch in flight finish; the signal abandons it.
 */
export class Uploader<Outcome extends BatchOutcome> {
  private pause: PauseState;
  private state: DaemonState = 'starting';
  private stopping = false;

  constructor(
    private readonly work: UploaderWork<Outcome>,
    private readonly options: UploaderOptions,
  ) {
    this.pause = initialPause(options.jobs);
  }

  /** Waits for the cache, calls `onReady`, then uploads until stopped. Resolves once stopped. */
  async run(onReady: () => void): Promise<void> {
    await this.waitUntilReady();
    if (this.stopped()) return;
    this.setState('idle');
    onReady();
    for (let failedWrites = 0; !this.stopped();) {
      try {
        await this.turn();
        failedWrites = 0;
      } catch (err) {
        if (!isDiskTrouble(err)) throw err;
        // A full disk must not end the daemon: what is queued stays, and work resumes when space returns.
        failedWrites += 1;
        const waitMs = retryWaitMs(failedWrites, this.options.random());
        this.options.log.error(
          { err, queue: this.options.queueFile, waitMs },
          'cannot write the queue; is its disk full? trying again',
        );
        // the next turn waits this out
        this.pause = {
          ...this.pause,
          pausedUntil: this.options.now() + waitMs,
          reason: `cannot write the queue ${this.options.queueFile}: ${errorText(err)}`,
        };
        this.options.onPause(String((err as { code: unknown }).code));
      }
    }
  }

  /** Claims nothing more; the batch in flight finishes, unless the signal abandons it first. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.setState('draining');
    this.options.wake();
  }

  /** The state as status shows it, with the uploads at once and the pause. */
  status(): { state: DaemonState; jobs: number; pausedUntil?: number; pauseReason?: string } {
    const paused = this.options.now() < this.pause.pausedUntil;
    return {
      state: this.stopping ? 'draining' : paused ? 'paused' : this.state,
      jobs: this.pause.jobs,
      ...(paused ? { pausedUntil: this.pause.pausedUntil } : {}),
      ...(this.pause.reason !== undefined ? { pauseReason: this.pause.reason } : {}),
    };
  }

  private stopped(): boolean {
    return this.stopping || this.options.signal.aborted;
  }

  private async waitUntilReady(): Promise<void> {
    for (let attempt = 1; !this.stopped(); attempt++) {
      try {
        await this.work.ready();
        return;
      } catch (err) {
        // The same trouble that pauses a running daemon: credentials renewed or a bucket created later
        // must not need a restart.
        if (!(err instanceof CachectlError) || !(err.retryable || isSharedTrouble(err.code))) throw err;
        const waitMs = retryWaitMs(attempt, this.options.random());
        this.options.log.warn({ code: err.code, err, waitMs }, 'waiting for the cache');
        this.pause = { ...this.pause, pausedUntil: this.options.now() + waitMs, reason: `${err.code}: ${err.message}` };
        this.options.onPause(err.code);
        this.setState('paused');
        await this.options.sleep(waitMs);
      }
    }
  }

  /** One turn of the loop: take in what hooks queued, then upload a batch or wait. */
  private async turn(): Promise<void> {
    this.work.takeIn();
    const now = this.options.now();
    if (now < this.pause.pausedUntil) {
      await this.options.sleep(this.pause.pausedUntil - now);
      return;
    }
    // A stop comes between turns or during a sleep: nothing is claimed after it.
    if (this.stopped()) return;
    const roots = this.work.claim();
    if (roots.length === 0) {
      this.setState('idle');
      const due = this.work.nextDueAt() ?? Infinity;
      await this.options.sleep(Math.max(0, Math.min(IDLE_CHECK_MS, due - this.options.now())));
      return;
    }
    await this.uploadBatch(roots);
  }

  private async uploadBatch(roots: readonly string[]): Promise<void> {
    this.setState('uploading');
    const { signal, log } = this.options;
    const uploading = this.work.upload(roots, this.pause.jobs, signal);
    const { aborted, dispose } = whenAborted(signal);
    let outcome: Outcome | undefined;
    try {
      outcome = await Promise.race([uploading, aborted]);
    } catch (err) {
      if (!signal.aborted) throw err;
    } finally {
      dispose();
    }
    if (outcome === undefined || signal.aborted) {
      // The abandoned uploads stop on the signal; whatever they still do is not waited for.
      uploading.catch(() => undefined);
      log.warn({ paths: roots.length }, 'drain time is up: uploads in flight go back to the queue');
      this.work.release(roots);
      return;
    }
    const trouble = pausingTrouble([...outcome.failures.values()]);
    if (trouble !== undefined)
      this.pause = pauseFor(this.pause, trouble, this.options.now(), outcome.uploadedRoots.length > 0);
    this.work.record(roots, outcome, trouble === undefined ? undefined : this.pause.pausedUntil);
    if (trouble !== undefined) {
      const waitMs = this.pause.pausedUntil - this.options.now();
      log.warn(
        { code: trouble.code, err: trouble.message, waitMs, jobs: this.pause.jobs },
        'cache or machine trouble: pausing',
      );
      this.options.onPause(trouble.code);
      this.setState('paused');
    } else if (outcome.completed) {
      if (this.pause.level > 0) log.info({ jobs: this.pause.jobs }, 'trouble over: uploading again');
      this.pause = recovered(this.pause, this.options.jobs);
    }
  }

  private setState(state: DaemonState): void {
    if (state === this.state) return;
    this.state = state;
    this.options.onState(state);
  }
}
