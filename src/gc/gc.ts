import { performance } from 'node:perf_hooks';
import { forEachLimit } from '../core/limit.js';
import { listAll, listDeep, listEach, type CacheBackend } from '../cache/backend.js';
import {
  BUILD_TRACE_PREFIX,
  buildTraceOf,
  LEASES_PREFIX,
  LOG_PREFIX,
  MARKS_KEY,
  NAR_PREFIX,
  narInfoHashPart,
  REALISATIONS_PREFIX,
  SWEEPS_PREFIX,
} from '../cache/layout.js';
import { errorText } from '../core/errors.js';
import { parseBuildTrace, parseRealisation } from '../core/realisation.js';
import { hashPartOf } from '../core/store-path.js';
import { Inventory, ObjectTable, PathSet } from './inventory.js';
import { leaseIsLive } from './lease.js';
import type { MetaCache, NarInfoMeta } from './meta-cache.js';
import {
  addTo,
  byKind,
  countBroken,
  countMarks,
  extendClosure,
  fixedRoots,
  KINDS,
  narHashOfKey,
  narInfoMeta,
  parseMarks,
  planMarks,
  referrersFirst,
  renderMarks,
  stillNeeded,
  tally,
  type ByKind,
  type Marks,
  type Tally,
} from './plan.js';
import { RootReader } from './roots.js';
import { StopSweep, Sweeper, type Protection } from './sweep.js';

export type { Tally } from './plan.js';

export interface GcOptions {
  backend: CacheBackend;
  /** narinfos uploaded (or refreshed) within this are roots */
  olderThanMs: number;
  /** an unreachable object is deleted only once it has been marked this long, and is marked only once this old */
  graceMs: number;
  dryRun: boolean;
  metaCache?: MetaCache;
  /** requests at once */
  jobs: number;
  now?: () => number;
  /** short progress notes for a person watching */
  onProgress?: (note: string) => void;
}

export interface GcReport {
  cache: string;
  dryRun: boolean;
  seconds: number;
  narinfos: number;
  /**
   * narinfos newer than --older-than, newer than --grace (kept, and so is what they refer to), pinned and leased
   * paths
   */
  roots: { pinned: number; recent: number; young: number; leased: number };
  /** narinfos in the closure of the roots */
  reachable: number;
  /** deleted, or with --dry-run what would be */
  deleted: ByKind<Tally> & { leases: number; sweepMarks: number };
  /** unreachable, marked, and waiting out the grace */
  waiting: ByKind<Tally>;
  /** unreachable but younger than the grace: not marked yet */
  young: Tally;
  /** objects that were to go but were protected again at the last check (a new lease or pin) */
  spared: number;
  /** narinfos whose references are not in the cache (before this run touched anything) */
  brokenNarInfos: number;
  /** malformed narinfos, pins and leases: kept and reported */
  problems: string[];
  /** keys that are not part of the layout: never touched */
  foreign: string[];
  /** why the sweep stopped before the end, if it did (the next run continues) */
  stopped?: string;
}

/**
 * The garbage collector of DESIGN.md section 5. Lists the bucket, marks what the roots (pins, recent
 * narinfos, leases) do not reach, and deletes what has been marked for `graceMs`: narinfos before the NARs,
 * referrers before what they refer to, each batch only after the pins and leases were read again.
 */
export async function collectGarbage(options: GcOptions): Promise<GcReport> {
  const { backend } = options;
  const now = options.now ?? Date.now;
  const note = options.onProgress ?? (() => undefined);
  const startedAt = now();
  const report = emptyReport(backend.displayUrl, options.dryRun);

  // List the bucket and read its narinfos.
  note('listing the cache');
  const listedAt = performance.now();
  const inventory = new Inventory();
  // One prefix after another: a file:// listing holds all the names of a directory at once.
  for (const prefix of ['', NAR_PREFIX, LOG_PREFIX, REALISATIONS_PREFIX])
    await listEach(backend, prefix, (page) => {
      inventory.addListed(prefix, page);
    });
  inventory.addListed(BUILD_TRACE_PREFIX, await listDeep(backend, BUILD_TRACE_PREFIX));
  const sweepList = await listAll(backend, SWEEPS_PREFIX);
  inventory.completeListing();
  report.foreign = inventory.foreign;
  if (inventory.foreignCount > inventory.foreign.length)
    report.foreign.push(`… and ${inventory.foreignCount - inventory.foreign.length} more`);
  report.narinfos = inventory.narinfos.length;
  await readNarInfos(backend, inventory, options, note);
  for (const [id, problem] of inventory.problems)
    report.problems.push(`${inventory.narinfos.key(id)}: ${problem}; kept`);
  await readRealisations(backend, inventory, options.jobs, report.problems);
  report.brokenNarInfos = countBroken(inventory);

  // Roots, and what they reach. What the roots reach only grows during a run: a pin or lease that goes away
  // spares its closure until the next run, which is safe.
  const graceStart = startedAt - options.graceMs;
  const fixed = fixedRoots(inventory, { olderThan: startedAt - options.olderThanMs, graceStart });
  report.roots.recent = fixed.recent;
  report.roots.young = fixed.young;
  const reachable = new PathSet();
  extendClosure(reachable, fixed.ids, inventory);
  const rootReader = new RootReader(backend);
  // Read again before every batch: only roots not seen before are looked up (a pin may name thousands).
  const extended = new Set<string>();
  const protection = async (): Promise<Protection> => {
    const roots = await rootReader.read(now());
    const ids: number[] = [];
    for (const hashPart of [...roots.pinned, ...roots.leased]) {
      if (extended.has(hashPart)) continue;
      extended.add(hashPart);
      ids.push(inventory.pathId(hashPart));
    }
    extendClosure(reachable, ids, inventory);
    return { ...roots, reachable };
  };
  const first = await protection();
  report.problems.push(...first.problems);
  report.roots.pinned = first.pinned.size;
  report.roots.leased = first.leased.size;
  report.reachable = reachable.size;

  // 1. Mark.
  const marksText = await backend.get(MARKS_KEY);
  const previousMarks = parseMarks(marksText ?? Buffer.alloc(0), inventory);
  const plan = planMarks({
    inventory,
    reachable,
    leasedNarHashes: first.narHashes,
    previousMarks,
    startedAt,
    graceStart,
  });
  report.waiting = plan.waiting;
  report.young = plan.young;
  const { tables } = inventory;
  const { deletable } = plan;
  const stale = new ObjectTable();
  for (const entry of [...first.staleLeases, ...sweepList.filter((e) => !leaseIsLive(e, startedAt))]) stale.add(entry);
  const isLease = (index: number) => stale.key(index).startsWith(LEASES_PREFIX);
  if (options.dryRun) {
    for (const kind of KINDS) for (const i of deletable[kind]) addTo(report.deleted[kind], tables[kind].sizes.at(i));
    report.deleted.leases = first.staleLeases.length;
    report.deleted.sweepMarks = stale.length - first.staleLeases.length;
    return finish(report, startedAt, now);
  }
  await writeMarks(backend, plan.marks, inventory, marksText !== undefined);

  // 2. Sweep: realisations, narinfos referrers first, then the NARs, logs and listings no narinfo left needs, then
  // stale leases.
  const work = KINDS.reduce((sum, kind) => sum + deletable[kind].length, 0) + stale.length;
  if (work === 0) return finish(report, startedAt, now);
  const sweeper = new Sweeper({ backend, protection, startedAt, listedAt, work, note });
  const deletedNarInfos = new PathSet();
  const deleted = (kind: keyof typeof tables, also?: (index: number) => void) => (index: number) => {
    addTo(report.deleted[kind], tables[kind].sizes.at(index));
    // What is gone needs no mark (the next run would drop them anyway; an emptied cache keeps none).
    plan.marks[kind][index] = 0;
    also?.(index);
  };
  try {
    // A realisation goes before its output's narinfo: none is left naming a path the cache lost.
    await sweeper.deleteAll(
      tables.realisations,
      deletable.realisations,
      (i, current) => current.reachable.has(inventory.realisationPaths[i] as number),
      deleted('realisations'),
    );
    for (const layer of referrersFirst(deletable.narinfos, inventory)) {
      await sweeper.deleteAll(
        tables.narinfos,
        layer,
        (id, current) => current.reachable.has(id),
        deleted('narinfos', (id) => {
          deletedNarInfos.add(id);
        }),
      );
    }
    // A NAR or log goes only when no narinfo left in the cache (or new, under a lease) needs it.
    const needed = stillNeeded(inventory, deletedNarInfos);
    await sweeper.deleteAll(
      tables.nars,
      deletable.nars,
      (i, current) => needed.nars[i] === 1 || current.narHashes.has(narHashOfKey(tables.nars.key(i))),
      deleted('nars'),
    );
    await sweeper.deleteAll(tables.logs, deletable.logs, (i) => needed.logs[i] === 1, deleted('logs'));
    await sweeper.deleteAll(
      tables.listings,
      deletable.listings,
      (i, current) => {
        const id = inventory.listingPaths[i] as number;
        return needed.narInfos.has(id) || current.reachable.has(id);
      },
      deleted('listings'),
    );
    await sweeper.deleteAll(
      stale,
      Array.from({ length: stale.length }, (_, i) => i),
      (i, current) => isLease(i) && current.liveLeaseKeys.has(stale.key(i)),
      (i) => (isLease(i) ? (report.deleted.leases += 1) : (report.deleted.sweepMarks += 1)),
    );
  } catch (err) {
    if (!(err instanceof StopSweep)) throw err;
    report.stopped = `${err.message}; run cachectl gc again to finish`;
  } finally {
    await sweeper.end();
  }
  report.spared = sweeper.spared;
  await writeMarks(backend, plan.marks, inventory, true);
  return finish(report, startedAt, now);
}

function emptyReport(cache: string, dryRun: boolean): GcReport {
  return {
    cache,
    dryRun,
    seconds: 0,
    narinfos: 0,
    roots: { pinned: 0, recent: 0, young: 0, leased: 0 },
    reachable: 0,
    deleted: { ...byKind(tally), leases: 0, sweepMarks: 0 },
    waiting: byKind(tally),
    young: tally(),
    spared: 0,
    brokenNarInfos: 0,
    problems: [],
    foreign: [],
  };
}

async function writeMarks(backend: CacheBackend, marks: Marks, inventory: Inventory, existed: boolean): Promise<void> {
  const count = countMarks(marks);
  // about 100 bytes a line: the size hint only chooses multipart part sizes
  const chunks = async function* () {
    yield* renderMarks(marks, inventory);
  };
  if (count > 0) await backend.putStream(MARKS_KEY, chunks(), 'stateText', count * 128);
  else if (existed) await backend.delete([MARKS_KEY]);
}

/**
 * The path id of each realisation's output, read from the cache (realisations are few: two or three per output of
 * a content-addressed derivation, build traces included). One that does not parse is reported and left at -1, and
 * so kept.
 */
async function readRealisations(
  backend: CacheBackend,
  inventory: Inventory,
  jobs: number,
  problems: string[],
): Promise<void> {
  const table = inventory.tables.realisations;
  await forEachLimit(table.length, jobs, async (i) => {
    const key = table.key(i);
    const body = await backend.get(key);
    if (body === undefined) return; // deleted since the listing
    try {
      const trace = buildTraceOf(key);
      const text = body.toString('utf8');
      const outPath = (trace === undefined ? parseRealisation(text, key) : parseBuildTrace(text, trace, key)).outPath;
      inventory.realisationPaths[i] = inventory.pathId(hashPartOf(outPath));
    } catch (err) {
      problems.push(`${key}: ${errorText(err)}; kept`);
    }
  });
}

/** Narinfos read from the cache between writes to the metadata cache. */
const META_BATCH = 1000;
/** Narinfos a `getMany` reads, and how many such batches are out at once (two for each of up to 4 readers). */
const READ_BATCH = 500;
const READ_BATCHES_AT_ONCE = 8;

/** Parses every listed narinfo: from the metadata cache where the ETag still matches, read from the cache otherwise. */
async function readNarInfos(
  backend: CacheBackend,
  inventory: Inventory,
  options: GcOptions,
  note: (text: string) => void,
): Promise<void> {
  const listed = inventory.narinfos.length;
  const stale: number[] = [];
  options.metaCache?.forEach((key, etag, meta, row) => {
    const hashPart = narInfoHashPart(key);
    const id = hashPart === undefined ? undefined : inventory.knownPathId(hashPart);
    if (id !== undefined && id < listed && inventory.hasEtag(id, etag) && !inventory.isRead(id))
      inventory.setMeta(id, meta);
    else stale.push(row); // gone from the bucket, rewritten since (it is read again below), or a second row
  });
  options.metaCache?.update([], stale);
  const toRead: number[] = [];
  for (let id = 0; id < listed; id += 1) if (!inventory.isRead(id)) toRead.push(id);
  let read: { key: string; etag: string; meta: NarInfoMeta }[] = [];
  let count = 0;
  const take = (id: number, body: Buffer | undefined) => {
    count += 1;
    if (count % 1000 === 0) note(`read ${count} of ${toRead.length} narinfos`);
    if (body === undefined) {
      inventory.setGone(id);
      return;
    }
    const key = inventory.narinfos.key(id);
    const meta = narInfoMeta(body.toString('utf8'), key, inventory.hashPart(id));
    inventory.setMeta(id, meta);
    read.push({ key, etag: inventory.etag(id), meta });
    if (read.length >= META_BATCH) {
      options.metaCache?.update(read, []);
      read = [];
    }
  };
  const getMany = backend.getMany?.bind(backend);
  if (getMany !== undefined) {
    // In batches, read off the main thread while it parses the batches before.
    await forEachLimit(Math.ceil(toRead.length / READ_BATCH), READ_BATCHES_AT_ONCE, async (batch) => {
      const ids = toRead.slice(batch * READ_BATCH, (batch + 1) * READ_BATCH);
      const bodies = await getMany(ids.map((id) => inventory.narinfos.key(id)));
      for (const [i, id] of ids.entries()) take(id, bodies[i]);
    });
  } else {
    await forEachLimit(toRead.length, options.jobs, async (i) => {
      const id = toRead[i] as number;
      take(id, await backend.get(inventory.narinfos.key(id)));
    });
  }
  options.metaCache?.update(read, []);
}

function finish(report: GcReport, startedAt: number, now: () => number): GcReport {
  report.seconds = (now() - startedAt) / 1000;
  return report;
}
