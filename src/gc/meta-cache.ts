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
 */
export class MetaCache {
  private constructor(private readonly db: Database.Database) {}

  static open(file: string): MetaCache {
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
      const db = new Database(file);
      db.pragma('journal_mode = WAL');
      db.exec(`CREATE TABLE IF NOT EXISTS narinfos (key TEXT PRIMARY KEY, etag TEXT NOT NULL, meta TEXT NOT NULL)`);
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

  /** Calls `visit` with each cached narinfo, a row at a time (a million of them do not fit in memory at once). */
  forEach(visit: (key: string, etag: string, meta: NarInfoMeta) => void): void {
    const rows = this.db
      .prepare<[], { key: string; etag: string; meta: string }>('SELECT key, etag, meta FROM narinfos')
      .iterate();
    for (const row of rows) visit(row.key, row.etag, JSON.parse(row.meta) as NarInfoMeta);
  }

  /** Stores what was read, and forgets the keys no longer in the bucket. */
  update(read: readonly { key: string; etag: string; meta: NarInfoMeta }[], gone: readonly string[]): void {
    const put = this.db.prepare('INSERT OR REPLACE INTO narinfos (key, etag, meta) VALUES (?, ?, ?)');
    const forget = this.db.prepare('DELETE FROM narinfos WHERE key = ?');
    this.db.transaction(() => {
      for (const entry of read) put.run(entry.key, entry.etag, JSON.stringify(entry.meta));
      for (const key of gone) forget.run(key);
    })();
  }

  close(): void {
    this.db.close();
  }
}
