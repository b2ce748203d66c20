import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { backoffMs } from '../core/backoff.js';
import { CachectlError, errorText, type ErrorCode } from '../core/errors.js';
import type { Compression } from '../core/narinfo.js';
import type { SecretKey } from '../core/signing.js';
import { parseStorePath } from '../core/store-path.js';
import type { CacheBackend } from '../cache/backend.js';
import type { LocalStore } from '../nix/local-store.js';
import { listGcRoots, removeGcRoots } from '../nix/gc-roots.js';
import { daemonIsAlive, HEARTBEAT_MS, type DaemonState, type DaemonStatus } from '../queue/daemon-record.js';
import { isDiskTrouble } from '../queue/database.js';
import type { NewPath } from '../queue/paths.js';
import type { Queue } from '../queue/queue.js';
import { readSpool, removeSpoolFiles } from '../queue/spool.js';
import { ensureCacheInfo, failureOf, newProgress, pushClosures, type PushFailure } from '../upload/push.js';
import { Histogram, type DaemonMetrics } from './metrics.js';
import { watchdogIntervalMs, type Notifier } from './notify.js';
import { LeaseWriter } from '../gc/lease.js';
import { Waker, watchQueue } from './wake.js';

/**
 * Failures of the cache or of this machine as a whole, no path's fault: they pause the uploader and use up no
 * path's tries. Nix's database that cannot be read is the machine's trouble, fixed there.
 */
const SHARED_TROUBLE: ReadonlySet<ErrorCode | 'INTERNAL'> = new Set([
  'CACHE_UNREACHABLE',
  'CACHE_THROTTLED',
  'CACHE_ACCESS_DENIED',
  'CACHE_NOT_FOUND',
  'CACHE_STORE_DIR_MISMATCH',
  'NIX_STORE_UNREADABLE',
]);
/** Pauses after shared trouble: 1 s, 2 s, … up to a minute (or what Retry-After asks). */
const PAUSE_BACKOFF = { baseMs: 1000, capMs: 60_000 };
/** Root paths claimed at once; their closures upload together. */
const BATCH_PATHS = 64;
/** A fallback in case a file-change event is missed; wake-ups normally come from the watcher. */
const IDLE_CHECK_MS = 10_000;
const GC_ROOT_SWEEP_MS = 5 * 60_000;
const DONE_RETENTION_MS = 7 * 24 * 3600_000;
const RATE_WINDOW_MS = 60_000;
/** How long a SIGTERM lets uploads in flight finish (systemd/cachectl.service's TimeoutStopSec exceeds it). */
export const DRAIN_MS = 60_000;

export interface DaemonOptions {
  queue: Queue;
  spoolDir: string;
  gcRootsDir: string;
  backend: CacheBackend;
  store: LocalStore;
  keys: readonly SecretKey[];
  compression: Compression;
  jobs: number;
  skipSignedBy: readonly string[];
  log: Logger;
  notifier?: Notifier | undefined;
  env: Readonly<Record<string, string | undefined>>;
  /** how long a claim holds before another start may take the path back */
  leaseMs?: number;
  /** how long a SIGTERM waits for uploads in flight before handing them back to the queue */
  drainMs?: number;
  now?: () => number;
}

/**
 * The uploader: takes what hooks queue, uploads closures with the push pipeline and records each outcome in
 * the queue. One runs per queue. `run()` resolves when it has stopped; `stop()` asks it to drain.
 */
export class Daemon {
  private readonly options: DaemonOptions;
  private readonly queue: Queue;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly leaseMs: number;
  private readonly waker = new Waker();
  private readonly lease: LeaseWriter;
  private readonly startedAt: number;
  private stopping = false;
  private inFlight: string[] = [];
  private jobs: number;
  private pauseLevel = 0;
  private pausedUntil = 0;
  private pauseReason: string | undefined;
  private uploadedPaths = 0;
  private uploadedNarBytes = 0;
  private uploadedFileBytes = 0;
  private retries = 0;
  private readonly failuresByCode = new Map<string, number>();
  private readonly uploadSeconds = new Histogram();
  private readonly samples: { at: number; paths: number; bytes: number }[] = [];
  private lastStatusText = '';
  private currentState: DaemonState = 'starting';
  private prunedAt = 0;

  constructor(options: DaemonOptions) {
    this.options = options;
    this.queue = options.queue;
    this.log = options.log;
    this.now = options.now ?? Date.now;
    this.leaseMs = options.leaseMs ?? 60_000;
    this.jobs = options.jobs;
    this.startedAt = this.now();
    this.lease = new LeaseWriter(options.backend);
  }

  /**
   * Takes over the queue, waits until the cache answers, tells the service manager it is ready, then uploads
   * until `stop()`.
   */
  async run(): Promise<void> {
    this.takeOver();
    const unwatch = await watchQueue(this.queue.file, this.options.spoolDir, () => this.waker.wake());
    const timers: NodeJS.Timeout[] = [];
    try {
      // The watchdog counts from the start, and waiting for the cache may take long.
      const watchdogMs = watchdogIntervalMs(this.options.env, process.pid);
      if (watchdogMs !== undefined) timers.push(setInterval(() => this.options.notifier?.notify({ WATCHDOG: '1' }), watchdogMs));
      await this.waitForCache();
      if (this.stopping) return;
      this.setState('idle');
      this.options.notifier?.notify({ READY: '1', STATUS: this.statusText() });
      this.log.info({ queue: this.queue.file, cache: this.options.backend.displayUrl, jobs: this.jobs }, 'ready');
      timers.push(setInterval(() => this.heartbeat(), HEARTBEAT_MS));
      timers.push(setInterval(() => this.sweepGcRoots(), GC_ROOT_SWEEP_MS));
      this.sweepGcRoots();
      await this.loop();
    } finally {
      for (const timer of timers) clearInterval(timer);
      this.lease.close();
      await unwatch();
      this.queue.daemon.clear(process.pid);
    }
  }

  /**
   * Graceful stop: claims nothing more, lets the uploads in flight finish for up to `drainMs`, then hands
   * what is left back to the queue (its try not counted). Resolves when the queue is consistent; uploads
   * that were abandoned may still be running, so the caller exits the process.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info({ inFlight: this.inFlight.length }, 'draining');
    this.options.notifier?.notify({ STOPPING: '1' });
    this.setState('draining');
    this.waker.wake();
    const deadline = this.now() + (this.options.drainMs ?? DRAIN_MS);
    while (this.inFlight.length > 0 && this.now() < deadline) await sleep(50);
    if (this.inFlight.length > 0) {
      this.log.warn({ paths: this.inFlight.length }, 'drain time is up: uploads in flight go back to the queue');
      this.queue.paths.release(this.inFlight);
      this.inFlight = [];
    }
  }

  private takeOver(): void {
    const other = this.queue.daemon.read();
    if (other !== undefined && other.pid !== process.pid && daemonIsAlive(other, this.now())) {
      throw new CachectlError(
        'DAEMON_RUNNING',
        `another cachectl daemon (pid ${other.pid} on ${other.host}) is using the queue ${this.queue.file}; stop it first, or use another --queue`,
      );
    }
    this.heartbeat();
    // Only one daemon runs per queue, so whatever is `uploading` now was left by one that died.
    const recovered = this.queue.paths.recoverAbandoned(true);
    if (recovered > 0) this.log.warn({ paths: recovered }, 'took back paths a stopped daemon was uploading');
  }

  private async waitForCache(): Promise<void> {
    for (let attempt = 1; !this.stopping; attempt++) {
      try {
        await ensureCacheInfo(this.options.backend, this.options.store.storeDir);
        return;
      } catch (err) {
        // The same trouble that pauses a running daemon: credentials renewed or a bucket created later
        // must not need a restart.
        if (!(err instanceof CachectlError) || !(err.retryable || SHARED_TROUBLE.has(err.code))) throw err;
        const waitMs = backoffMs(attempt, PAUSE_BACKOFF, Math.random());
        this.log.warn({ code: err.code, err: errorText(err), waitMs }, 'waiting for the cache');
        this.pausedUntil = this.now() + waitMs;
        this.pauseReason = `${err.code}: ${err.message}`;
        this.setState('paused');
        await this.waker.sleep(waitMs);
      }
    }
  }

  private async loop(): Promise<void> {
    for (let failedWrites = 0; !this.stopping; ) {
      try {
        await this.turn();
        failedWrites = 0;
      } catch (err) {
        if (!isDiskTrouble(err)) throw err;
        // A full disk must not end the daemon: what is queued stays, and work resumes when space returns.
        failedWrites += 1;
        const waitMs = backoffMs(failedWrites, PAUSE_BACKOFF, Math.random());
        this.log.error({ err: errorText(err), queue: this.queue.file, waitMs }, 'cannot write the queue; is its disk full? trying again');
        // the next turn waits this out
        this.pausedUntil = this.now() + waitMs;
        this.pauseReason = `cannot write the queue ${this.queue.file}: ${errorText(err)}`;
      }
    }
  }

  /** One turn of the loop: take in what hooks queued, then upload a batch or wait. */
  private async turn(): Promise<void> {
    this.ingest();
    const now = this.now();
    if (now < this.pausedUntil) {
      await this.waker.sleep(this.pausedUntil - now);
      return;
    }
    const roots = this.queue.paths.claim(BATCH_PATHS, this.leaseMs);
    if (roots.length === 0) {
      this.setState('idle');
      const due = this.queue.paths.nextDueAt();
      await this.waker.sleep(Math.max(0, Math.min(IDLE_CHECK_MS, (due ?? Infinity) - this.now())));
      return;
    }
    await this.upload(roots);
  }

  /** Takes the inbox and the spool into the queue. */
  private ingest(): void {
    try {
      const taken = this.queue.paths.ingestInbox();
      if (taken > 0) this.log.debug({ paths: taken }, 'took paths from the inbox');
      this.ingestSpool();
    } catch (err) {
      this.log.error({ err: errorText(err) }, 'cannot take in queued paths');
    }
  }

  private ingestSpool(): void {
    const spool = readSpool(this.options.spoolDir);
    if (spool.files.length === 0) return;
    for (const problem of spool.problems) this.log.warn({ line: problem }, 'ignoring a malformed spool line');
    const now = this.now();
    const paths: NewPath[] = [];
    for (const entry of spool.entries) {
      try {
        parseStorePath(entry.path, this.options.store.storeDir);
      } catch (err) {
        this.log.warn({ path: entry.path, err: errorText(err) }, 'ignoring a spooled path that is not a store path');
        continue;
      }
      if (entry.kind === 'out') {
        paths.push({ storePath: entry.path, source: 'hook', enqueuedAt: now });
        continue;
      }
      const outputs = this.options.store.queryDerivationOutputs(entry.path);
      if (outputs.length === 0) {
        this.queue.paths.addFailed(
          { storePath: entry.path, source: 'hook', enqueuedAt: now },
          { code: 'PATH_NOT_VALID', message: `the derivation ${entry.path} has no valid outputs in the local store; build it again` },
        );
      }
      for (const output of outputs) paths.push({ storePath: output, source: 'hook', enqueuedAt: now });
    }
    this.queue.paths.add(paths);
    removeSpoolFiles(spool.files);
    this.log.info({ files: spool.files.length, paths: paths.length }, 'took paths from the spool');
  }

  private async upload(roots: string[]): Promise<void> {
    this.inFlight = roots;
    this.setState('uploading');
    const renew = setInterval(() => this.queue.paths.renewLeases(this.inFlight, this.leaseMs), this.leaseMs / 3);
    const started = this.now();
    try {
      const valid = this.options.store.queryPathInfos(roots);
      for (const root of roots.filter((r) => !valid.has(r))) {
        this.countFailure('PATH_NOT_VALID');
        this.queue.paths.fail(
          root,
          {
            code: 'PATH_NOT_VALID',
            message: `${root} is no longer in the local Nix store (deleted before it was uploaded); build it again, then run cachectl retry`,
          },
          false,
        );
        this.log.error({ storePath: root }, 'path is gone from the local store');
      }
      const validRoots = roots.filter((r) => valid.has(r));
      if (validRoots.length === 0) return;
      const progress = newProgress();
      const { backend, store, compression, keys, skipSignedBy } = this.options;
      // Done as soon as published: a root that waited for the rest of its batch would be blamed for a crash after it.
      const onRootPublished = (root: string) => {
        try {
          this.queue.paths.complete([root]);
          this.releaseGcRoots([root]);
        } catch (err) {
          // the end of the batch completes it again, or the loop's disk-trouble pause takes over
          this.log.warn({ storePath: root, err: errorText(err) }, 'could not mark an uploaded path done yet');
        }
      };
      const result = await pushClosures(validRoots, { backend, store, compression, keys, skipSignedBy, jobs: this.jobs, progress, lease: this.lease, onRootPublished });
      if (this.inFlight.length === 0) return; // a drain timed out and handed the paths back already
      const failures = new Map(result.failed.map((failure) => [failure.path, failure]));
      const uploaded = validRoots.filter((root) => !failures.has(root));
      this.queue.paths.complete(uploaded);
      this.releaseGcRoots(uploaded);
      this.count(result.uploaded.length + result.repaired.length, result.narBytes, result.fileBytes);
      this.uploadSeconds.observe((this.now() - started) / 1000);
      this.log.info(
        { roots: validRoots.length, uploaded: result.uploaded.length, repaired: result.repaired.length, present: result.alreadyPresent, narBytes: result.narBytes, ms: this.now() - started },
        'uploaded',
      );
      // Throttling says the most about how to go on: fewer uploads at once.
      const trouble =
        result.failed.find((failure) => failure.rootCode === 'CACHE_THROTTLED') ??
        result.failed.find((failure) => SHARED_TROUBLE.has(failure.rootCode));
      for (const root of validRoots) {
        const failure = failures.get(root);
        if (failure !== undefined) this.recordFailure(root, failure, trouble !== undefined);
      }
      if (trouble !== undefined) this.pause(trouble);
      else this.recover();
    } catch (err) {
      // The batch as a whole failed before uploading: the cache, or the local store, is the problem.
      if (this.inFlight.length === 0) return;
      const failure = failureOf(roots[0] ?? '', err);
      const trouble = SHARED_TROUBLE.has(failure.rootCode);
      for (const root of roots.filter((r) => this.inFlight.includes(r))) this.recordFailure(root, failure, trouble);
      if (trouble) this.pause(failure);
      else this.log.error({ err: failure.message }, 'batch failed');
    } finally {
      clearInterval(renew);
      this.inFlight = [];
    }
  }

  private recordFailure(root: string, failure: PushFailure, sharedTrouble: boolean): void {
    this.countFailure(failure.rootCode);
    if (sharedTrouble && SHARED_TROUBLE.has(failure.rootCode)) {
      // Not the path's fault: back in line for when the pause ends, no try used up.
      this.queue.paths.release([root], this.pausedUntilAfter(failure), { code: failure.rootCode, message: failure.message });
      return;
    }
    const state = this.queue.paths.fail(root, { code: failure.rootCode, message: failure.message }, failure.retryable);
    if (state === 'pending') this.retries += 1;
    this.log[state === 'failed' ? 'error' : 'warn']({ storePath: root, code: failure.rootCode, err: failure.message, state }, 'upload failed');
  }

  /** When the uploader may try again after this shared trouble. */
  private pausedUntilAfter(failure: PushFailure): number {
    const waitMs = Math.max(failure.retryAfterMs ?? 0, backoffMs(this.pauseLevel + 1, PAUSE_BACKOFF, 0.5));
    return Math.max(this.pausedUntil, this.now() + waitMs);
  }

  /** Shared trouble: wait, longer each time; throttling also halves the uploads in flight. */
  private pause(failure: PushFailure): void {
    this.pausedUntil = this.pausedUntilAfter(failure);
    this.pauseLevel += 1;
    this.pauseReason = `${failure.rootCode}: ${failure.message}`;
    if (failure.rootCode === 'CACHE_THROTTLED') this.jobs = Math.max(1, Math.floor(this.jobs / 2));
    this.log.warn({ code: failure.rootCode, err: failure.message, waitMs: this.pausedUntil - this.now(), jobs: this.jobs }, 'cache or machine trouble: pausing');
    this.setState('paused');
  }

  /** A batch went through: the pause is over, and the parallelism grows back one step at a time. */
  private recover(): void {
    if (this.pauseLevel > 0) this.log.info({ jobs: this.jobs }, 'trouble over: uploading again');
    this.pauseLevel = 0;
    this.pauseReason = undefined;
    this.jobs = Math.min(this.options.jobs, this.jobs + 1);
  }

  private countFailure(code: string): void {
    this.failuresByCode.set(code, (this.failuresByCode.get(code) ?? 0) + 1);
  }

  private count(paths: number, bytes: number, fileBytes: number): void {
    this.uploadedPaths += paths;
    this.uploadedNarBytes += bytes;
    this.uploadedFileBytes += fileBytes;
    const now = this.now();
    this.samples.push({ at: now, paths, bytes });
    while ((this.samples[0]?.at ?? now) < now - RATE_WINDOW_MS) this.samples.shift();
  }

  /** The counters and state for the metrics endpoint. */
  metrics(): DaemonMetrics {
    return { status: this.status(), failuresByCode: this.failuresByCode, uploadSeconds: this.uploadSeconds };
  }

  private status(): DaemonStatus {
    const now = this.now();
    const recent = this.samples.filter((sample) => sample.at >= now - RATE_WINDOW_MS);
    const seconds = Math.max(1, Math.min(RATE_WINDOW_MS, now - this.startedAt) / 1000);
    return {
      state: this.stopping ? 'draining' : now < this.pausedUntil ? 'paused' : this.currentState,
      uploadedPaths: this.uploadedPaths,
      uploadedNarBytes: this.uploadedNarBytes,
      uploadedFileBytes: this.uploadedFileBytes,
      failedAttempts: [...this.failuresByCode.values()].reduce((sum, n) => sum + n, 0),
      retries: this.retries,
      pathsPerSecond: recent.reduce((sum, s) => sum + s.paths, 0) / seconds,
      narBytesPerSecond: recent.reduce((sum, s) => sum + s.bytes, 0) / seconds,
      jobs: this.jobs,
      ...(now < this.pausedUntil ? { pausedUntil: this.pausedUntil } : {}),
      ...(this.pauseReason !== undefined ? { pauseReason: this.pauseReason } : {}),
    };
  }

  /**
   * Heartbeats go out on a timer and when the state changes, never on every turn of the loop: each is a write
   * to the queue, and a write to the queue wakes the loop.
   */
  private setState(state: DaemonState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.heartbeat();
  }

  /** Records liveness and status in the queue (for `cachectl status`) and tells systemd when it changed. */
  private heartbeat(): void {
    const now = this.now();
    try {
      this.queue.daemon.write({
        pid: process.pid,
        host: hostname(),
        startedAt: this.startedAt,
        status: this.status(),
      });
      if (now - this.prunedAt > 3600_000) {
        this.prunedAt = now;
        this.queue.paths.pruneDone(now - DONE_RETENTION_MS);
      }
    } catch (err) {
      this.log.error({ err: errorText(err) }, 'cannot write the heartbeat');
    }
    const text = this.statusText();
    if (text !== this.lastStatusText && this.currentState !== 'starting') {
      this.lastStatusText = text;
      this.options.notifier?.notify({ STATUS: text });
    }
  }

  /** One line for systemd's STATUS=: counts and rate. */
  private statusText(): string {
    const counts = this.queue.paths.counts();
    const status = this.status();
    const rate = `${status.pathsPerSecond.toFixed(1)} paths/s`;
    const paused = status.pausedUntil !== undefined ? `; paused: ${status.pauseReason ?? ''}` : '';
    return `${status.state}: ${counts.pending + counts.inbox} pending, ${counts.uploading} uploading, ${counts.done} done, ${counts.failed} failed; ${rate}${paused}`;
  }

  /** Lets go of the GC roots of uploaded paths, except those a hook has queued again meanwhile. */
  private releaseGcRoots(uploaded: readonly string[]): void {
    const requeued = this.queue.paths.inboxPaths();
    removeGcRoots(this.options.gcRootsDir, uploaded.filter((path) => !requeued.has(path)));
  }

  /** Removes the GC roots of uploaded paths (also the ones a hook made after the upload finished). */
  private sweepGcRoots(): void {
    try {
      const rooted = listGcRoots(this.options.gcRootsDir, this.options.store.storeDir);
      if (rooted.length === 0) return;
      const states = this.queue.paths.statesOf(rooted);
      this.releaseGcRoots(rooted.filter((path) => states.get(path) === 'done'));
    } catch (err) {
      this.log.error({ err: errorText(err), dir: this.options.gcRootsDir }, 'cannot sweep GC roots');
    }
  }
}
