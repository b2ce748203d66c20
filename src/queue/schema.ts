/**
 * The queue database's schema, as migrations applied in order (`PRAGMA user_version` counts those done).
 *
 * `inbox` is the contract with hook/post-build-hook, which writes it with the sqlite3 shell: it never changes,
 * whatever later migrations do to the tables the daemon owns. Times are milliseconds since the epoch.
 */
export const INBOX_SQL = `
  CREATE TABLE inbox (
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
];
