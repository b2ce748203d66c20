/**
 * The bucket as the GC holds it: every object once, in packed columns (columns.ts), and every hash part as a
 * small integer, its path id. A million narinfos with their NARs take about 200 MB this way; as ObjectEntry
 * objects and maps of strings they took 4 GB.
 */
import type { ObjectEntry } from '../cache/backend.js';
import {
  BUILD_TRACE_PREFIX,
  buildTraceOf,
  CACHE_INFO_KEY,
  isLogKey,
  isNarKey,
  isRealisationKey,
  listingHashPart,
  LOG_PREFIX,
  NAR_PREFIX,
  narInfoHashPart,
  REALISATIONS_PREFIX,
} from '../cache/layout.js';
import { Column, PackedStrings } from './columns.js';
import type { NarInfoMeta } from './meta-cache.js';

/** The kinds of object the GC collects. */
export type Kind = 'narinfos' | 'nars' | 'logs' | 'listings' | 'realisations';
export const KINDS: readonly Kind[] = ['narinfos', 'nars', 'logs', 'listings', 'realisations'];
export type ByKind<T> = Record<Kind, T>;

/** A value for each kind, each made anew. */
export function byKind<T>(make: (kind: Kind) => T): ByKind<T> {
  return {
    narinfos: make('narinfos'),
    nars: make('nars'),
    logs: make('logs'),
    listings: make('listings'),
    realisations: make('realisations'),
  };
}

/** The objects of one kind, by index. */
export class ObjectTable {
  readonly sizes = new Column((size) => new Float64Array(size));
  /** ms since the epoch */
  readonly modified = new Column((size) => new Float64Array(size));
  private readonly keys: PackedStrings;

  /** `indexed`: `indexOf` finds a key */
  constructor(indexed = false) {
    this.keys = new PackedStrings(indexed);
  }

  get length(): number {
    return this.keys.length;
  }

  key(index: number): string {
    return this.keys.at(index);
  }

  /** The index of `key`, or -1 (only for an indexed table). */
  indexOf(key: string): number {
    return this.keys.indexOf(key);
  }

  add(entry: ObjectEntry): number {
    this.sizes.push(entry.sizeBytes);
    this.modified.push(entry.lastModified.getTime());
    return this.keys.add(entry.key);
  }
}

/** What the GC knows of a narinfo, besides nothing yet (0): its text, or that it was deleted since the listing. */
const READ = 1;
const GONE = 2;

/** Shown foreign keys; the rest are counted. */
const FOREIGN_SHOWN = 20;

export class Inventory {
  readonly tables: ByKind<ObjectTable> = {
    narinfos: new ObjectTable(),
    nars: new ObjectTable(true),
    logs: new ObjectTable(true),
    listings: new ObjectTable(true),
    realisations: new ObjectTable(true),
  };
  /** keys outside the layout, never touched: the first few, and how many */
  readonly foreign: string[] = [];
  foreignCount = 0;
  /** why a narinfo does not parse, by id: such a narinfo is kept, with what it seems to refer to */
  readonly problems = new Map<number, string>();
  /** the path id of each listing's hash part, by listing index */
  listingPaths = new Int32Array(0);
  /**
   * the path id of each realisation's output, by index; -1 until read, or if it does not parse. Realisations are
   * both Nix <= 2.34's (`realisations/`) and Nix 2.35's build traces (`build-trace-v2/`).
   */
  realisationPaths = new Int32Array(0);
  /** by realisation index: the log of a build trace's derivation (`log/<drv>`), or -1 */
  realisationLogs = new Int32Array(0);

  /** Path ids: listed narinfos first (ids below narinfos.length), then hash parts met in references and roots. */
  private readonly paths = new PackedStrings(true);
  /** each listed narinfo's ETag, by id */
  private readonly etags = new PackedStrings();
  private listingDone = false;
  // By narinfo id, once read: its references (a slice of `refs`), its NAR's and its log's index, its state.
  private state = new Uint8Array(0);
  private refStart = new Int32Array(0);
  private refCount = new Int32Array(0);
  private narOf = new Int32Array(0);
  private logOf = new Int32Array(0);
  private readonly refs = new Column((size) => new Int32Array(size));

  get narinfos(): ObjectTable {
    return this.tables.narinfos;
  }

  /**
   * Sorts a page of the listing of `prefix` ('', `nar/`, `log/`, `realisations/` or `build-trace-v2/`) into the
   * layout's kinds.
   */
  addListed(prefix: string, entries: readonly ObjectEntry[]): void {
    if (this.listingDone) throw new Error('the inventory is complete: nothing more can be listed into it');
    for (const entry of entries) {
      const { key } = entry;
      if (prefix === '') {
        const hashPart = narInfoHashPart(key);
        if (hashPart !== undefined) this.addNarInfo(hashPart, entry);
        else if (listingHashPart(key) !== undefined) this.tables.listings.add(entry);
        else if (key !== CACHE_INFO_KEY) this.addForeign(key);
      } else if (prefix === NAR_PREFIX && isNarKey(key)) this.tables.nars.add(entry);
      else if (prefix === LOG_PREFIX && isLogKey(key)) this.tables.logs.add(entry);
      else if (prefix === REALISATIONS_PREFIX && isRealisationKey(key)) this.tables.realisations.add(entry);
      else if (prefix === BUILD_TRACE_PREFIX && buildTraceOf(key) !== undefined) this.tables.realisations.add(entry);
      else this.addForeign(key);
    }
  }

  /** Ends the listing: from here on, hash parts of references and roots get ids. */
  completeListing(): void {
    this.listingDone = true;
    const narinfos = this.narinfos.length;
    this.state = new Uint8Array(narinfos);
    this.refStart = new Int32Array(narinfos);
    this.refCount = new Int32Array(narinfos);
    this.narOf = new Int32Array(narinfos).fill(-1);
    this.logOf = new Int32Array(narinfos).fill(-1);
    const { listings, realisations } = this.tables;
    this.listingPaths = new Int32Array(listings.length);
    for (let i = 0; i < listings.length; i += 1)
      this.listingPaths[i] = this.pathId(listingHashPart(listings.key(i)) ?? '');
    this.realisationPaths = new Int32Array(realisations.length).fill(-1);
    this.realisationLogs = new Int32Array(realisations.length).fill(-1);
    for (let i = 0; i < realisations.length; i += 1) {
      const drvPath = buildTraceOf(realisations.key(i))?.drvPath;
      if (drvPath !== undefined) this.realisationLogs[i] = this.tables.logs.indexOf(`${LOG_PREFIX}${drvPath}`);
    }
  }

  /** The id of a hash part, given one if it has none. */
  pathId(hashPart: string): number {
    const id = this.paths.indexOf(hashPart);
    return id >= 0 ? id : this.paths.add(hashPart);
  }

  /** The id of a hash part, if it has one. */
  knownPathId(hashPart: string): number | undefined {
    const id = this.paths.indexOf(hashPart);
    return id >= 0 ? id : undefined;
  }

  hashPart(id: number): string {
    return this.paths.at(id);
  }

  get pathCount(): number {
    return this.paths.length;
  }

  /** Whether narinfo `id` is listed with this ETag. */
  hasEtag(id: number, etag: string): boolean {
    return id < this.narinfos.length && this.etags.at(id) === etag;
  }

  etag(id: number): string {
    return this.etags.at(id);
  }

  /** Whether `id` is a listed narinfo not deleted since. */
  hasNarInfo(id: number): boolean {
    return id < this.narinfos.length && this.state[id] !== GONE;
  }

  isRead(id: number): boolean {
    return this.state[id] === READ;
  }

  /** Records what the GC needs of narinfo `id`'s text. */
  setMeta(id: number, meta: NarInfoMeta): void {
    this.refStart[id] = this.refs.length;
    this.refCount[id] = meta.references.length;
    for (const ref of meta.references) this.refs.push(this.pathId(ref));
    this.narOf[id] = meta.url === undefined ? -1 : this.tables.nars.indexOf(meta.url);
    this.logOf[id] = meta.deriver === undefined ? -1 : this.tables.logs.indexOf(`${LOG_PREFIX}${meta.deriver}`);
    if (meta.problem !== undefined) this.problems.set(id, meta.problem);
    this.state[id] = READ;
  }

  /** Narinfo `id` was deleted since the listing: nothing to keep or delete. */
  setGone(id: number): void {
    this.state[id] = GONE;
  }

  /** Calls `visit` with the path id of each reference of narinfo `id` (none if it is not read). */
  forEachReference(id: number, visit: (ref: number) => void): void {
    this.someReference(id, (ref) => {
      visit(ref);
      return false;
    });
  }

  /** Whether some reference of narinfo `id` passes `test`. */
  someReference(id: number, test: (ref: number) => boolean): boolean {
    if (this.state[id] !== READ) return false;
    const start = this.refStart[id] as number;
    const end = start + (this.refCount[id] as number);
    for (let i = start; i < end; i += 1) if (test(this.refs.at(i))) return true;
    return false;
  }

  /** The index in the NAR table of narinfo `id`'s NAR, or -1 when it names none listed. */
  narOfNarInfo(id: number): number {
    return this.state[id] === READ ? (this.narOf[id] as number) : -1;
  }

  /** The index in the log table of the log of narinfo `id`'s deriver, or -1. */
  logOfNarInfo(id: number): number {
    return this.state[id] === READ ? (this.logOf[id] as number) : -1;
  }

  /** The kind and index of a key, if it is one of the listed objects. */
  find(key: string): { kind: Kind; index: number } | undefined {
    const hashPart = narInfoHashPart(key);
    if (hashPart !== undefined) {
      const id = this.knownPathId(hashPart);
      return id !== undefined && id < this.narinfos.length ? { kind: 'narinfos', index: id } : undefined;
    }
    const kind: Kind =
      listingHashPart(key) !== undefined
        ? 'listings'
        : key.startsWith(LOG_PREFIX)
          ? 'logs'
          : key.startsWith(REALISATIONS_PREFIX) || key.startsWith(BUILD_TRACE_PREFIX)
            ? 'realisations'
            : 'nars';
    const index = this.tables[kind].indexOf(key);
    return index < 0 ? undefined : { kind, index };
  }

  private addNarInfo(hashPart: string, entry: ObjectEntry): void {
    // Ids of narinfos are their index in the table: only narinfos get ids while the listing lasts.
    if (this.paths.indexOf(hashPart) >= 0) return;
    this.paths.add(hashPart);
    this.narinfos.add(entry);
    this.etags.add(entry.etag);
  }

  private addForeign(key: string): void {
    if (this.foreign.length < FOREIGN_SHOWN) this.foreign.push(key);
    this.foreignCount += 1;
  }
}

/** A set of path ids, one byte each. */
export class PathSet {
  private bytes = new Uint8Array(1024);
  size = 0;

  has(id: number): boolean {
    return this.bytes[id] === 1;
  }

  add(id: number): void {
    if (id >= this.bytes.length) {
      const grown = new Uint8Array(Math.max(id + 1, this.bytes.length * 2));
      grown.set(this.bytes);
      this.bytes = grown;
    }
    if (this.bytes[id] === 1) return;
    this.bytes[id] = 1;
    this.size += 1;
  }
}
