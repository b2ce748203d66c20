import { closeSync, existsSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { CachectlError, errorText } from '../core/errors.js';
import { MIGRATIONS } from './schema.js';

/** How long a writer waits for another's transaction before giving up (the hook waits less, see the hook). */
const BUSY_TIMEOUT_MS = 10_000;

/** Opens a database, creating it 0600 in WAL mode with full syncs. */
export function createDatabase(file: string): Database.Database {
  // SQLite gives the -wal and -shm files the database file's mode, so creating it 0600 covers all three.
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  return db;
}

/** Opens a database that must exist, as it is. */
export function openDatabase(file: string, readonly: boolean): Database.Database {
  const db = new Database(file, { readonly, fileMustExist: true });
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  return db;
}

/** Brings the queue database to the current schema; one made by a newer cachectl is left alone. */
export function migrate(db: Database.Database): void {
  db.transaction(() => {
    const version = schemaVersion(db);
    if (version > MIGRATIONS.length) {
      throw new CachectlError(
        'QUEUE_UNREADABLE',
        `queue database ${db.name} was made by a newer cachectl (schema ${version}; this one knows ` +
          `${MIGRATIONS.length}); upgrade cachectl. Its paths are kept`,
      );
    }
    for (const sql of MIGRATIONS.slice(version)) db.exec(sql);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  }).immediate();
}

export function schemaVersion(db: Database.Database): number {
  const version: unknown = db.pragma('user_version', { simple: true });
  return typeof version === 'number' ? version : 0;
}

/** SQLite could not write (a full disk, an I/O error): worth trying again later, unlike a corrupt file. */
export function isDiskTrouble(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code === 'SQLITE_FULL' || code.startsWith('SQLITE_IOERR'));
}

/** What went wrong with a queue file, for the person who can fix it. */
export function queueError(file: string, err: unknown): CachectlError {
  if (err instanceof CachectlError) return err;
  if (isDiskTrouble(err)) {
    return new CachectlError(
      'QUEUE_UNREADABLE',
      `queue database ${file} cannot be written: ${errorText(err)}; is its disk full? (df -h ${dirname(file)}) ` +
        `Nothing queued is lost: free space and try again`,
      { cause: err },
    );
  }
  return new CachectlError(
    'QUEUE_UNREADABLE',
    `queue database ${file} cannot be used: ${errorText(err)}; if it is corrupt, move it aside and restart the ` +
      `daemon (the hook spools paths meanwhile)`,
    { cause: err },
  );
}
