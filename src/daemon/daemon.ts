import type { Logger } from 'pino';
import { CachectlError } from '../core/errors.js';
import type { Compression } from '../core/narinfo.js';
import type { Signer } from '../upload/signer.js';
import type { CacheBackend } from '../cache/backend.js';
import { LeaseWriter } from '../gc/lease.js';
import type { LocalStore } from '../nix/local-store.js';
import { daemonIsAlive, HEARTBEAT_MS, type DaemonStatus } from '../queue/daemon-record.js';
import type { Queue } from '../queue/queue.js';
import { batchWork } from './batch.js';
import { Counters, type UploadTimes } from './counters.js';
import { Heartbeat } from './heartbeat.js';
import { Intake } from './intake.js';
import { LocalRoots } from './local-roots.js';
import type { DaemonMetrics } from './metrics.js';
import { watchdogIntervalMs, type Notifier } from './notify.js';
import { Uploader } from './uploader.js';
import { Waker, watchQueue } from './wake.js';

const GC_ROOT_SWEEP_MS = 5 * 60_000;
/** How long a SIGTERM lets uploads in flight finish (systemd/cachectl.service's TimeoutStopSec exceeds it). */
export const DRAIN_MS = 60_000;

export interface DaemonOptions {
  queue: Queue;
  spoolDir: string;
  gcRootsDir: string;
  backend: CacheBackend;
  store: LocalStore;
  signer: Signer;
  compression: Compression;
  /** whether NAR listings are written */
  narListing: boolean;
  jobs: number;
  skipSignedBy: readonly string[];
  log: Logger;
  notifier?: Notifier | undefined;
  env: Readonly<Record<string, string | undefined>>;
  /** abandons the uploads in flight (the drain time is up): they stop, and their paths go back to the queue */
  signal: AbortSignal;
  /** how long a claim holds before another start may take the path back */
  leaseMs?: number;
  now?: () => number;
  /** takes each batch's upload time (the metrics' histogram) */
  uploadTimes?: UploadTimes | undefined;
}

/**
 * The uploader daemon, wired: the loop (uploader.ts) handed the queue's paths and the push (batch.ts), with
 * intake, counters, heartbeat and the local GC roots beside it. One runs per queue. `run()` resolves once it has
 * stopped; `stop()` lets the batch in flight finish, and the signal abandons it.
 */
export class Daemon {
  private readonly options: DaemonOptions;
  private readonly queue: Queue;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly waker = new Waker();
  private readonly lease: LeaseWriter;
  private readonly counters: Counters;
  private readonly localRoots: LocalRoots;
  private readonly uploader;
  private readonly heartbeat: Heartbeat;

  constructor(options: DaemonOptions) {
    const { queue, log, store } = options;
    this.options = options;
    this.queue = queue;
    this.log = log;
    this.now = options.now ?? Date.now;
    const startedAt = this.now();
    this.lease = new LeaseWriter(options.backend);
    this.counters = new Counters(startedAt, options.uploadTimes);
    this.localRoots = new LocalRoots(options.gcRootsDir, store.storeDir, queue.paths, log);
    const work = batchWork({
      backend: options.backend,
      store,
      signer: options.signer,
      compression: options.compression,
      narListing: options.narListing,
      skipSignedBy: options.skipSignedBy,
      log,
      paths: queue.paths,
      intake: new Intake(queue.paths, options.spoolDir, store, log, this.now),
      localRoots: this.localRoots,
      counters: this.counters,
      lease: this.lease,
      leaseMs: options.leaseMs ?? 60_000,
      now: this.now,
    });
    this.uploader = new Uploader(work, {
      jobs: options.jobs,
      signal: options.signal,
      queueFile: queue.file,
      log,
      now: this.now,
      random: Math.random,
      sleep: (ms) => this.waker.sleep(ms),
      wake: () => {
        this.waker.wake();
      },
      // Heartbeats go out on a timer and when the state changes, never on every turn of the loop: each is a
      // write to the queue, and a write to the queue wakes the loop.
      onState: () => {
        this.heartbeat.beat();
      },
      onPause: (code) => {
        this.counters.paused(code);
      },
    });
    this.heartbeat = new Heartbeat(queue, () => this.status(), {
      notifier: options.notifier,
      log,
      now: this.now,
      startedAt,
    });
  }

  /**
   * Takes over the queue, waits until the cache answers, tells the service manager it is ready, then uploads
   * until stopped.
   */
  async run(): Promise<void> {
    this.takeOver();
    const unwatch = await watchQueue(this.queue.file, this.options.spoolDir, () => {
      this.waker.wake();
    });
    const timers: NodeJS.Timeout[] = [];
    const { notifier } = this.options;
    try {
      // The watchdog counts from the start, and waiting for the cache may take long.
      const watchdogMs = watchdogIntervalMs(this.options.env, process.pid);
      if (watchdogMs !== undefined) timers.push(setInterval(() => notifier?.notify({ WATCHDOG: '1' }), watchdogMs));
      await this.uploader.run(() => {
        notifier?.notify({ READY: '1', STATUS: this.heartbeat.statusText() });
        this.log.info(
          { queue: this.queue.file, cache: this.options.backend.displayUrl, jobs: this.options.jobs },
          'ready',
        );
        timers.push(
          setInterval(() => {
            this.heartbeat.beat();
          }, HEARTBEAT_MS),
        );
        timers.push(
          setInterval(() => {
            this.localRoots.sweep();
          }, GC_ROOT_SWEEP_MS),
        );
        this.localRoots.sweep();
      });
    } finally {
      for (const timer of timers) clearInterval(timer);
      this.lease.close();
      await unwatch();
      this.queue.daemon.clear(process.pid);
    }
  }

  /** Graceful stop: claims nothing more; the batch in flight finishes, or is abandoned through the signal. */
  stop(): void {
    this.log.info('draining');
    this.options.notifier?.notify({ STOPPING: '1' });
    this.uploader.stop();
  }

  /** The counters and state for the metrics endpoint. */
  metrics(): DaemonMetrics {
    return {
      status: this.status(),
      failuresByCode: this.counters.failuresByCode,
      pausesByCode: this.counters.pausesByCode,
    };
  }

  private status(): DaemonStatus {
    return { ...this.counters.counts(this.now()), ...this.uploader.status() };
  }

  private takeOver(): void {
    const other = this.queue.daemon.read();
    if (other !== undefined && other.pid !== process.pid && daemonIsAlive(other, this.now())) {
      throw new CachectlError(
        'DAEMON_RUNNING',
        `another cachectl daemon (pid ${other.pid} on ${other.host}) is using the queue ${this.queue.file}; stop it ` +
          `first, or use another --queue`,
      );
    }
    this.heartbeat.beat();
    // Only one daemon runs per queue, so whatever is `uploading` now was left by one that died.
    const recovered = this.queue.paths.recoverAbandoned(true);
    if (recovered > 0) this.log.warn({ paths: recovered }, 'took back paths a stopped daemon was uploading');
  }
}
