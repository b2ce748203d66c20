import { hostname } from 'node:os';
import type Database from 'better-sqlite3';

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

/** The daemon's row of the queue database (one at most: one daemon runs per queue). */
export class DaemonRecords {
  private readonly select: Database.Statement<
    [],
    { pid: number; host: string; started_at: number; heartbeat_at: number; status: string }
  >;
  private readonly upsert: Database.Statement<[number, string, number, number, string]>;
  private readonly remove: Database.Statement<[number]>;

  constructor(
    db: Database.Database,
    private readonly now: () => number,
  ) {
    this.select = db.prepare('SELECT pid, host, started_at, heartbeat_at, status FROM daemon WHERE id = 1');
    this.upsert = db.prepare(
      `INSERT INTO daemon (id, pid, host, started_at, heartbeat_at, status) VALUES (1, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host, started_at = excluded.started_at,
         heartbeat_at = excluded.heartbeat_at, status = excluded.status`,
    );
    this.remove = db.prepare('DELETE FROM daemon WHERE id = 1 AND pid = ?');
  }

  read(): DaemonRecord | undefined {
    const row = this.select.get();
    if (row === undefined) return undefined;
    return {
      pid: row.pid,
      host: row.host,
      startedAt: row.started_at,
      heartbeatAt: row.heartbeat_at,
      status: parseDaemonStatus(row.status),
    };
  }

  /** The heartbeat: who runs the daemon and what it reports, stamped now. */
  write(record: { pid: number; host: string; startedAt: number; status: DaemonStatus }): void {
    this.upsert.run(record.pid, record.host, record.startedAt, this.now(), JSON.stringify(record.status));
  }

  /** Marks the daemon stopped: a clean stop leaves no heartbeat behind. */
  clear(pid: number): void {
    this.remove.run(pid);
  }
}
