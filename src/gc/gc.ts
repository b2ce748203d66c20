import { performance } from 'node:perf_hooks';
import { CachectlError, errorText } from '../core/errors.js';
import { mapLimit } from '../core/limit.js';
import { parseNarInfo } from '../core/narinfo.js';
import { baseNameProblem } from '../core/store-path.js';
import { DELETE_BATCH_KEYS, type CacheBackend, type ObjectEntry } from '../cache/backend.js';
import {
  CACHE_INFO_KEY,
  isLogKey,
  isNarKey,
  LEASES_PREFIX,
  LOG_PREFIX,
  MARKS_KEY,
  NAR_PREFIX,
  narInfoHashPart,
  PINS_PREFIX,
  SWEEPS_PREFIX,
} from '../cache/layout.js';
import { instanceId, LEASE_LINGER_MS, leaseIsLive, parseLease, SWEEP_WINDOW_MS } from './lease.js';
import type { MetaCache, NarInfoMeta } from './meta-cache.js';
import { parsePin } from './pins.js';

export const DEFAULT_OLDER_THAN = '720h';
export const DEFAULT_GRACE = '6h';

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

export interface Tally {
  count: number;
  bytes: number;
}

export interface GcReport {
  cache: string;
  dryRun: boolean;
  seconds: number;
  narinfos: number;
  /** narinfos newer than --older-than, newer than --grace (kept, and so is what they refer to), pinned and leased paths */
  roots: { pinned: number; recent: number; young: number; leased: number };
  /** narinfos in the closure of the roots */
  reachable: number;
  /** deleted, or with --dry-run what would be */
  deleted: { narinfos: Tally; nars: Tally; logs: Tally; leases: number; sweepMarks: number };
  /** unreachable, marked, and waiting out the grace */
  waiting: { narinfos: Tally; nars: Tally; logs: Tally };
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
  const listedAt = performance.now();
  const report: GcReport = {
    cache: backend.displayUrl,
    dryRun: options.dryRun,
    seconds: 0,
    narinfos: 0,
    roots: { pinned: 0, recent: 0, young: 0, leased: 0 },
    reachable: 0,
    deleted: { narinfos: tally(), nars: tally(), logs: tally(), leases: 0, sweepMarks: 0 },
    waiting: { narinfos: tally(), nars: tally(), logs: tally() },
    young: tally(),
    spared: 0,
    brokenNarInfos: 0,
    problems: [],
    foreign: [],
  };
  const foreign = (key: string) => report.foreign.push(key);

  note('listing the cache');
  const [top, narList, logList, sweepList] = await Promise.all(['', NAR_PREFIX, LOG_PREFIX, SWEEPS_PREFIX].map((prefix) => listAll(backend, prefix)));
  const narinfoEntries = new Map<string, ObjectEntry>();
  for (const entry of top ?? []) {
    const hashPart = narInfoHashPart(entry.key);
    if (hashPart !== undefined) narinfoEntries.set(hashPart, entry);
    else if (entry.key !== CACHE_INFO_KEY) foreign(entry.key);
  }
  const nars: ObjectEntry[] = [];
  for (const entry of narList ?? []) (isNarKey(entry.key) ? nars.push(entry) : foreign(entry.key));
  const logs: ObjectEntry[] = [];
  for (const entry of logList ?? []) (isLogKey(entry.key) ? logs.push(entry) : foreign(entry.key));
  report.narinfos = narinfoEntries.size;

  const metas = await readNarInfos(backend, narinfoEntries, options, note);
  for (const [hashPart, meta] of metas) {
    if (meta.problem !== undefined) report.problems.push(`${narinfoEntries.get(hashPart)?.key}: ${meta.problem}; kept`);
    if (meta.references.some((ref) => !metas.has(ref))) report.brokenNarInfos += 1;
  }

  // Roots that do not change while this run lasts: recent narinfos; narinfos younger than the grace, which are
  // not marked, so neither may what they refer to be; malformed ones (kept, with what they seem to refer to).
  const olderThan = startedAt - options.olderThanMs;
  const graceStart = startedAt - options.graceMs;
  const fixedRoots: string[] = [];
  for (const [hashPart, entry] of narinfoEntries) {
    const modified = entry.lastModified.getTime();
    if (modified >= olderThan) report.roots.recent += 1;
    else if (modified > graceStart) report.roots.young += 1;
    else if (metas.get(hashPart)?.problem === undefined) continue;
    fixedRoots.push(hashPart);
  }
  // What the roots reach only grows during a run: a pin or lease that goes away spares its closure until the
  // next run, which is safe.
  const reachable = new Set<string>();
  extendClosure(reachable, fixedRoots, metas);
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
  report.reachable = first.reachable.size;

  // Mark: what the roots do not reach, and is old enough.
  const liveNarKeys = new Set([...first.reachable].flatMap((hashPart) => metas.get(hashPart)?.url ?? []));
  const liveDerivers = new Set([...first.reachable].flatMap((hashPart) => metas.get(hashPart)?.deriver ?? []));
  const unreachable: { entry: ObjectEntry; kind: 'narinfos' | 'nars' | 'logs' }[] = [
    ...[...narinfoEntries].filter(([hashPart]) => !first.reachable.has(hashPart)).map(([, entry]) => ({ entry, kind: 'narinfos' as const })),
    ...nars.filter((entry) => !liveNarKeys.has(entry.key) && !first.narHashes.has(narHashOfKey(entry.key))).map((entry) => ({ entry, kind: 'nars' as const })),
    ...logs.filter((entry) => !liveDerivers.has(entry.key.slice(LOG_PREFIX.length))).map((entry) => ({ entry, kind: 'logs' as const })),
  ];
  const previousMarks = parseMarks((await backend.get(MARKS_KEY))?.toString('utf8') ?? '');
  const marks = new Map<string, number>();
  const deletable = { narinfos: [] as ObjectEntry[], nars: [] as ObjectEntry[], logs: [] as ObjectEntry[] };
  for (const { entry, kind } of unreachable) {
    if (entry.lastModified.getTime() > graceStart) {
      add(report.young, entry);
      continue;
    }
    const markedAt = previousMarks.get(entry.key) ?? startedAt;
    marks.set(entry.key, markedAt);
    if (markedAt <= graceStart) deletable[kind].push(entry);
    else add(report.waiting[kind], entry);
  }
  const staleLeases = first.staleLeases;
  const staleSweeps = sweepList?.filter((entry) => !leaseIsLive(entry, startedAt)) ?? [];

  if (options.dryRun) {
    for (const kind of ['narinfos', 'nars', 'logs'] as const) for (const entry of deletable[kind]) add(report.deleted[kind], entry);
    report.deleted.leases = staleLeases.length;
    report.deleted.sweepMarks = staleSweeps.length;
    return finish(report, startedAt, now);
  }
  await writeMarks(backend, marks, previousMarks.size > 0);

  const work = deletable.narinfos.length + deletable.nars.length + deletable.logs.length + staleLeases.length + staleSweeps.length;
  if (work === 0) return finish(report, startedAt, now);

  // Sweep. Each batch goes out right after the pins and leases were read again, and is given what is left of
  // SWEEP_WINDOW_MS from that read (see lease.ts for why writers rely on that).
  const sweepKey = `${SWEEPS_PREFIX}${instanceId()}`;
  const deletedNarInfos = new Set<string>();
  const deletedKeys = new Set<string>();
  let done = 0;
  let announcedAt = -Infinity;
  // Batches shrink when a delete takes more than a quarter of the window (s3rver takes seconds for 1,000
  // keys), and grow back to S3's 1,000 when deletes are quick.
  let batchKeys = DELETE_BATCH_KEYS;
  const deleteAll = async (entries: readonly ObjectEntry[], keep: (entry: ObjectEntry, current: Protection) => boolean, onDeleted: (entry: ObjectEntry) => void) => {
    let timeouts = 0;
    for (let start = 0; start < entries.length; ) {
      const size = batchKeys;
      const started = performance.now();
      try {
        await deleteBatch(entries.slice(start, start + size), keep, onDeleted);
        timeouts = 0;
      } catch (err) {
        // Too slow for the window: the same keys again, in smaller batches, after a new check.
        if (!(err instanceof DeleteTimeout)) throw err;
        if ((timeouts += 1) === 3) throw new StopSweep(err.message);
        batchKeys = Math.max(1, Math.floor(size / 4));
        continue;
      }
      const took = performance.now() - started;
      if (took > SWEEP_WINDOW_MS / 4) batchKeys = Math.max(1, Math.floor(batchKeys / 2));
      else if (took < SWEEP_WINDOW_MS / 16) batchKeys = Math.min(DELETE_BATCH_KEYS, batchKeys * 2);
      start += size;
    }
  };
  const deleteBatch = async (entries: readonly ObjectEntry[], keep: (entry: ObjectEntry, current: Protection) => boolean, onDeleted: (entry: ObjectEntry) => void) => {
    if (performance.now() - listedAt > LEASE_LINGER_MS / 2) {
      throw new StopSweep(`the listing is older than ${LEASE_LINGER_MS / 2 / 60_000} min, so new narinfos might be missed`);
    }
    // The announcement is rewritten now and then, so that one left by a killed GC is seen to be stale.
    if (performance.now() - announcedAt > 60_000) {
      await backend.put(sweepKey, Buffer.from(`${JSON.stringify({ startedAt: new Date(startedAt).toISOString() })}\n`), 'application/json');
      announcedAt = performance.now();
    }
    const current = await protection();
    const checkedAt = current.leasesListedAt;
    if (current.unreadableLeases.length > 0) {
      throw new StopSweep(`the live leases ${current.unreadableLeases.join(', ')} cannot be read, so what they protect is unknown`);
    }
    const batch = entries.filter((entry) => !keep(entry, current));
    report.spared += entries.length - batch.length;
    const timeoutMs = checkedAt + SWEEP_WINDOW_MS - performance.now();
    if (timeoutMs < SWEEP_WINDOW_MS / 2) throw new StopSweep('reading the leases took too long to delete safely after it');
    if (batch.length > 0) {
      const sentAt = performance.now();
      try {
        await backend.delete(batch.map((entry) => entry.key), { timeoutMs });
      } catch (err) {
        if (performance.now() - sentAt < timeoutMs) throw err;
        throw new DeleteTimeout(`a delete of ${batch.length} keys did not finish within ${Math.round(timeoutMs)} ms (${errorText(err)})`);
      }
    }
    for (const entry of batch) {
      deletedKeys.add(entry.key);
      onDeleted(entry);
    }
    done += entries.length;
    note(`deleted ${done} of ${work} objects`);
  };

  try {
    for (const layer of referrersFirst(deletable.narinfos, metas)) {
      await deleteAll(
        layer,
        (entry, current) => current.reachable.has(narInfoHashPart(entry.key) as string),
        (entry) => {
          deletedNarInfos.add(narInfoHashPart(entry.key) as string);
          add(report.deleted.narinfos, entry);
        },
      );
    }
    // A NAR or log goes only when no narinfo left in the cache (or new, under a lease) needs it.
    const remaining = [...metas].filter(([hashPart]) => !deletedNarInfos.has(hashPart)).map(([, meta]) => meta);
    const keptNarKeys = new Set(remaining.flatMap((meta) => meta.url ?? []));
    const keptDerivers = new Set(remaining.flatMap((meta) => meta.deriver ?? []));
    await deleteAll(
      deletable.nars,
      (entry, current) => keptNarKeys.has(entry.key) || current.narHashes.has(narHashOfKey(entry.key)),
      (entry) => add(report.deleted.nars, entry),
    );
    await deleteAll(
      deletable.logs,
      (entry) => keptDerivers.has(entry.key.slice(LOG_PREFIX.length)),
      (entry) => add(report.deleted.logs, entry),
    );
    await deleteAll(
      [...staleLeases, ...staleSweeps],
      (entry, current) => (entry.key.startsWith(LEASES_PREFIX) ? current.liveLeaseKeys.has(entry.key) : false),
      (entry) => (entry.key.startsWith(LEASES_PREFIX) ? (report.deleted.leases += 1) : (report.deleted.sweepMarks += 1)),
    );
  } catch (err) {
    if (!(err instanceof StopSweep)) throw err;
    report.stopped = `${err.message}; run cachectl gc again to finish`;
  } finally {
    await backend.delete([sweepKey]).catch(() => undefined);
  }
  // What is gone needs no mark (the next run would drop them anyway; an emptied cache keeps none).
  for (const key of deletedKeys) marks.delete(key);
  await writeMarks(backend, marks, true);
  return finish(report, startedAt, now);
}

async function writeMarks(backend: CacheBackend, marks: Map<string, number>, existed: boolean): Promise<void> {
  if (marks.size > 0) await backend.put(MARKS_KEY, Buffer.from(renderMarks(marks)), 'text/plain; charset=utf-8');
  else if (existed) await backend.delete([MARKS_KEY]);
}

class StopSweep extends Error {}
class DeleteTimeout extends Error {}

interface Protection {
  pinned: Set<string>;
  leased: Set<string>;
  /** NAR hashes named by live leases: NARs whose narinfo may not be written yet */
  narHashes: Set<string>;
  liveLeaseKeys: Set<string>;
  /** performance.now() when the listing of the leases began: the window of a delete counts from here */
  leasesListedAt: number;
  staleLeases: ObjectEntry[];
  /** live leases that are not cachectl's: nothing may be deleted while one is there */
  unreadableLeases: string[];
  problems: string[];
  reachable: Set<string>;
}

/** Reads the pins and the live leases; GETs only the objects whose ETag changed since its last read. */
class RootReader {
  private readonly texts = new Map<string, { etag: string; text: string | undefined }>();

  constructor(private readonly backend: CacheBackend) {}

  async read(now: number): Promise<Omit<Protection, 'reachable'>> {
    // Pins first: only the leases have to be fresh when a delete goes out (pin waits out a sweep by itself).
    const pinList = await listAll(this.backend, PINS_PREFIX);
    const pinTexts = await mapLimit(pinList, 16, (entry) => this.text(entry));
    const leasesListedAt = performance.now();
    const leaseList = await listAll(this.backend, LEASES_PREFIX);
    const roots: Omit<Protection, 'reachable'> = {
      pinned: new Set(),
      leased: new Set(),
      narHashes: new Set(),
      liveLeaseKeys: new Set(),
      leasesListedAt,
      staleLeases: leaseList.filter((entry) => !leaseIsLive(entry, now)),
      unreadableLeases: [],
      problems: [],
    };
    const live = leaseList.filter((entry) => leaseIsLive(entry, now));
    const leaseTexts = await mapLimit(live, 16, (entry) => this.text(entry));
    pinList.forEach((entry, i) => {
      const text = pinTexts[i];
      if (text === undefined) return; // unpinned meanwhile
      const pin = parsePin(text, entry.key);
      roots.problems.push(...pin.problems);
      for (const hashPart of pin.hashParts) roots.pinned.add(hashPart);
    });
    live.forEach((entry, i) => {
      const text = leaseTexts[i];
      if (text === undefined) return; // its writer is done with it
      roots.liveLeaseKeys.add(entry.key);
      const lease = parseLease(text);
      if (lease === undefined) {
        roots.unreadableLeases.push(entry.key);
        roots.problems.push(`${entry.key} is not a cachectl lease; nothing is deleted while it is live`);
        return;
      }
      for (const path of lease.paths) if (baseNameProblem(path) === undefined) roots.leased.add(path.slice(0, 32));
      for (const narHash of lease.narHashes) roots.narHashes.add(narHash);
    });
    return roots;
  }

  private async text(entry: ObjectEntry): Promise<string | undefined> {
    const cached = this.texts.get(entry.key);
    if (cached?.etag === entry.etag) return cached.text;
    const text = (await this.backend.get(entry.key))?.toString('utf8');
    this.texts.set(entry.key, { etag: entry.etag, text });
    return text;
  }
}

/** Adds to `reached` every narinfo `roots` reach through References (roots without a narinfo included). */
function extendClosure(reached: Set<string>, roots: Iterable<string>, metas: Map<string, NarInfoMeta>): void {
  const todo = [...roots].filter((hashPart) => !reached.has(hashPart));
  for (let hashPart = todo.pop(); hashPart !== undefined; hashPart = todo.pop()) {
    if (reached.has(hashPart)) continue;
    reached.add(hashPart);
    for (const ref of metas.get(hashPart)?.references ?? []) if (!reached.has(ref)) todo.push(ref);
  }
}

/**
 * Layers of `narinfos` such that nothing in a layer is referred to by a later one: deleting them in order,
 * no narinfo left in the cache ever refers to a deleted one.
 */
function referrersFirst(narinfos: readonly ObjectEntry[], metas: Map<string, NarInfoMeta>): ObjectEntry[][] {
  const byHash = new Map(narinfos.map((entry) => [narInfoHashPart(entry.key) as string, entry]));
  const referrers = new Map<string, number>();
  for (const hashPart of byHash.keys()) {
    for (const ref of metas.get(hashPart)?.references ?? []) if (byHash.has(ref)) referrers.set(ref, (referrers.get(ref) ?? 0) + 1);
  }
  const layers: ObjectEntry[][] = [];
  let layer = [...byHash.keys()].filter((hashPart) => (referrers.get(hashPart) ?? 0) === 0);
  const placed = new Set<string>();
  while (layer.length > 0) {
    layers.push(layer.map((hashPart) => byHash.get(hashPart) as ObjectEntry));
    const next: string[] = [];
    for (const hashPart of layer) {
      placed.add(hashPart);
      for (const ref of metas.get(hashPart)?.references ?? []) {
        if (!byHash.has(ref)) continue;
        const left = (referrers.get(ref) ?? 0) - 1;
        referrers.set(ref, left);
        if (left === 0) next.push(ref);
      }
    }
    layer = next;
  }
  // A reference cycle cannot come from Nix; if a bucket has one anyway, its members go last, together.
  const rest = [...byHash].filter(([hashPart]) => !placed.has(hashPart)).map(([, entry]) => entry);
  if (rest.length > 0) layers.push(rest);
  return layers;
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
  options.metaCache?.update(read, [...cached.keys()].filter((key) => !listed.has(key)));
  return metas;
}

/** What the GC needs from a narinfo's text; for a malformed one, what it seems to refer to. */
export function narInfoMeta(text: string, key: string, hashPart: string): NarInfoMeta {
  const hashParts = (baseNames: string[]) => baseNames.filter((ref) => baseNameProblem(ref) === undefined && ref.slice(0, 32) !== hashPart).map((ref) => ref.slice(0, 32));
  try {
    const info = parseNarInfo(text, key);
    if (!info.storePath.includes(`/${hashPart}-`)) throw new CachectlError('NARINFO_INVALID', `narinfo ${key} is for ${info.storePath}`);
    return { references: hashParts(info.references), url: info.url, ...(info.deriver === undefined ? {} : { deriver: info.deriver }) };
  } catch (err) {
    const url = /^URL: (.*)$/m.exec(text)?.[1];
    const references = /^References: (.*)$/m.exec(text)?.[1]?.split(' ') ?? [];
    return { references: hashParts(references), ...(url !== undefined && isNarKey(url) ? { url } : {}), problem: errorText(err) };
  }
}

/** `nar/<hash>.nar.zst` → `<hash>`. */
function narHashOfKey(key: string): string {
  return key.slice(NAR_PREFIX.length).split('.')[0] as string;
}

/** Marks: one line per object, `<first marked, ms since the epoch> <key>`. */
function parseMarks(text: string): Map<string, number> {
  const marks = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\d+) (\S+)$/.exec(line);
    if (match !== null) marks.set(match[2] as string, Number(match[1]));
  }
  return marks;
}

function renderMarks(marks: Map<string, number>): string {
  return [...marks].map(([key, at]) => `${at} ${key}\n`).join('');
}

async function listAll(backend: CacheBackend, prefix: string): Promise<ObjectEntry[]> {
  const entries: ObjectEntry[] = [];
  for await (const page of backend.list(prefix)) entries.push(...page);
  return entries;
}

function tally(): Tally {
  return { count: 0, bytes: 0 };
}

function add(into: Tally, entry: ObjectEntry): void {
  into.count += 1;
  into.bytes += entry.sizeBytes;
}

function finish(report: GcReport, startedAt: number, now: () => number): GcReport {
  report.seconds = (now() - startedAt) / 1000;
  if (report.foreign.length > FOREIGN_SHOWN) report.foreign = [...report.foreign.slice(0, FOREIGN_SHOWN), `… and ${report.foreign.length - FOREIGN_SHOWN} more`];
  return report;
}
