import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { CachectlError, errorText } from '../core/errors.js';

/** What the GC needs from a narinfo. */
export interface NarInfoMeta {
  /** hash parts of its references (itself excluded) */
  references: string[];
  /** its NAR's key, when it names one in the layout */
  url?: string;
  /** base name of its deriver */
  deriver?: string;
  /** why it does not parse, when it does not: such a narinfo is kept, with what it seems to refer to */
  problem?: string;
}

/**
 * The GC's local cache of parsed narinfos, keyed by key and ETag: narinfos do not change, so a repeated GC
 * reads only the ones uploaded since. One SQLite file per cache URL.
 *
 * Rows are only appended and deleted by rowid, with no index on the key: a cold run writes a million rows, and
 * keeping them in a b-tree by key cost twice the inserts themselves. The reader drops what it finds stale.
 */
export class MetaCache {
  private constructor(private readonly db: Database.Database) {}

  static open(file: string): MetaCache {
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
      const db = new Database(file);
      db.pragma('journal_mode = WAL');
      // A cache: a commit lost to a crash is read again next run; WAL keeps the file whole all the same.
      db.pragma('synchronous = NORMAL');
      db.exec(`DROP TABLE IF EXISTS narinfos`); // the keyed table of earlier versions
      db.exec(`CREATE TABLE IF NOT EXISTS narinfo_meta (key TEXT NOT NULL, etag TEXT NOT NULL, meta TEXT NOT NULL)`);
      return new MetaCache(db);
    } catch (err) {
      throw new CachectlError(
        'CONFIG_INVALID',
        `GC metadata cache ${file} cannot be used: ${errorText(err)}; delete it (it is only a cache) or pass ` +
          `--metadata-cache`,
        {
          cause: err,
        },
      );
    }
  }

  /**
   * Calls `visit` with each cached narinfo and its row, a row at a time (a million of them do not fit in memory
   * at once).
   */
  forEach(visit: (key: string, etag: string, meta: NarInfoMeta, row: number) => void): void {
    const rows = this.db
      .prepare<[], { row: number; key: string; etag: string; meta: string }>(
        'SELECT rowid AS row, key, etag, meta FROM narinfo_meta',
      )
      .iterate();
    for (const row of rows) visit(row.key, row.etag, JSON.parse(row.meta) as NarInfoMeta, row.row);
  }

  /** Stores what was read, and forgets the rows found stale (gone from the bucket, rewritten, or twice). */
  update(read: readonly { key: string; etag: string; meta: NarInfoMeta }[], stale: readonly number[]): void {
    const put = this.db.prepare('INSERT INTO narinfo_meta (key, etag, meta) VALUES (?, ?, ?)');
    const forget = this.db.prepare('DELETE FROM narinfo_meta WHERE rowid = ?');
    this.db.transaction(() => {
      for (const entry of read) put.run(entry.key, entry.etag, JSON.stringify(entry.meta));
      for (const row of stale) forget.run(row);
    })();
  }

  close(): void {
    this.db.close();
  }
}
