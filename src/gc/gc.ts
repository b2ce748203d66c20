import { performance } from 'node:perf_hooks';
import { mapLimit } from '../core/limit.js';
import type { CacheBackend, ObjectEntry } from '../cache/backend.js';
import {
  LEASES_PREFIX,
  listingHashPart,
  LOG_PREFIX,
  MARKS_KEY,
  NAR_PREFIX,
  narInfoHashPart,
  REALISATIONS_PREFIX,
  SWEEPS_PREFIX,
} from '../cache/layout.js';
import { errorText } from '../core/errors.js';
import { parseRealisation } from '../core/realisation.js';
import { leaseIsLive } from './lease.js';
import type { MetaCache, NarInfoMeta } from './meta-cache.js';
import {
  addTo,
  byKind,
  countBroken,
  derivationOfLogKey,
  extendClosure,
  fixedRoots,
  KINDS,
  narHashOfKey,
  narInfoMeta,
  parseMarks,
  planMarks,
  referrersFirst,
  renderMarks,
  sortListing,
  stillNeeded,
  tally,
  type ByKind,
  type Tally,
} from './plan.js';
import { listAll, RootReader } from './roots.js';
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

const FOREIGN_SHOWN = 20;

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
  const [top, narList, logList, realisationList, sweepList] = await Promise.all(
    ['', NAR_PREFIX, LOG_PREFIX, REALISATIONS_PREFIX, SWEEPS_PREFIX].map((prefix) => listAll(backend, prefix)),
  );
  const listing = sortListing(top ?? [], narList ?? [], logList ?? [], realisationList ?? []);
  report.foreign = listing.foreign;
  report.narinfos = listing.narinfos.size;
  const metas = await readNarInfos(backend, listing.narinfos, options, note);
  for (const [hashPart, meta] of metas) {
    if (meta.problem !== undefined)
      report.problems.push(`${listing.narinfos.get(hashPart)?.key}: ${meta.problem}; kept`);
  }
  const realisationOutputs = await readRealisations(backend, listing.realisations, options.jobs, report.problems);
  report.brokenNarInfos = countBroken(metas);

  // Roots, and what they reach. What the roots reach only grows during a run: a pin or lease that goes away
  // spares its closure until the next run, which is safe.
  const graceStart = startedAt - options.graceMs;
  const fixed = fixedRoots(listing.narinfos, metas, { olderThan: startedAt - options.olderThanMs, graceStart });
  report.roots.recent = fixed.recent;
  report.roots.young = fixed.young;
  const reachable = new Set<string>();
  extendClosure(reachable, fixed.hashParts, metas);
  const rootReader = new RootReader(backend);
  const protection = async (): Promise<Protection> => {
    const roots = await rootReader.read(now());
    extendClosure(reachable, [...roots.pinned, ...roots.leased], metas);
    return { ...roots, reachable };
  };
  const first = await protection();
  report.problems.push(...first.problems);
  report.roots.pinned = first.pinned.size;
  report.roots.leased = first.leased.size;
  report.reachable = reachable.size;

  // 1. Mark.
  const previousMarks = parseMarks((await backend.get(MARKS_KEY))?.toString('utf8') ?? '');
  const plan = planMarks({
    listing,
    metas,
    reachable,
    leasedNarHashes: first.narHashes,
    realisationOutputs,
    previousMarks,
    startedAt,
    graceStart,
  });
  report.waiting = plan.waiting;
  report.young = plan.young;
  const staleLeases = first.staleLeases;
  const staleSweeps = sweepList?.filter((entry) => !leaseIsLive(entry, startedAt)) ?? [];
  if (options.dryRun) {
    for (const kind of KINDS) for (const entry of plan.deletable[kind]) addTo(report.deleted[kind], entry);
    report.deleted.leases = staleLeases.length;
    report.deleted.sweepMarks = staleSweeps.length;
    return finish(report, startedAt, now);
  }
  await writeMarks(backend, plan.marks, previousMarks.size > 0);

  // 2. Sweep: realisations, narinfos referrers first, then the NARs, logs and listings no narinfo left needs, then
  // stale leases.
  const { deletable } = plan;
  const work = KINDS.reduce((sum, kind) => sum + deletable[kind].length, 0) + staleLeases.length + staleSweeps.length;
  if (work === 0) return finish(report, startedAt, now);
  const sweeper = new Sweeper({ backend, protection, startedAt, listedAt, work, note });
  const deletedNarInfos = new Set<string>();
  try {
    // A realisation goes before its output's narinfo: none is left naming a path the cache lost.
    await sweeper.deleteAll(
      deletable.realisations,
      (entry, current) => current.reachable.has(realisationOutputs.get(entry.key) ?? ''),
      (entry) => {
        addTo(report.deleted.realisations, entry);
      },
    );
    for (const layer of referrersFirst(deletable.narinfos, metas)) {
      await sweeper.deleteAll(
        layer,
        (entry, current) => current.reachable.has(narInfoHashPart(entry.key) ?? ''),
        (entry) => {
          deletedNarInfos.add(narInfoHashPart(entry.key) ?? '');
          addTo(report.deleted.narinfos, entry);
        },
      );
    }
    // A NAR or log goes only when no narinfo left in the cache (or new, under a lease) needs it.
    const needed = stillNeeded(metas, deletedNarInfos);
    await sweeper.deleteAll(
      deletable.nars,
      (entry, current) => needed.narKeys.has(entry.key) || current.narHashes.has(narHashOfKey(entry.key)),
      (entry) => {
        addTo(report.deleted.nars, entry);
      },
    );
    await sweeper.deleteAll(
      deletable.logs,
      (entry) => needed.derivers.has(derivationOfLogKey(entry.key)),
      (entry) => {
        addTo(report.deleted.logs, entry);
      },
    );
    await sweeper.deleteAll(
      deletable.listings,
      (entry, current) => {
        const hashPart = listingHashPart(entry.key) ?? '';
        return needed.narInfos.has(hashPart) || current.reachable.has(hashPart);
      },
      (entry) => {
        addTo(report.deleted.listings, entry);
      },
    );
    await sweeper.deleteAll(
      [...staleLeases, ...staleSweeps],
      (entry, current) => (entry.key.startsWith(LEASES_PREFIX) ? current.liveLeaseKeys.has(entry.key) : false),
      (entry) =>
        entry.key.startsWith(LEASES_PREFIX) ? (report.deleted.leases += 1) : (report.deleted.sweepMarks += 1),
    );
  } catch (err) {
    if (!(err instanceof StopSweep)) throw err;
    report.stopped = `${err.message}; run cachectl gc again to finish`;
  } finally {
    await sweeper.end();
  }
  report.spared = sweeper.spared;
  // What is gone needs no mark (the next run would drop them anyway; an emptied cache keeps none).
  for (const key of sweeper.deletedKeys) plan.marks.delete(key);
  await writeMarks(backend, plan.marks, true);
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

async function writeMarks(backend: CacheBackend, marks: Map<string, number>, existed: boolean): Promise<void> {
  if (marks.size > 0) await backend.put(MARKS_KEY, Buffer.from(renderMarks(marks)), 'text/plain; charset=utf-8');
  else if (existed) await backend.delete([MARKS_KEY]);
}

/**
 * The hash part of each realisation's output, read from the cache (realisations are few: one per output of
 * a content-addressed derivation). One that does not parse is reported and left out, and so kept.
 */
async function readRealisations(
  backend: CacheBackend,
  entries: readonly ObjectEntry[],
  jobs: number,
  problems: string[],
): Promise<Map<string, string>> {
  const outputs = new Map<string, string>();
  await mapLimit(entries, jobs, async (entry) => {
    const body = await backend.get(entry.key);
    if (body === undefined) return; // deleted since the listing
    try {
      outputs.set(entry.key, parseRealisation(body.toString('utf8'), entry.key).outPath.slice(0, 32));
    } catch (err) {
      problems.push(`${entry.key}: ${errorText(err)}; kept`);
    }
  });
  return outputs;
}

/** The parsed narinfos, from the metadata cache where the ETag still matches, read from the cache otherwise. */
async function readNarInfos(
  backend: CacheBackend,
  entries: Map<string, ObjectEntry>,
  options: GcOptions,
  note: (text: string) => void,
): Promise<Map<string, NarInfoMeta>> {
  const cached = options.metaCache?.all() ?? new Map<string, { etag: string; meta: NarInfoMeta }>();
  const metas = new Map<string, NarInfoMeta>();
  const toRead: [string, ObjectEntry][] = [];
  for (const [hashPart, entry] of entries) {
    const hit = cached.get(entry.key);
    if (hit !== undefined && hit.etag === entry.etag) metas.set(hashPart, hit.meta);
    else toRead.push([hashPart, entry]);
  }
  const read: { key: string; etag: string; meta: NarInfoMeta }[] = [];
  let count = 0;
  await mapLimit(toRead, options.jobs, async ([hashPart, entry]) => {
    const body = await backend.get(entry.key);
    count += 1;
    if (count % 1000 === 0) note(`read ${count} of ${toRead.length} narinfos`);
    if (body === undefined) {
      // deleted since the listing: nothing to keep or delete
      entries.delete(hashPart);
      return;
    }
    const meta = narInfoMeta(body.toString('utf8'), entry.key, hashPart);
    metas.set(hashPart, meta);
    read.push({ key: entry.key, etag: entry.etag, meta });
  });
  const listed = new Set([...entries.values()].map((entry) => entry.key));
  options.metaCache?.update(
    read,
    [...cached.keys()].filter((key) => !listed.has(key)),
  );
  return metas;
}

function finish(report: GcReport, startedAt: number, now: () => number): GcReport {
  report.seconds = (now() - startedAt) / 1000;
  if (report.foreign.length > FOREIGN_SHOWN) {
    const more = `… and ${report.foreign.length - FOREIGN_SHOWN} more`;
    report.foreign = [...report.foreign.slice(0, FOREIGN_SHOWN), more];
  }
  return report;
}
