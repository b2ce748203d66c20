import { hostname } from 'node:os';

export const DAEMON_STATES = ['starting', 'idle', 'uploading', 'paused', 'draining'] as const;
export type DaemonState = (typeof DAEMON_STATES)[number];

/** What a running daemon reports in its record, for `cachectl status` and the metrics. */
export interface DaemonStatus {
  state: DaemonState;
  /** since the daemon started: */
  uploadedPaths: number;
  uploadedNarBytes: number;
  uploadedFileBytes: number;
  /** failed upload attempts of queued paths, and those of them that went back to pending */
  failedAttempts: number;
  retries: number;
  pathsPerSecond: number;
  narBytesPerSecond: number;
  jobs: number;
  pausedUntil?: number;
  pauseReason?: string;
}

/** The daemon's own row in the queue: who runs it, its last heartbeat and what it reports. */
export interface DaemonRecord {
  pid: number;
  host: string;
  startedAt: number;
  heartbeatAt: number;
  /** undefined when the stored status cannot be read (written by another version) */
  status: DaemonStatus | undefined;
}

/** How often a running daemon writes its record. */
export const HEARTBEAT_MS = 2000;
/** A heartbeat older than this means the daemon is gone (status shows it, a new daemon takes over). */
export const DAEMON_STALE_MS = 5 * HEARTBEAT_MS;

/** Whether the daemon of this record still runs: a fresh heartbeat and, on this host, a live process. */
export function daemonIsAlive(record: DaemonRecord, now: number): boolean {
  if (now - record.heartbeatAt >= DAEMON_STALE_MS) return false;
  if (record.host !== hostname()) return true;
  try {
    process.kill(record.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The status as the daemon stored it, checked field by field: undefined when it is not one. */
export function parseDaemonStatus(text: string): DaemonStatus | undefined {
  let fields: Record<string, unknown>;
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null) return undefined;
    fields = { ...value };
  } catch {
    return undefined;
  }
  const number = (name: keyof DaemonStatus): number => {
    const value = fields[name];
    if (typeof value !== 'number') throw new TypeError(name);
    return value;
  };
  const state = DAEMON_STATES.find((known) => known === fields['state']);
  if (state === undefined) return undefined;
  try {
    const { pausedUntil, pauseReason } = fields;
    return {
      state,
      uploadedPaths: number('uploadedPaths'),
      uploadedNarBytes: number('uploadedNarBytes'),
      uploadedFileBytes: number('uploadedFileBytes'),
      failedAttempts: number('failedAttempts'),
      retries: number('retries'),
      pathsPerSecond: number('pathsPerSecond'),
      narBytesPerSecond: number('narBytesPerSecond'),
      jobs: number('jobs'),
      ...(typeof pausedUntil === 'number' ? { pausedUntil } : {}),
      ...(typeof pauseReason === 'string' ? { pauseReason } : {}),
    };
  } catch {
    return undefined;
  }
}
