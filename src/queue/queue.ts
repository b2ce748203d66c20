import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import type { Backoff } from '../core/backoff.js';
import { CachectlError } from '../core/errors.js';
import { DaemonRecords } from './daemon-record.js';
import { createDatabase, migrate, openDatabase, queueError, schemaVersion } from './database.js';
import { GcRuns } from './gc-runs.js';
import { Paths } from './paths.js';
import { hookInboxFiles, INBOX_SQL, MIGRATIONS } from './schema.js';

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

/**
 * The upload queue: one SQLite file in WAL mode, and the hooks' inbox files beside it (see HOOK_INBOXES). It
 * keeps three things, each in its own module: the queued `paths`, the `daemon`'s record, and the `gcRuns` of
 * this machine.
 */
export class Queue {
  readonly file: string;
  readonly paths: Paths;
  readonly daemon: DaemonRecords;
  readonly gcRuns: GcRuns;
  private readonly db: Database.Database;
  private readonly dbs: Database.Database[];

  private constructor(file: string, db: Database.Database, hookInboxes: Database.Database[], options: QueueOptions) {
    const now = options.now ?? Date.now;
    this.file = file;
    this.db = db;
    this.dbs = [db, ...hookInboxes];
    this.paths = new Paths(db, hookInboxes, {
      maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      retry: options.retry ?? DEFAULT_RETRY,
      now,
      random: options.random ?? Math.random,
    });
    this.daemon = new DaemonRecords(db, now);
    this.gcRuns = new GcRuns(db);
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
        `queue database ${file} does not exist; is cachectl daemon running with this queue? (pass --queue or set ` +
          `CACHECTL_QUEUE)`,
      );
    }
    try {
      const readonly = options.readonly ?? false;
      const db = openDatabase(file, readonly);
      const version = schemaVersion(db);
      if (version !== MIGRATIONS.length) {
        throw new Error(
          `its schema version is ${version}, this cachectl knows ${MIGRATIONS.length}; start the daemon of the same ` +
            `version`,
        );
      }
      const hookInboxes = hookInboxFiles(file)
        .filter((inboxFile) => existsSync(inboxFile))
        .map((inboxFile) => openDatabase(inboxFile, readonly));
      return new Queue(file, db, hookInboxes, options);
    } catch (err) {
      throw queueError(file, err);
    }
  }

  /**
   * Runs reads of the queue file in one transaction, so they see one moment: the counts of paths and the daemon's
   * record as they stood together, not a record read before marks written after it.
   */
  snapshot<T>(reads: () => T): T {
    return this.db.transaction(reads)();
  }

  close(): void {
    for (const db of this.dbs) db.close();
  }
}
