import type { Config } from '../core/config.js';
import { Queue } from '../queue/queue.js';
import { statusOf, type StatusReport } from '../queue/status-report.js';
import { formatBytes } from './progress.js';

/** `cachectl status`: reads the queue (never writes it). */
export function readStatus(config: Config, now = Date.now()): StatusReport {
  const queue = Queue.openExisting(config.queue, { readonly: true });
  try {
    return statusOf(queue, now);
  } finally {
    queue.close();
  }
}

export function formatStatus(report: StatusReport): string {
  const lines: string[] = [`queue ${report.queue}`];
  const { daemon, counts } = report;
  if (daemon.alive) {
    const { status } = daemon;
    if (status === undefined) {
      lines.push(
        `daemon: running (pid ${daemon.pid}, since ${daemon.startedAt}); its status is unreadable: is it another ` +
          `cachectl version?`,
      );
    } else {
      const rate = `${status.pathsPerSecond.toFixed(1)} paths/s, ${formatBytes(status.narBytesPerSecond)}/s`;
      lines.push(
        `daemon: ${status.state} (pid ${daemon.pid}, since ${daemon.startedAt}), ${rate}, ${status.jobs} jobs`,
      );
      if (status.pausedUntil !== undefined) {
        lines.push(`  paused until ${new Date(status.pausedUntil).toISOString()}: ${status.pauseReason ?? ''}`);
      }
    }
  } else if (daemon.pid !== undefined) {
    lines.push(
      `daemon: NOT RUNNING (pid ${daemon.pid} last seen ${formatAge(daemon.lastHeartbeatSeconds ?? 0)} ago); start ` +
        `it: systemctl start cachectl, or cachectl daemon`,
    );
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
    const deleted =
      `${gc.dryRun ? 'would delete' : 'deleted'} ${gc.deletedObjects} objects ` + `(${formatBytes(gc.deletedBytes)})`;
    lines.push(
      `last gc: ${when} on ${gc.cache}: ${gc.ok ? deleted : `DID NOT FINISH: ${gc.problem ?? ''}`}, took ` +
        `${gc.seconds.toFixed(1)} s`,
    );
  }
  if (report.failed.length > 0) {
    lines.push('failed (run cachectl retry --all, or cachectl retry PATH, once the cause is fixed):');
    for (const failed of report.failed) {
      lines.push(`  ${failed.storePath} (${failed.attempts} attempts): ${failed.lastError}`);
    }
    if (counts.failed > report.failed.length)
      lines.push(
        `  … and ${counts.failed - report.failed.length} more (--json lists the latest ${report.failed.length})`,
      );
  }
  return `${lines.join('\n')}\n`;
}

function formatAge(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
