import type { Config } from '../core/config.js';
import { daemonIsAlive } from '../daemon/daemon.js';
import { Queue, type FailedPath, type GcRun, type QueueCounts } from '../queue/queue.js';
import { countSpoolFiles, spoolDirOf } from '../queue/spool.js';
import { formatBytes } from './progress.js';

/** Failed paths listed by `status` (the count covers all). */
const FAILED_SHOWN = 20;

export interface StatusReport {
  queue: string;
  counts: QueueCounts & { spoolFiles: number };
  /** seconds the oldest path not yet uploaded has waited */
  oldestPendingSeconds: number | null;
  /** root paths uploaded in the last minute and hour (from the queue) */
  uploadedLastMinute: number;
  uploadedLastHour: number;
  daemon: {
    alive: boolean;
    pid?: number;
    host?: string;
    startedAt?: string;
    lastHeartbeatSeconds?: number;
    /** what the daemon reports: state, rate (over the last minute), parallelism, pause */
    status?: Record<string, unknown>;
  };
  failed: FailedPath[];
  /** the last `cachectl gc` run on this machine, if any */
  lastGc: GcRun | null;
}

/** `cachectl status`: reads the queue (never writes it). */
export function readStatus(config: Config, now = Date.now()): StatusReport {
  const queue = Queue.openExisting(config.queue, { readonly: true });
  try {
    return statusOf(queue, now);
  } finally {
    queue.close();
  }
}

/** The status of an open queue (the daemon's metrics read their own). */
export function statusOf(queue: Queue, now = Date.now()): StatusReport {
  const oldest = queue.oldestPendingAt();
  const record = queue.daemon();
  const heartbeatAge = record === undefined ? undefined : now - record.heartbeatAt;
  const alive = record !== undefined && daemonIsAlive(record, now);
  return {
    queue: queue.file,
    counts: { ...queue.counts(), spoolFiles: countSpoolFiles(spoolDirOf(queue.file)) },
    oldestPendingSeconds: oldest === undefined ? null : Math.max(0, (now - oldest) / 1000),
    uploadedLastMinute: queue.uploadedSince(now - 60_000),
    uploadedLastHour: queue.uploadedSince(now - 3600_000),
    daemon:
      record === undefined
        ? { alive: false }
        : {
            alive,
            pid: record.pid,
            host: record.host,
            startedAt: new Date(record.startedAt).toISOString(),
            lastHeartbeatSeconds: Math.max(0, (heartbeatAge ?? 0) / 1000),
            ...(alive ? { status: record.status } : {}),
          },
    failed: queue.failedPaths(FAILED_SHOWN),
    lastGc: queue.lastGcRun() ?? null,
  };
}

export function formatStatus(report: StatusReport): string {
  const lines: string[] = [`queue ${report.queue}`];
  const { daemon, counts } = report;
  if (daemon.alive) {
    const status = daemon.status ?? {};
    const rate = `${Number(status['pathsPerSecond'] ?? 0).toFixed(1)} paths/s, ${formatBytes(Number(status['narBytesPerSecond'] ?? 0))}/s`;
    lines.push(`daemon: ${String(status['state'] ?? 'running')} (pid ${daemon.pid}, since ${daemon.startedAt}), ${rate}, ${String(status['jobs'] ?? '?')} jobs`);
    if (status['pausedUntil'] !== undefined) {
      lines.push(`  paused until ${new Date(Number(status['pausedUntil'])).toISOString()}: ${String(status['pauseReason'] ?? '')}`);
    }
  } else if (daemon.pid !== undefined) {
    lines.push(`daemon: NOT RUNNING (pid ${daemon.pid} last seen ${formatAge(daemon.lastHeartbeatSeconds ?? 0)} ago); start it: systemctl start cachectl, or cachectl daemon`);
  } else {
    lines.push('daemon: NOT RUNNING (none has run on this queue since it was last stopped cleanly)');
  }
  const waiting = counts.pending + counts.inbox;
  const oldest = report.oldestPendingSeconds === null ? '' : ` (oldest ${formatAge(report.oldestPendingSeconds)})`;
  lines.push(
    `paths: ${waiting} pending${oldest}, ${counts.uploading} uploading, ${counts.done} done, ${counts.failed} failed` +
      (counts.spoolFiles > 0 ? `; ${counts.spoolFiles} spool files not yet taken in` : ''),
  );
  lines.push(`uploaded: ${report.uploadedLastMinute} in the last minute, ${report.uploadedLastHour} in the last hour`);
  const gc = report.lastGc;
  if (gc !== null) {
    const when = `${formatAge((Date.now() - gc.finishedAt) / 1000)} ago`;
    const deleted = `${gc.dryRun ? 'would delete' : 'deleted'} ${gc.deletedObjects} objects (${formatBytes(gc.deletedBytes)})`;
    lines.push(`last gc: ${when} on ${gc.cache}: ${gc.ok ? deleted : `DID NOT FINISH: ${gc.problem ?? ''}`}, took ${gc.seconds.toFixed(1)} s`);
  }
  if (report.failed.length > 0) {
    lines.push('failed (run cachectl retry --all, or cachectl retry PATH, once the cause is fixed):');
    for (const failed of report.failed) {
      lines.push(`  ${failed.storePath} (${failed.attempts} attempts): ${failed.lastError}`);
    }
    if (counts.failed > report.failed.length) lines.push(`  … and ${counts.failed - report.failed.length} more (--json lists the latest ${report.failed.length})`);
  }
  return `${lines.join('\n')}\n`;
}

function formatAge(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
