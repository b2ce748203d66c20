import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { backoffMs, type Backoff } from '../core/backoff.js';
import { CachectlError, errorText } from '../core/errors.js';
import { parseDaemonStatus, type DaemonRecord, type DaemonStatus } from './daemon-record.js';
import { hookInboxFiles, INBOX_SQL, MIGRATIONS } from './schema.js';

export const PATH_STATES = ['pending', 'uploading', 'done', 'failed'] as const;
export type PathState = (typeof PATH_STATES)[number];

/** Who put a path in the queue. */
export type Source = 'hook' | 'cli';

export interface QueueOptions {
  /** Tries of one path before it is `failed` (a daemon killed mid-upload counts one). */
  maxAttempts?: number;
  retry?: Backoff;
  now?: () => number;
  random?: () => number;
}

export const DEFAULT_MAX_ATTEMPTS = 8;
/** 10 s, 20 s, … up to 30 min: eight tries span about an hour. */
export const DEFAULT_RETRY: Backoff = { baseMs: 10_000, capMs: 30 * 60_000 };
/** How long a writer waits for another's transaction before giving up (the hook waits less, see the hook). */
const BUSY_TIMEOUT_MS = 10_000;

export interface NewPath {
  storePath: string;
  source: Source;
  enqueuedAt: number;
}

export interface QueueCounts {
  pending: number;
  uploading: number;
  done: number;
  failed: number;
  /** written by hooks or `enqueue`, not yet taken in by the daemon */
  inbox: number;
}

export interface FailedPath {
  storePath: string;
  attempts: number;
  lastError: string;
  failedAt: number;
}

interface PathRow {
  store_path: string;
  state: PathState;
  attempts: number;
}

/** What `status` and the metrics show of a `cachectl gc` run. */
export interface GcRun {
  cache: string;
  finishedAt: number;
  seconds: number;
  dryRun: boolean;
  /** finished its work: no error, and the sweep was not stopped early */
  ok: boolean;
  deletedObjects: number;
  deletedBytes: number;
  /** why it failed or stopped early */
  problem?: string;
}

const GC_RUNS_KEPT = 30;

/**
 * The upload queue: one SQLite file in WAL mode, and the hooks' inbox files beside it (see HOOK_INBOXES).
 * Hooks append to an `inbox`; the daemon takes the inboxes into `paths` and moves each path through
 * pending → uploading → done | failed. Every transition is one transaction, so a crash at any point leaves a state the next start can resume from. Transactions that
 * read before they write begin IMMEDIATE: a deferred one that a hook's insert overtakes fails with
 * "database is locked" at once instead of waiting its turn.
 */
export class Queue {
  readonly file: string;
  private readonly db: Database.Database;
  /** Every `inbox`: the queue database's own (written by `enqueue`), then the hooks' files. */
  private readonly inboxes: Database.Database[];
  private readonly maxAttempts: number;
  private readonly retryBackoff: Backoff;
  private readonly now: () => number;
  private readonly random: () => number;

  private constructor(file: string, db: Database.Database, hookInboxes: Database.Database[], options: QueueOptions) {
    this.file = file;
    this.db = db;
    this.inboxes = [db, ...hookInboxes];
    this.maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    this.retryBackoff = options.retry ?? DEFAULT_RETRY;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
  }

  /**
   * Opens the queue, creating it (directory 0700, file 0600) and migrating it to the current schema. For
   * the daemon and `enqueue`; the commands that only look use `openExisting`.
   */
  static open(file: string, options: QueueOptions = {}): Queue {
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      const db = createDatabase(file);
      migrate(db);
      mkdirSync(`${file}.inbox`, { recursive: true, mode: 0o700 });
      const hookInboxes = hookInboxFiles(file).map((inboxFile) => {
        try {
          const inbox = createDatabase(inboxFile);
          inbox.exec(INBOX_SQL);
          return inbox;
        } catch (err) {
          throw queueError(inboxFile, err);
        }
      });
      return new Queue(file, db, hookInboxes, options);
    } catch (err) {
      throw queueError(file, err);
    }
  }

  /** Opens a queue that must already exist (status, retry). */
  static openExisting(file: string, options: QueueOptions & { readonly?: boolean } = {}): Queue {
    if (!existsSync(file)) {
      throw new CachectlError(
        'QUEUE_MISSING',
        `queue database ${file} does not exist; is cachectl daemon running with this queue? (pass --queue or set CACHECTL_QUEUE)`,
      );
    }
    try {
      const open = (dbFile: string): Database.Database => {
        const db = new Database(dbFile, { readonly: options.readonly ?? false, fileMustExist: true });
        db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
        return db;
      };
      const db = open(file);
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version !== MIGRATIONS.length) {
        throw new Error(`its schema version is ${version}, this cachectl knows ${MIGRATIONS.length}; start the daemon of the same version`);
      }
      return new Queue(file, db, hookInboxFiles(file).filter((inboxFile) => existsSync(inboxFile)).map(open), options);
    } catch (err) {
      throw queueError(file, err);
    }
  }

  close(): void {
    for (const db of this.inboxes) db.close();
  }

  /** Appends to the inbox, as the hook does. */
  enqueue(storePaths: readonly string[], source: Source): void {
    const insert = this.db.prepare('INSERT INTO inbox (store_path, source, enqueued_at) VALUES (?, ?, ?)');
    const now = this.now();
    this.db.transaction(() => {
      for (const storePath of storePaths) insert.run(storePath, source, now);
    })();
  }

  /**
   * Moves the inboxes into `paths`. Returns the inbox rows taken. Each inbox's rows are queued first and
   * deleted after: a crash between the two queues them again, which `add` makes harmless.
   *
   * Each inbox is read under its write lock (IMMEDIATE). The daemon is woken by a hook's first write to the
   * inbox's WAL, while that hook still holds the lock and has not committed; a plain read then saw nothing, and
   * the path waited for the next wake-up (about 2 s: the heartbeat). The lock makes the read wait for the commit.
   */
  ingestInbox(): number {
    let taken = 0;
    for (const inbox of this.inboxes) {
      const select = inbox.prepare<[], { id: number; store_path: string; source: Source; enqueued_at: number }>(
        'SELECT id, store_path, source, enqueued_at FROM inbox ORDER BY id',
      );
      const remove = inbox.prepare('DELETE FROM inbox WHERE id <= ?');
      taken += inbox.transaction(() => {
        const rows = select.all();
        const last = rows.at(-1);
        if (last === undefined) return 0;
        this.add(rows.map((row) => ({ storePath: row.store_path, source: row.source, enqueuedAt: row.enqueued_at })));
        remove.run(last.id);
        return rows.length;
      }).immediate();
    }
    return taken;
  }

  /**
   * Queues paths: new ones and ones already done or failed become pending (a rebuilt or re-enqueued path is
   * looked at again); pending and uploading ones stay as they are, so a path is queued only once.
   */
  add(paths: readonly NewPath[]): void {
    const now = this.now();
    const upsert = this.db.prepare(
      `INSERT INTO paths (store_path, state, attempts, next_attempt_at, source, enqueued_at, updated_at)
       VALUES (@storePath, 'pending', 0, @now, @source, @enqueuedAt, @now)
       ON CONFLICT (store_path) DO UPDATE SET state = 'pending', attempts = 0, next_attempt_at = @now,
         last_error = NULL, source = excluded.source, enqueued_at = excluded.enqueued_at, updated_at = @now
       WHERE state IN ('done', 'failed')`,
    );
    this.db.transaction(() => {
      for (const path of paths) upsert.run({ ...path, now });
    }).immediate();
  }

  /** Marks a path failed without trying it (it cannot be tried: say why). */
  addFailed(path: NewPath, lastError: string): void {
    const now = this.now();
    this.db
      .prepare(
        `INSERT INTO paths (store_path, state, attempts, next_attempt_at, last_error, source, enqueued_at, updated_at)
         VALUES (?, 'failed', 0, ?, ?, ?, ?, ?)
         ON CONFLICT (store_path) DO UPDATE SET state = 'failed', last_error = excluded.last_error, updated_at = excluded.updated_at`,
      )
      .run(path.storePath, now, lastError, path.source, path.enqueuedAt, now);
  }

  /**
   * Claims up to `limit` due paths for `leaseMs`, in one transaction; the attempt counts now, so a path whose
   * upload kills the daemon is tried a bounded number of times.
   */
  claim(limit: number, leaseMs: number): string[] {
    const now = this.now();
    return this.db.transaction(() => {
      const rows = this.db
        .prepare<[number, number], { store_path: string }>(
          `SELECT store_path FROM paths WHERE state = 'pending' AND next_attempt_at <= ?
           ORDER BY next_attempt_at, enqueued_at LIMIT ?`,
        )
        .all(now, limit);
      const update = this.db.prepare(
        `UPDATE paths SET state = 'uploading', attempts = attempts + 1, lease_until = ?, updated_at = ? WHERE store_path = ?`,
      );
      for (const row of rows) update.run(now + leaseMs, now, row.store_path);
      return rows.map((row) => row.store_path);
    }).immediate();
  }

  /** Extends the lease of paths still being uploaded. */
  renewLeases(storePaths: readonly string[], leaseMs: number): void {
    const update = this.db.prepare(`UPDATE paths SET lease_until = ? WHERE store_path = ? AND state = 'uploading'`);
    const until = this.now() + leaseMs;
    this.db.transaction(() => {
      for (const storePath of storePaths) update.run(until, storePath);
    })();
  }

  complete(storePaths: readonly string[]): void {
    const now = this.now();
    const update = this.db.prepare(
      `UPDATE paths SET state = 'done', uploaded_at = ?, updated_at = ?, lease_until = NULL, last_error = NULL
       WHERE store_path = ? AND state = 'uploading'`,
    );
    this.db.transaction(() => {
      for (const storePath of storePaths) update.run(now, now, storePath);
    })();
  }

  /**
   * Records a failed try: a retryable failure goes back to pending after a backoff while tries remain,
   * anything else is `failed` with its error. Returns the state the path is now in.
   */
  fail(storePath: string, error: string, retryable: boolean): PathState {
    const now = this.now();
    return this.db.transaction(() => {
      const row = this.db
        .prepare<[string], PathRow>(`SELECT store_path, state, attempts FROM paths WHERE store_path = ?`)
        .get(storePath);
      if (row === undefined) return 'failed';
      // Only a claim can fail: a root the daemon already marked done stays done.
      if (row.state !== 'uploading') return row.state;
      if (retryable && row.attempts < this.maxAttempts) {
        const next = now + backoffMs(row.attempts, this.retryBackoff, this.random());
        this.db
          .prepare(
            `UPDATE paths SET state = 'pending', next_attempt_at = ?, lease_until = NULL, last_error = ?, updated_at = ? WHERE store_path = ?`,
          )
          .run(next, error, now, storePath);
        return 'pending';
      }
      const text = retryable ? `${error} (gave up after ${row.attempts} attempts)` : error;
      this.db
        .prepare(`UPDATE paths SET state = 'failed', lease_until = NULL, last_error = ?, updated_at = ? WHERE store_path = ?`)
        .run(text, now, storePath);
      return 'failed';
    }).immediate();
  }

  /**
   * Puts claimed paths back to pending without using up a try (a drain, or a cache outage that is nobody's
   * fault), due again at `dueAt`.
   */
  release(storePaths: readonly string[], dueAt = this.now(), reason?: string): void {
    const now = this.now();
    const update = this.db.prepare(
      `UPDATE paths SET state = 'pending', attempts = max(attempts - 1, 0), next_attempt_at = ?, lease_until = NULL,
         last_error = coalesce(?, last_error), updated_at = ?
       WHERE store_path = ? AND state = 'uploading'`,
    );
    this.db.transaction(() => {
      for (const storePath of storePaths) update.run(dueAt, reason ?? null, now, storePath);
    })();
  }

  /**
   * Returns the paths of a daemon that stopped without finishing (killed, crashed, power lost): those whose
   * lease ended, or every `uploading` path when `all` (a starting daemon knows no other one is running).
   * Their try was used up; one that has used all its tries is `failed`.
   */
  recoverAbandoned(all: boolean): number {
    const now = this.now();
    return this.db.transaction(() => {
      const where = `state = 'uploading'${all ? '' : ' AND lease_until < @now'}`;
      const failed = this.db
        .prepare(
          `UPDATE paths SET state = 'failed', lease_until = NULL, updated_at = @now,
             last_error = 'the daemon stopped ' || attempts || ' times while uploading this path (killed, crashed or out of memory?); '
               || 'see its log, then run cachectl retry'
           WHERE ${where} AND attempts >= @max`,
        )
        .run({ now, max: this.maxAttempts }).changes;
      const pending = this.db
        .prepare(`UPDATE paths SET state = 'pending', next_attempt_at = @now, lease_until = NULL, updated_at = @now WHERE ${where}`)
        .run({ now }).changes;
      return failed + pending;
    }).immediate();
  }

  /** Failed paths back to pending with fresh tries: the given ones, or all. Returns the paths retried. */
  retry(storePaths?: readonly string[]): string[] {
    const now = this.now();
    return this.db.transaction(() => {
      const failed = this.db
        .prepare<[], { store_path: string }>(`SELECT store_path FROM paths WHERE state = 'failed'`)
        .all()
        .map((row) => row.store_path);
      const chosen = storePaths === undefined ? failed : storePaths.filter((path) => failed.includes(path));
      const update = this.db.prepare(
        `UPDATE paths SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE store_path = ?`,
      );
      for (const storePath of chosen) update.run(now, now, storePath);
      return chosen;
    }).immediate();
  }

  /** The state of each of `storePaths` that is in the queue. */
  statesOf(storePaths: readonly string[]): Map<string, PathState> {
    const rows = this.db
      .prepare<[string], { store_path: string; state: PathState }>(
        `SELECT store_path, state FROM paths WHERE store_path IN (SELECT value FROM json_each(?))`,
      )
      .all(JSON.stringify(storePaths));
    return new Map(rows.map((row) => [row.store_path, row.state]));
  }

  /** Paths written to the inbox and not yet taken in. */
  inboxPaths(): Set<string> {
    return new Set(this.inboxes.flatMap((inbox) => inbox.prepare<[], { store_path: string }>('SELECT store_path FROM inbox').all().map((row) => row.store_path)));
  }

  /** When the earliest pending path is due, if any is pending. */
  nextDueAt(): number | undefined {
    const row = this.db.prepare<[], { due: number | null }>(`SELECT min(next_attempt_at) AS due FROM paths WHERE state = 'pending'`).get();
    return row?.due ?? undefined;
  }

  counts(): QueueCounts {
    const counts: QueueCounts = { pending: 0, uploading: 0, done: 0, failed: 0, inbox: 0 };
    for (const row of this.db.prepare<[], { state: PathState; n: number }>('SELECT state, count(*) AS n FROM paths GROUP BY state').all()) {
      counts[row.state] = row.n;
    }
    for (const inbox of this.inboxes) counts.inbox += inbox.prepare<[], { n: number }>('SELECT count(*) AS n FROM inbox').get()?.n ?? 0;
    return counts;
  }

  /** When the path pending longest (or still in the inbox) was enqueued. */
  oldestPendingAt(): number | undefined {
    const times = [
      this.db.prepare<[], { at: number | null }>(`SELECT min(enqueued_at) AS at FROM paths WHERE state IN ('pending', 'uploading')`).get()?.at,
      ...this.inboxes.map((inbox) => inbox.prepare<[], { at: number | null }>('SELECT min(enqueued_at) AS at FROM inbox').get()?.at),
    ].filter((at): at is number => typeof at === 'number');
    return times.length === 0 ? undefined : Math.min(...times);
  }

  failedPaths(limit: number): FailedPath[] {
    return this.db
      .prepare<[number], { store_path: string; attempts: number; last_error: string; updated_at: number }>(
        `SELECT store_path, attempts, last_error, updated_at FROM paths WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?`,
      )
      .all(limit)
      .map((row) => ({ storePath: row.store_path, attempts: row.attempts, lastError: row.last_error, failedAt: row.updated_at }));
  }

  /** Paths uploaded since `since`. */
  uploadedSince(since: number): number {
    return this.db.prepare<[number], { n: number }>('SELECT count(*) AS n FROM paths WHERE uploaded_at >= ?').get(since)?.n ?? 0;
  }

  /** Forgets uploaded paths older than `before` (their rows only serve the status counts). */
  pruneDone(before: number): number {
    return this.db.prepare(`DELETE FROM paths WHERE state = 'done' AND uploaded_at < ?`).run(before).changes;
  }

  /** The daemon's own row: who runs it, its last heartbeat and what it reports. */
  daemon(): DaemonRecord | undefined {
    const row = this.db
      .prepare<[], { pid: number; host: string; started_at: number; heartbeat_at: number; status: string }>(
        'SELECT pid, host, started_at, heartbeat_at, status FROM daemon WHERE id = 1',
      )
      .get();
    if (row === undefined) return undefined;
    return { pid: row.pid, host: row.host, startedAt: row.started_at, heartbeatAt: row.heartbeat_at, status: parseDaemonStatus(row.status) };
  }

  writeDaemon(record: Omit<DaemonRecord, 'heartbeatAt' | 'status'> & { status: DaemonStatus }): void {
    this.db
      .prepare(
        `INSERT INTO daemon (id, pid, host, started_at, heartbeat_at, status) VALUES (1, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, host = excluded.host, started_at = excluded.started_at,
           heartbeat_at = excluded.heartbeat_at, status = excluded.status`,
      )
      .run(record.pid, record.host, record.startedAt, this.now(), JSON.stringify(record.status));
  }

  /** Keeps the summary of a GC run (the last few are kept). */
  recordGcRun(run: GcRun): void {
    this.db.transaction(() => {
      this.db.prepare('INSERT INTO gc_runs (finished_at, summary) VALUES (?, ?)').run(run.finishedAt, JSON.stringify(run));
      this.db.prepare('DELETE FROM gc_runs WHERE id <= (SELECT max(id) FROM gc_runs) - ?').run(GC_RUNS_KEPT);
    }).immediate();
  }

  lastGcRun(): GcRun | undefined {
    const row = this.db.prepare<[], { summary: string }>('SELECT summary FROM gc_runs ORDER BY id DESC LIMIT 1').get();
    return row === undefined ? undefined : (JSON.parse(row.summary) as GcRun);
  }

  /** Marks the daemon stopped: a clean stop leaves no heartbeat behind. */
  clearDaemon(pid: number): void {
    this.db.prepare('DELETE FROM daemon WHERE id = 1 AND pid = ?').run(pid);
  }
}

/** Opens a database, creating it 0600 in WAL mode with full syncs. */
function createDatabase(file: string): Database.Database {
  // SQLite gives the -wal and -shm files the database file's mode, so creating it 0600 covers all three.
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  return db;
}

function migrate(db: Database.Database): void {
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new CachectlError(
        'QUEUE_UNREADABLE',
        `queue database ${db.name} was made by a newer cachectl (schema ${version}; this one knows ${MIGRATIONS.length}); upgrade cachectl. Its paths are kept`,
      );
    }
    for (const sql of MIGRATIONS.slice(version)) db.exec(sql);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  }).immediate();
}

/** SQLite could not write (a full disk, an I/O error): worth trying again later, unlike a corrupt file. */
export function isDiskTrouble(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code === 'SQLITE_FULL' || code.startsWith('SQLITE_IOERR'));
}

function queueError(file: string, err: unknown): CachectlError {
  if (err instanceof CachectlError) return err;
  if (isDiskTrouble(err)) {
    return new CachectlError(
      'QUEUE_UNREADABLE',
      `queue database ${file} cannot be written: ${errorText(err)}; is its disk full? (df -h ${dirname(file)}) Nothing queued is lost: free space and try again`,
      { cause: err },
    );
  }
  return new CachectlError(
    'QUEUE_UNREADABLE',
    `queue database ${file} cannot be used: ${errorText(err)}; if it is corrupt, move it aside and restart the daemon (the hook spools paths meanwhile)`,
    { cause: err },
  );
}
