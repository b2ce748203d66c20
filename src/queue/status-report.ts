import { daemonIsAlive, type DaemonStatus } from './daemon-record.js';
import type { GcRun } from './gc-runs.js';
import type { FailedPath, QueueCounts } from './paths.js';
import type { Queue } from './queue.js';
import { countSpoolFiles, spoolDirOf } from './spool.js';

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
    status?: DaemonStatus | undefined;
  };
  failed: FailedPath[];
  /** the last `cachectl gc` run on this machine, if any */
  lastGc: GcRun | null;
}

/** The status of an open queue (the daemon's metrics read their own). */
export function statusOf(queue: Queue, now = Date.now()): StatusReport {
  return queue.snapshot(() => readStatus(queue, now));
}

function readStatus(queue: Queue, now: number): StatusReport {
  const oldest = queue.paths.oldestPendingAt();
  const record = queue.daemon.read();
  const heartbeatAge = record === undefined ? undefined : now - record.heartbeatAt;
  const alive = record !== undefined && daemonIsAlive(record, now);
  return {
    queue: queue.file,
    counts: { ...queue.paths.counts(), spoolFiles: countSpoolFiles(spoolDirOf(queue.file)) },
    oldestPendingSeconds: oldest === undefined ? null : Math.max(0, (now - oldest) / 1000),
    uploadedLastMinute: queue.paths.uploadedSince(now - 60_000),
    uploadedLastHour: queue.paths.uploadedSince(now - 3600_000),
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
    failed: queue.paths.failedPaths(FAILED_SHOWN),
    lastGc: queue.gcRuns.last() ?? null,
  };
}
