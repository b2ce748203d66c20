import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import Database from 'better-sqlite3';
import { CachectlError } from '../core/errors.js';
import { parseSha256 } from '../core/hash.js';
import { DEFAULT_STORE_DIR } from '../core/store-path.js';
import { DEFAULT_NIX_LOG_DIR } from '../core/config.js';
import type { Realisation } from '../core/realisation.js';
import { findBuildLog, type BuildLog } from './build-log.js';
import { readDerivationFile, realisationIds } from './derivation.js';

export const DEFAULT_NIX_DB = '/nix/var/nix/db/db.sqlite';

/** What the local store knows of one valid path (Nix's ValidPathInfo). */
export interface PathInfo {
  path: string;
  narHash: Buffer;
  narSize: number;
  /** full store paths, self-references included */
  references: string[];
  /** full path of the .drv */
  deriver?: string;
  sigs: string[];
  ca?: string;
}

interface PathRow {
  id: number;
  path: string;
  hash: string;
  narSize: number | null;
  deriver: string | null;
  sigs: string | null;
  ca: string | null;
}

const CLOSURE_SQL = `
  WITH RECURSIVE closure(id) AS (
    SELECT id FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))
    UNION SELECT r.reference FROM Refs r JOIN closure c ON r.referrer = c.id)`;

/**
 * Read-only access to the local Nix store's SQLite database: one query for a whole closure, however many
 * thousands of paths it holds. Opened normally (not immutable) so that pages still in the WAL are seen, and
 * only when first needed: on a fresh machine Nix makes its database at its first use, which may come after
 * the daemon has started.
 */
export class LocalStore {
  readonly storeDir: string;
  private readonly dbPath: string;
  private readonly logDir: string;
  private db: Database.Database | undefined;

  constructor(options: { dbPath?: string; storeDir?: string; logDir?: string } = {}) {
    this.dbPath = options.dbPath ?? DEFAULT_NIX_DB;
    this.storeDir = options.storeDir ?? DEFAULT_STORE_DIR;
    this.logDir = options.logDir ?? DEFAULT_NIX_LOG_DIR;
  }

  /** The log Nix kept of building `drvPath`, if it kept one. */
  buildLog(drvPath: string): BuildLog | undefined {
    return findBuildLog(this.logDir, drvPath);
  }

  close(): void {
    this.db?.close();
  }

  /**
   * Runs a query, turning failures to open or read the database into NIX_STORE_UNREADABLE (retryable: the
   * machine's trouble, not the paths'), naming the file and the fix.
   */
  private read<T>(query: (db: Database.Database) => T): T {
    if (this.db === undefined && !existsSync(this.dbPath)) {
      throw new CachectlError(
        'NIX_STORE_UNREADABLE',
        `the Nix store database ${this.dbPath} does not exist (is Nix installed, and has it run here yet?)`,
        {
          retryable: true,
        },
      );
    }
    try {
      if (this.db === undefined) {
        const db = new Database(this.dbPath, { readonly: true, fileMustExist: true });
        db.pragma('busy_timeout = 10000');
        this.db = db;
      }
      return query(this.db);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || !code.startsWith('SQLITE_')) throw err;
      // A WAL database that no process has open has no -wal and -shm; even a read-only reader must create them.
      const fix = /^SQLITE_(CANTOPEN|READONLY)/.test(code)
        ? `; while no Nix process has it open, reading it means creating ${this.dbPath}-wal and -shm: cachectl needs ` +
          `write access to ${dirname(this.dbPath)} (under systemd: ReadWritePaths=-${dirname(this.dbPath)}, as ` +
          `systemd/cachectl.service has)`
        : '';
      throw new CachectlError(
        'NIX_STORE_UNREADABLE',
        `cannot read the Nix store database ${this.dbPath}: ${(err as Error).message} (${code})${fix}`,
        {
          cause: err,
          retryable: true,
        },
      );
    }
  }

  /** The valid paths among `paths`; the others are absent from the map. */
  queryPathInfos(paths: readonly string[]): Map<string, PathInfo> {
    return this.read((db) => this.pathInfos(db, paths));
  }

  private pathInfos(db: Database.Database, paths: readonly string[]): Map<string, PathInfo> {
    const json = JSON.stringify(paths);
    const rows = db
      .prepare<[string], PathRow>(
        'SELECT id, path, hash, narSize, deriver, sigs, ca FROM ValidPaths WHERE path IN (SELECT value FROM ' +
          'json_each(?))',
      )
      .all(json);
    const refs = db
      .prepare<[string], { referrer: number; path: string }>(
        `SELECT r.referrer, p.path FROM Refs r JOIN ValidPaths p ON p.id = r.reference
         WHERE r.referrer IN (SELECT id FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?)))`,
      )
      .all(json);
    return this.toInfos(rows, refs);
  }

  /**
   * The valid outputs of a derivation (what the hook queues when Nix gives it only DRV_PATH): those Nix knows
   * from the derivation itself, and for a content-addressed one those its realisations name, found by the ids
   * computed from the `.drv` and its inputs (which must still be in the store).
   */
  queryDerivationOutputs(drvPath: string): string[] {
    const known = this.read((db) =>
      db
        .prepare<[string], { path: string }>(
          `SELECT o.path FROM DerivationOutputs o JOIN ValidPaths d ON d.id = o.drv JOIN ValidPaths v ON v.path = o.path
           WHERE d.path = ? ORDER BY o.path`,
        )
        .all(drvPath)
        .map((row) => row.path),
    );
    if (known.length > 0 || !this.read((db) => hasRealisations(db))) return known;
    let ids: string[];
    try {
      ids = [...realisationIds(drvPath).values()];
    } catch {
      return known; // the .drv (or one of its inputs) is gone or not a derivation: no outputs to find
    }
    return this.read((db) =>
      db
        .prepare<[string], { path: string }>(
          // Through the (drvPath, outputName) index: matching on `drvPath || '!' || outputName` read every path.
          `SELECT DISTINCT v.path FROM json_each(?) j
           CROSS JOIN Realisations r ON r.drvPath = j.value ->> '$[0]' AND r.outputName = j.value ->> '$[1]'
           JOIN ValidPaths v ON v.id = r.outputPath ORDER BY v.path`,
        )
        .all(
          JSON.stringify(
            ids.map((id) => {
              const bang = id.indexOf('!');
              return [id.slice(0, bang), id.slice(bang + 1)];
            }),
          ),
        )
        .map((row) => row.path),
    );
  }

  /**
   * The realisations whose output is one of `paths`, each with its dependent realisations: what Nix keeps for
   * content-addressed derivations (and, with ca-derivations on, for every build) in its Realisations table.
   * None when the table does not exist (ca-derivations never enabled).
   */
  queryRealisations(paths: readonly string[]): Realisation[] {
    return this.read((db) => {
      if (!hasRealisations(db)) return [];
      const rows = db
        .prepare<
          [string],
          { id: number; drvHash: string; outputName: string; path: string; signatures: string | null }
        >(
          `SELECT r.id, r.drvPath AS drvHash, r.outputName, v.path, r.signatures FROM Realisations r
           JOIN ValidPaths v ON v.id = r.outputPath WHERE v.path IN (SELECT value FROM json_each(?))`,
        )
        .all(JSON.stringify(paths));
      const dependents = db
        .prepare<[string], { referrer: number; drvHash: string; outputName: string; path: string }>(
          `SELECT rr.referrer, d.drvPath AS drvHash, d.outputName, v.path FROM RealisationsRefs rr
           JOIN Realisations d ON d.id = rr.realisationReference JOIN ValidPaths v ON v.id = d.outputPath
           WHERE rr.referrer IN (SELECT value FROM json_each(?))`,
        )
        .all(JSON.stringify(rows.map((row) => row.id)));
      return rows.map((row) => ({
        id: `${row.drvHash}!${row.outputName}`,
        outPath: basename(row.path),
        signatures: row.signatures === null || row.signatures === '' ? [] : row.signatures.split(' '),
        dependentRealisations: new Map(
          dependents
            .filter((dep) => dep.referrer === row.id)
            .map((dep) => [`${dep.drvHash}!${dep.outputName}`, basename(dep.path)]),
        ),
      }));
    });
  }

  /**
   * The derivation each of `realisations` was registered for, by realisation id: what Nix >= 2.35 keys a
   * realisation by. Nix registers a content-addressed output for the derivation as resolved, the output's deriver
   * (`infos`), and as written: that one is found among the valid derivations of the same name (one query, which
   * reads the name of every valid path), by their realisation ids. Ids no valid derivation has are left out.
   */
  realisationDerivations(
    realisations: readonly Realisation[],
    infos: ReadonlyMap<string, PathInfo>,
  ): Map<string, string> {
    const wanted = new Set(realisations.map((realisation) => realisation.id));
    const found = new Map<string, string>();
    const tried = new Set<string>();
    const known = new Map<string, Map<string, Buffer>>();
    const tryDerivation = (drvPath: string) => {
      if (tried.has(drvPath)) return;
      tried.add(drvPath);
      let ids: Map<string, string>;
      try {
        ids = realisationIds(drvPath, readDerivationFile, known);
      } catch {
        return; // gone from the store, or not a derivation cachectl can read: no key for Nix 2.35
      }
      for (const id of ids.values()) if (wanted.has(id)) found.set(id, drvPath);
    };
    const derivers = new Set(
      realisations.flatMap((realisation) => infos.get(`${this.storeDir}/${realisation.outPath}`)?.deriver ?? []),
    );
    for (const deriver of derivers) tryDerivation(deriver);
    if (found.size === wanted.size) return found;
    // `<storeDir>/<32 characters of hash>-<name>`: the name starts at this (1-based) position
    const nameStart = this.storeDir.length + 35;
    const names = [...derivers].map((deriver) => deriver.slice(nameStart - 1));
    const sameName = this.read((db) =>
      db
        .prepare<[number, string], { path: string }>(
          'SELECT path FROM ValidPaths WHERE substr(path, ?) IN (SELECT value FROM json_each(?))',
        )
        .all(nameStart, JSON.stringify(names))
        .map((row) => row.path),
    );
    for (const drvPath of sameName) tryDerivation(drvPath);
    return found;
  }

  /** The valid paths whose hash parts are `hashParts` (what a narinfo's key names, when its text does not parse). */
  queryPathsByHashPart(hashParts: readonly string[]): string[] {
    return this.read((db) => {
      // The index on path answers a range: every path of a hash part starts with `<storeDir>/<hashPart>-`.
      const query = db.prepare<[string, string], { path: string }>(
        'SELECT path FROM ValidPaths WHERE path >= ? AND path < ? LIMIT 1',
      );
      return hashParts.flatMap((hashPart) => {
        const prefix = `${this.storeDir}/${hashPart}-`;
        return query.all(prefix, `${this.storeDir}/${hashPart}.`).map((row) => row.path);
      });
    });
  }

  /**
   * The closures of `roots` (each root and everything it references, transitively). Throws PATH_NOT_VALID
   * naming the first root that is not a valid path of this store.
   */
  queryClosure(roots: readonly string[]): Map<string, PathInfo> {
    const infos = this.read((db) => this.closureInfos(db, roots));
    for (const root of roots) {
      if (!infos.has(root)) {
        throw new CachectlError(
          'PATH_NOT_VALID',
          `${root} is not a valid path in the local Nix store (deleted by garbage collection, or never built ` +
            `here?); build or substitute it first`,
        );
      }
    }
    return infos;
  }

  private closureInfos(db: Database.Database, roots: readonly string[]): Map<string, PathInfo> {
    const json = JSON.stringify(roots);
    const rows = db
      .prepare<[string], PathRow>(
        `${CLOSURE_SQL} SELECT v.id, v.path, v.hash, v.narSize, v.deriver, v.sigs, v.ca
         FROM ValidPaths v JOIN closure c ON c.id = v.id`,
      )
      .all(json);
    const refs = db
      .prepare<[string], { referrer: number; path: string }>(
        // CROSS JOIN keeps SQLite from scanning all of Refs for a small closure (its planner's choice otherwise).
        `${CLOSURE_SQL} SELECT r.referrer, p.path FROM closure c CROSS JOIN Refs r ON r.referrer = c.id
         JOIN ValidPaths p ON p.id = r.reference`,
      )
      .all(json);
    return this.toInfos(rows, refs);
  }

  private toInfos(rows: PathRow[], refs: { referrer: number; path: string }[]): Map<string, PathInfo> {
    const referencesOf = new Map<number, string[]>();
    for (const { referrer, path } of refs) {
      const list = referencesOf.get(referrer);
      if (list === undefined) referencesOf.set(referrer, [path]);
      else list.push(path);
    }
    const infos = new Map<string, PathInfo>();
    for (const row of rows) {
      const narHash = parseSha256(row.hash);
      if (narHash === undefined) {
        throw new CachectlError(
          'NIX_STORE_UNREADABLE',
          `the Nix database has an unreadable hash ${JSON.stringify(row.hash)} for ${row.path}`,
        );
      }
      const info: PathInfo = {
        path: row.path,
        narHash,
        narSize: row.narSize ?? 0,
        references: (referencesOf.get(row.id) ?? []).sort(),
        sigs: row.sigs === null || row.sigs === '' ? [] : row.sigs.split(' '),
      };
      if (row.deriver !== null && row.deriver !== '') info.deriver = row.deriver;
      if (row.ca !== null && row.ca !== '') info.ca = row.ca;
      infos.set(row.path, info);
    }
    return infos;
  }
}

/** Whether Nix made its Realisations table here (it does once ca-derivations has been enabled). */
function hasRealisations(db: Database.Database): boolean {
  return (
    db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'RealisationsRefs'").get() !== undefined
  );
}
