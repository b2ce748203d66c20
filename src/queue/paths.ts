import type Database from 'better-sqlite3';
import { backoffMs, type Backoff } from '../core/backoff.js';

export const PATH_STATES = ['pending', 'uploading', 'done', 'failed'] as const;
export type PathState = (typeof PATH_STATES)[number];

/** Who put a path in the queue. */
export type Source = 'hook' | 'cli';

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

/**
 * Why a path failed: a message naming the thing and the fix, and the error code (see core/errors.ts) when the
 * failure has one.
 */
export interface PathError {
  code?: string;
  message: string;
}

/** A path's `last_error`, the one place it is made: `CODE: message`, never empty. */
export function lastErrorText(error: PathError): string {
  const message = error.message === '' ? 'failed, and no reason was given (see the daemon log)' : error.message;
  return error.code === undefined || error.code === '' ? message : `${error.code}: ${message}`;
}

export interface PathsOptions {
  /** Tries of one path before it is `failed` (a daemon killed mid-upload counts one). */
  maxAttempts: number;
  retry: Backoff;
  now: () => number;
  random: () => number;
}

interface InboxRow {
  id: number;
  store_path: string;
  source: Source;
  enqueued_at: number;
}

/** One inbox file's statements. */
interface Inbox {
  db: Database.Database;
  insert: Database.Statement<[string, Source, number]>;
  select: Database.Statement<[], InboxRow>;
  removeUpTo: Database.Statement<[number]>;
  storePaths: Database.Statement<[], { store_path: string }>;
  count: Database.Statement<[], { n: number }>;
  oldest: Database.Statement<[], { at: number | null }>;
}

/**
 * The queued paths: the inboxes that hooks and `enqueue` append to, and the `paths` table where the daemon moves
 * each path through pending → uploading → done | failed. Every transition is one transaction, so a crash at any
 * point leaves a state the next start can resume from. Transactions that read before they write begin
 * IMMEDIATE: a deferred one that a hook's insert overtakes fails with "database is locked" at once instead of
 * waiting its turn.
 */
export class Paths {
  private readonly db: Database.Database;
  /** Every inbox: the queue database's own (written by `enqueue`), then the hooks' files. */
  private readonly inboxes: Inbox[];
  private readonly options: PathsOptions;
  private readonly sql;

  constructor(db: Database.Database, inboxDbs: readonly Database.Database[], options: PathsOptions) {
    this.db = db;
    this.options = options;
    this.inboxes = [db, ...inboxDbs].map((inbox) => ({
      db: inbox,
      insert: inbox.prepare('INSERT INTO inbox (store_path, source, enqueued_at) VALUES (?, ?, ?)'),
      select: inbox.prepare('SELECT id, store_path, source, enqueued_at FROM inbox ORDER BY id'),
      removeUpTo: inbox.prepare('DELETE FROM inbox WHERE id <= ?'),
      storePaths: inbox.prepare('SELECT store_path FROM inbox'),
      count: inbox.prepare('SELECT count(*) AS n FROM inbox'),
      oldest: inbox.prepare('SELECT min(enqueued_at) AS at FROM inbox'),
    }));
    this.sql = {
      upsert: db.prepare<{ storePath: string; source: Source; enqueuedAt: number; now: number }>(
        `INSERT INTO paths (store_path, state, attempts, next_attempt_at, source, enqueued_at, updated_at)
         VALUES (@storePath, 'pending', 0, @now, @source, @enqueuedAt, @now)
         ON CONFLICT (store_path) DO UPDATE SET state = 'pending', attempts = 0, next_attempt_at = @now,
           last_error = NULL, source = excluded.source, enqueued_at = excluded.enqueued_at, updated_at = @now
         WHERE state IN ('done', 'failed')`,
      ),
      insertFailed: db.prepare<[string, number, string, Source, number, number]>(
        `INSERT INTO paths (store_path, state, attempts, next_attempt_at, last_error, source, enqueued_at, updated_at)
         VALUES (?, 'failed', 0, ?, ?, ?, ?, ?)
         ON CONFLICT (store_path) DO UPDATE SET state = 'failed', last_error = excluded.last_error,
           updated_at = excluded.updated_at`,
      ),
      due: db.prepare<[number, number], { store_path: string }>(
        `SELECT store_path FROM paths WHERE state = 'pending' AND next_attempt_at <= ?
         ORDER BY next_attempt_at, enqueued_at LIMIT ?`,
      ),
      claim: db.prepare<[number, number, string]>(
        `UPDATE paths SET state = 'uploading', attempts = attempts + 1, lease_until = ?, updated_at = ?
         WHERE store_path = ?`,
      ),
      renew: db.prepare<[number, string]>(
        `UPDATE paths SET lease_until = ? WHERE store_path = ? AND state = 'uploading'`,
      ),
      complete: db.prepare<[number, number, string]>(
        `UPDATE paths SET state = 'done', uploaded_at = ?, updated_at = ?, lease_until = NULL, last_error = NULL
         WHERE store_path = ? AND state = 'uploading'`,
      ),
      row: db.prepare<[string], { state: PathState; attempts: number }>(
        'SELECT state, attempts FROM paths WHERE store_path = ?',
      ),
      retryLater: db.prepare<[number, string, number, string]>(
        `UPDATE paths SET state = 'pending', next_attempt_at = ?, lease_until = NULL, last_error = ?, updated_at = ?
         WHERE store_path = ?`,
      ),
      markFailed: db.prepare<[string, number, string]>(
        `UPDATE paths SET state = 'failed', lease_until = NULL, last_error = ?, updated_at = ? WHERE store_path = ?`,
      ),
      release: db.prepare<[number, string | null, number, string]>(
        `UPDATE paths SET state = 'pending', attempts = max(attempts - 1, 0), next_attempt_at = ?, lease_until = NULL,
           last_error = coalesce(?, last_error), updated_at = ?
         WHERE store_path = ? AND state = 'uploading'`,
      ),
      uploading: db.prepare<[], { store_path: string; attempts: number; lease_until: number }>(
        `SELECT store_path, attempts, lease_until FROM paths WHERE state = 'uploading'`,
      ),
      requeue: db.prepare<[number, number, string]>(
        `UPDATE paths SET state = 'pending', next_attempt_at = ?, lease_until = NULL, updated_at = ? WHERE ` +
          `store_path = ?`,
      ),
      failed: db.prepare<[], { store_path: string }>(`SELECT store_path FROM paths WHERE state = 'failed'`),
      retry: db.prepare<[number, number, string]>(
        `UPDATE paths SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE store_path = ?`,
      ),
      states: db.prepare<[string], { store_path: string; state: PathState }>(
        `SELECT store_path, state FROM paths WHERE store_path IN (SELECT value FROM json_each(?))`,
      ),
      nextDue: db.prepare<[], { due: number | null }>(
        `SELECT min(next_attempt_at) AS due FROM paths WHERE state = 'pending'`,
      ),
      counts: db.prepare<[], { state: PathState; n: number }>('SELECT state, count(*) AS n FROM paths GROUP BY state'),
      oldest: db.prepare<[], { at: number | null }>(
        `SELECT min(enqueued_at) AS at FROM paths WHERE state IN ('pending', 'uploading')`,
      ),
      latestFailed: db.prepare<
        [number],
        { store_path: string; attempts: number; last_error: string; updated_at: number }
      >(
        `SELECT store_path, attempts, last_error, updated_at FROM paths WHERE state = 'failed'
         ORDER BY updated_at DESC LIMIT ?`,
      ),
      uploadedSince: db.prepare<[number], { n: number }>('SELECT count(*) AS n FROM paths WHERE uploaded_at >= ?'),
      pruneDone: db.prepare<[number]>(`DELETE FROM paths WHERE state = 'done' AND uploaded_at < ?`),
    };
  }

  /** Appends to the queue database's own inbox, as the hook does to its files. */
  enqueue(storePaths: readonly string[], source: Source): void {
    const own = this.inboxes[0];
    if (own === undefined) return;
    const now = this.options.now();
    own.db.transaction(() => {
      for (const storePath of storePaths) own.insert.run(storePath, source, now);
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
      taken += inbox.db
        .transaction(() => {
          const rows = inbox.select.all();
          const last = rows.at(-1);
          if (last === undefined) return 0;
          this.add(rows.map((row) => ({ storePath: row.store_path, source: row.source, enqueuedAt: row.enqueued_at })));
          inbox.removeUpTo.run(last.id);
          return rows.length;
        })
        .immediate();
    }
    return taken;
  }

  /**
   * Queues paths: new ones and ones already done or failed become pending (a rebuilt or re-enqueued path is
   * looked at again); pending and uploading ones stay as they are, so a path is queued only once.
   */
  add(paths: readonly NewPath[]): void {
    const now = this.options.now();
    this.db
      .transaction(() => {
        for (const path of paths) this.sql.upsert.run({ ...path, now });
      })
      .immediate();
  }

  /** Marks a path failed without trying it (it cannot be tried: say why). */
  addFailed(path: NewPath, error: PathError): void {
    const now = this.options.now();
    this.sql.insertFailed.run(path.storePath, now, lastErrorText(error), path.source, path.enqueuedAt, now);
  }

  /**
   * Claims up to `limit` due paths for `leaseMs`, in one transaction; the attempt counts now, so a path whose
   * upload kills the daemon is tried a bounded number of times.
   */
  claim(limit: number, leaseMs: number): string[] {
    const now = this.options.now();
    return this.db
      .transaction(() => {
        const storePaths = this.sql.due.all(now, limit).map((row) => row.store_path);
        for (const storePath of storePaths) this.sql.claim.run(now + leaseMs, now, storePath);
        return storePaths;
      })
      .immediate();
  }

  /** Extends the lease of paths still being uploaded. */
  renewLeases(storePaths: readonly string[], leaseMs: number): void {
    const until = this.options.now() + leaseMs;
    this.db.transaction(() => {
      for (const storePath of storePaths) this.sql.renew.run(until, storePath);
    })();
  }

  complete(storePaths: readonly string[]): void {
    const now = this.options.now();
    this.db.transaction(() => {
      for (const storePath of storePaths) this.sql.complete.run(now, now, storePath);
    })();
  }

  /**
   * Records a failed try: a retryable failure goes back to pending after a backoff while tries remain,
   * anything else is `failed` with its error. Returns the state the path is now in.
   */
  fail(storePath: string, error: PathError, retryable: boolean): PathState {
    const now = this.options.now();
    return this.db
      .transaction((): PathState => {
        const row = this.sql.row.get(storePath);
        if (row === undefined) return 'failed';
        // Only a claim can fail: a root the daemon already marked done stays done.
        if (row.state !== 'uploading') return row.state;
        if (retryable && row.attempts < this.options.maxAttempts) {
          const next = now + backoffMs(row.attempts, this.options.retry, this.options.random());
          this.sql.retryLater.run(next, lastErrorText(error), now, storePath);
          return 'pending';
        }
        const text = lastErrorText(error) + (retryable ? ` (gave up after ${row.attempts} attempts)` : '');
        this.sql.markFailed.run(text, now, storePath);
        return 'failed';
      })
      .immediate();
  }

  /**
   * Puts claimed paths back to pending without using up a try (a drain, or a cache outage that is nobody's
   * fault), due again at `dueAt`.
   */
  release(storePaths: readonly string[], dueAt = this.options.now(), reason?: PathError): void {
    const now = this.options.now();
    const text = reason === undefined ? null : lastErrorText(reason);
    this.db.transaction(() => {
      for (const storePath of storePaths) this.sql.release.run(dueAt, text, now, storePath);
    })();
  }

  /**
   * Returns the paths of a daemon that stopped without finishing (killed, crashed, power lost): those whose
   * lease ended, or every `uploading` path when `all` (a starting daemon knows no other one is running).
   * Their try was used up; one that has used all its tries is `failed`.
   */
  recoverAbandoned(all: boolean): number {
    const now = this.options.now();
    return this.db
      .transaction(() => {
        const abandoned = this.sql.uploading.all().filter((row) => all || row.lease_until < now);
        for (const row of abandoned) {
          if (row.attempts < this.options.maxAttempts) {
            this.sql.requeue.run(now, now, row.store_path);
            continue;
          }
          const error = {
            message:
              `the daemon stopped ${row.attempts} times while uploading this path (killed, crashed or out of ` +
              `memory?); ` +
              'see its log, then run cachectl retry',
          };
          this.sql.markFailed.run(lastErrorText(error), now, row.store_path);
        }
        return abandoned.length;
      })
      .immediate();
  }

  /** Failed paths back to pending with fresh tries: the given ones, or all. Returns the paths retried. */
  retry(storePaths?: readonly string[]): string[] {
    const now = this.options.now();
    return this.db
      .transaction(() => {
        const failed = this.sql.failed.all().map((row) => row.store_path);
        const chosen = storePaths === undefined ? failed : storePaths.filter((path) => failed.includes(path));
        for (const storePath of chosen) this.sql.retry.run(now, now, storePath);
        return chosen;
      })
      .immediate();
  }

  /** The state of each of `storePaths` that is in the queue. */
  statesOf(storePaths: readonly string[]): Map<string, PathState> {
    const rows = this.sql.states.all(JSON.stringify(storePaths));
    return new Map(rows.map((row) => [row.store_path, row.state]));
  }

  /** Paths written to the inbox and not yet taken in. */
  inboxPaths(): Set<string> {
    return new Set(this.inboxes.flatMap((inbox) => inbox.storePaths.all().map((row) => row.store_path)));
  }

  /** When the earliest pending path is due, if any is pending. */
  nextDueAt(): number | undefined {
    return this.sql.nextDue.get()?.due ?? undefined;
  }

  counts(): QueueCounts {
    const counts: QueueCounts = { pending: 0, uploading: 0, done: 0, failed: 0, inbox: 0 };
    for (const row of this.sql.counts.all()) counts[row.state] = row.n;
    for (const inbox of this.inboxes) counts.inbox += inbox.count.get()?.n ?? 0;
    return counts;
  }

  /** When the path pending longest (or still in the inbox) was enqueued. */
  oldestPendingAt(): number | undefined {
    const times = [this.sql.oldest.get()?.at, ...this.inboxes.map((inbox) => inbox.oldest.get()?.at)].filter(
      (at): at is number => typeof at === 'number',
    );
    return times.length === 0 ? undefined : Math.min(...times);
  }

  failedPaths(limit: number): FailedPath[] {
    return this.sql.latestFailed.all(limit).map((row) => ({
      storePath: row.store_path,
      attempts: row.attempts,
      lastError: row.last_error,
      failedAt: row.updated_at,
    }));
  }

  /** Paths uploaded since `since`. */
  uploadedSince(since: number): number {
    return this.sql.uploadedSince.get(since)?.n ?? 0;
  }

  /** Forgets uploaded paths older than `before` (their rows only serve the status counts). */
  pruneDone(before: number): number {
    return this.sql.pruneDone.run(before).changes;
  }
}
