import { join } from 'node:path';

/**
 * The queue database's schema, as migrations applied in order (`PRAGMA user_version` counts those done).
 *
 * `inbox` is the contract with hook/post-build-hook, which writes it with the sqlite3 shell: it never changes,
 * whatever later migrations do to the tables the daemon owns. Times are milliseconds since the epoch.
 */
export const INBOX_SQL = `
  CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    store_path TEXT NOT NULL,
    source TEXT NOT NULL,
    enqueued_at INTEGER NOT NULL
  )`;

export const MIGRATIONS: readonly string[] = [
  `${INBOX_SQL};
  CREATE TABLE paths (
    store_path TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER,
    last_error TEXT,
    source TEXT NOT NULL,
    enqueued_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    uploaded_at INTEGER,
    CHECK (state <> 'failed' OR coalesce(last_error, '') <> '')
  );
  CREATE INDEX paths_by_state ON paths (state, next_attempt_at);
  CREATE INDEX paths_by_upload ON paths (uploaded_at) WHERE uploaded_at IS NOT NULL;
  CREATE TABLE daemon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    status TEXT NOT NULL
  );`,
  // The last runs of `cachectl gc` on this machine, for status and the metrics: a JSON summary each.
  `CREATE TABLE gc_runs (
    id INTEGER PRIMARY KEY,
    finished_at INTEGER NOT NULL,
    summary TEXT NOT NULL
  );`,
];

/**
 * Hooks do not write the queue database itself but one of these inbox files beside it, picked by their pid
 * (hook/post-build-hook has the same number): each file has its own write lock, so hooks running at once
 * seldom wait for each other. With one file, SQLite's busy handler made 8 concurrent inserts wait up to
 * 130–200 ms (p99); with 8 files, 30–40 ms.
 */
export const HOOK_INBOXES = 8;

/** The hooks' inbox files of a queue, `<queue>.inbox/0.db` … `7.db`. */
export function hookInboxFiles(queueFile: string): string[] {
  return Array.from({ length: HOOK_INBOXES }, (_, n) => join(`${queueFile}.inbox`, `${n}.db`));
}
