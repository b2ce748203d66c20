import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { DaemonStatus } from '../queue/daemon-record.js';
import type { Queue } from '../queue/queue.js';
import type { Notifier } from './notify.js';

/** Uploaded paths are forgotten after this (their rows only serve the status counts). */
const DONE_RETENTION_MS = 7 * 24 * 3600_000;
const PRUNE_EVERY_MS = 3600_000;

/**
 * The daemon's liveness and status: its record in the queue (for `cachectl status` and a daemon that would
 * take over), and systemd's STATUS= line when it changed.
 */
export class Heartbeat {
  private lastStatusText = '';
  private prunedAt = 0;

  constructor(
    private readonly queue: Queue,
    private readonly status: () => DaemonStatus,
    private readonly options: { notifier: Notifier | undefined; log: Logger; now: () => number; startedAt: number },
  ) {}

  beat(): void {
    const now = this.options.now();
    const status = this.status();
    try {
      this.queue.daemon.write({ pid: process.pid, host: hostname(), startedAt: this.options.startedAt, status });
      if (now - this.prunedAt > PRUNE_EVERY_MS) {
        this.prunedAt = now;
        this.queue.paths.pruneDone(now - DONE_RETENTION_MS);
      }
    } catch (err) {
      this.options.log.error({ err }, 'cannot write the heartbeat');
    }
    const text = this.statusText(status);
    if (text !== this.lastStatusText && status.state !== 'starting') {
      this.lastStatusText = text;
      this.options.notifier?.notify({ STATUS: text });
    }
  }

  /** One line for systemd's STATUS=: counts and rate. */
  statusText(status: DaemonStatus = this.status()): string {
    const counts = this.queue.paths.counts();
    const rate = `${status.pathsPerSecond.toFixed(1)} paths/s`;
    const paused = status.pausedUntil !== undefined ? `; paused: ${status.pauseReason ?? ''}` : '';
    return (
      `${status.state}: ${counts.pending + counts.inbox} pending, ${counts.uploading} uploading, ${counts.done} ` +
      `done, ${counts.failed} failed; ${rate}${paused}`
    );
  }
}
