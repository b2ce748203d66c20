/**
 * The GC's decisions, without I/O (DESIGN.md section 5): from a listing of the bucket, the parsed narinfos, the
 * roots and the marks of earlier runs, what is reachable, what is marked, what may go and in what order. gc.ts
 * reads the bucket and carries the plan out; sweep.ts deletes.
 */
import { CachectlError, errorText } from '../core/errors.js';
import { parseNarInfo } from '../core/narinfo.js';
import { baseNameProblem } from '../core/store-path.js';
import type { ObjectEntry } from '../cache/backend.js';
import {
  CACHE_INFO_KEY,
  isLogKey,
  isNarKey,
  isRealisationKey,
  listingHashPart,
  LOG_PREFIX,
  NAR_PREFIX,
  narInfoHashPart,
} from '../cache/layout.js';
import type { NarInfoMeta } from './meta-cache.js';

export interface Tally {
  count: number;
  bytes: number;
}

export function tally(): Tally {
  return { count: 0, bytes: 0 };
}

export function addTo(into: Tally, entry: ObjectEntry): void {
  into.count += 1;
  into.bytes += entry.sizeBytes;
}

/** The kinds of object the GC collects. */
export type Kind = 'narinfos' | 'nars' | 'logs' | 'listings' | 'realisations';
export const KINDS: readonly Kind[] = ['narinfos', 'nars', 'logs', 'listings', 'realisations'];
export type ByKind<T> = Record<Kind, T>;

/** A value for each kind, each made anew. */
export function byKind<T>(make: () => T): ByKind<T> {
  return { narinfos: make(), nars: make(), logs: make(), listings: make(), realisations: make() };
}

/** The bucket's objects by kind; keys outside the layout are foreign and never touched. */
export interface Listing {
  /** by hash part */
  narinfos: Map<string, ObjectEntry>;
  nars: ObjectEntry[];
  logs: ObjectEntry[];
  /** NAR listings, `<hash>.ls` */
  listings: ObjectEntry[];
  /** `realisations/<id>.doi` */
  realisations: ObjectEntry[];
  foreign: string[];
}

/** Sorts the listings of the top level, `nar/`, `log/` and `realisations/` into the layout's kinds. */
export function sortListing(
  top: readonly ObjectEntry[],
  narList: readonly ObjectEntry[],
  logList: readonly ObjectEntry[],
  realisationList: readonly ObjectEntry[] = [],
): Listing {
  const listing: Listing = { narinfos: new Map(), nars: [], logs: [], listings: [], realisations: [], foreign: [] };
  for (const entry of top) {
    const hashPart = narInfoHashPart(entry.key);
    if (hashPart !== undefined) listing.narinfos.set(hashPart, entry);
    else if (listingHashPart(entry.key) !== undefined) listing.listings.push(entry);
    else if (entry.key !== CACHE_INFO_KEY) listing.foreign.push(entry.key);
  }
  for (const entry of narList) {
    if (isNarKey(entry.key)) listing.nars.push(entry);
    else listing.foreign.push(entry.key);
  }
  for (const entry of logList) {
    if (isLogKey(entry.key)) listing.logs.push(entry);
    else listing.foreign.push(entry.key);
  }
  for (const entry of realisationList) {
    if (isRealisationKey(entry.key)) listing.realisations.push(entry);
    else listing.foreign.push(entry.key);
  }
  return listing;
}

/** What the GC needs from a narinfo's text; for a malformed one, what it seems to refer to. */
export function narInfoMeta(text: string, key: string, hashPart: string): NarInfoMeta {
  const hashParts = (baseNames: string[]) =>
    baseNames
      .filter((ref) => baseNameProblem(ref) === undefined && ref.slice(0, 32) !== hashPart)
      .map((ref) => ref.slice(0, 32));
  try {
    const info = parseNarInfo(text, key);
    if (!info.storePath.includes(`/${hashPart}-`))
      throw new CachectlError('NARINFO_INVALID', `narinfo ${key} is for ${info.storePath}`);
    return {
      references: hashParts(info.references),
      url: info.url,
      ...(info.deriver === undefined ? {} : { deriver: info.deriver }),
    };
  } catch (err) {
    const url = /^URL: (.*)$/m.exec(text)?.[1];
    const references = /^References: (.*)$/m.exec(text)?.[1]?.split(' ') ?? [];
    return {
      references: hashParts(references),
      ...(url !== undefined && isNarKey(url) ? { url } : {}),
      problem: errorText(err),
    };
  }
}

/** Narinfos whose references are not all in the cache. */
export function countBroken(metas: ReadonlyMap<string, NarInfoMeta>): number {
  let broken = 0;
  for (const meta of metas.values()) if (meta.references.some((ref) => !metas.has(ref))) broken += 1;
  return broken;
}

/**
 * The roots that do not change while a run lasts: narinfos newer than --older-than (recent); narinfos younger
 * than the grace, which are not marked, so neither may what they refer to be (young); malformed ones, kept with
 * what they seem to refer to.
 */
export function fixedRoots(
  narinfos: ReadonlyMap<string, ObjectEntry>,
  metas: ReadonlyMap<string, NarInfoMeta>,
  times: { olderThan: number; graceStart: number },
): { hashParts: string[]; recent: number; young: number } {
  const roots = { hashParts: [] as string[], recent: 0, young: 0 };
  for (const [hashPart, entry] of narinfos) {
    const modified = entry.lastModified.getTime();
    if (modified >= times.olderThan) roots.recent += 1;
    else if (modified > times.graceStart) roots.young += 1;
    else if (metas.get(hashPart)?.problem === undefined) continue;
    roots.hashParts.push(hashPart);
  }
  return roots;
}

/** Adds to `reached` every narinfo `roots` reach through References (roots without a narinfo included). */
export function extendClosure(
  reached: Set<string>,
  roots: Iterable<string>,
  metas: ReadonlyMap<string, NarInfoMeta>,
): void {
  const todo = [...roots].filter((hashPart) => !reached.has(hashPart));
  for (let hashPart = todo.pop(); hashPart !== undefined; hashPart = todo.pop()) {
    if (reached.has(hashPart)) continue;
    reached.add(hashPart);
    for (const ref of metas.get(hashPart)?.references ?? []) if (!reached.has(ref)) todo.push(ref);
  }
}

export interface MarkInput {
  listing: Listing;
  metas: ReadonlyMap<string, NarInfoMeta>;
  /** narinfos the roots reach */
  reachable: ReadonlySet<string>;
  /** NAR hashes named by live leases: NARs whose narinfo may not be written yet */
  leasedNarHashes: ReadonlySet<string>;
  /** the hash part of each realisation's output, by key; a realisation that did not parse is absent, and kept */
  realisationOutputs: ReadonlyMap<string, string>;
  /** when each key was first marked, from earlier runs */
  previousMarks: ReadonlyMap<string, number>;
  startedAt: number;
  /** objects modified after this are too young to mark */
  graceStart: number;
}

export interface MarkPlan {
  /** the marks to keep in the bucket: every unreachable object old enough, with when it was first marked */
  marks: Map<string, number>;
  /** marked for the whole grace: deleted by this run, unless protected again at the last check */
  deletable: ByKind<ObjectEntry[]>;
  /** marked, waiting out the grace */
  waiting: ByKind<Tally>;
  /** unreachable but younger than the grace: not marked yet */
  young: Tally;
}

/** Marks what the roots do not reach and is old enough, and picks what has been marked long enough to go. */
export function planMarks(input: MarkInput): MarkPlan {
  const { listing, metas, reachable } = input;
  const liveNarKeys = new Set([...reachable].flatMap((hashPart) => metas.get(hashPart)?.url ?? []));
  const liveDerivers = new Set([...reachable].flatMap((hashPart) => metas.get(hashPart)?.deriver ?? []));
  const unreachable: ByKind<ObjectEntry[]> = {
    narinfos: [...listing.narinfos].filter(([hashPart]) => !reachable.has(hashPart)).map(([, entry]) => entry),
    nars: listing.nars.filter(
      (entry) => !liveNarKeys.has(entry.key) && !input.leasedNarHashes.has(narHashOfKey(entry.key)),
    ),
    logs: listing.logs.filter((entry) => !liveDerivers.has(derivationOfLogKey(entry.key))),
    listings: listing.listings.filter((entry) => !reachable.has(listingHashPart(entry.key) ?? '')),
    realisations: listing.realisations.filter((entry) => {
      const output = input.realisationOutputs.get(entry.key);
      return output !== undefined && !reachable.has(output);
    }),
  };
  const plan: MarkPlan = {
    marks: new Map(),
    deletable: byKind(() => []),
    waiting: byKind(tally),
    young: tally(),
  };
  for (const kind of KINDS) {
    for (const entry of unreachable[kind]) {
      if (entry.lastModified.getTime() > input.graceStart) {
        addTo(plan.young, entry);
        continue;
      }
      const markedAt = input.previousMarks.get(entry.key) ?? input.startedAt;
      plan.marks.set(entry.key, markedAt);
      if (markedAt <= input.graceStart) plan.deletable[kind].push(entry);
      else addTo(plan.waiting[kind], entry);
    }
  }
  return plan;
}

/**
 * Layers of `narinfos` such that nothing in a layer is referred to by a later one: deleting them in order,
 * no narinfo left in the cache ever refers to a deleted one.
 */
export function referrersFirst(
  narinfos: readonly ObjectEntry[],
  metas: ReadonlyMap<string, NarInfoMeta>,
): ObjectEntry[][] {
  const byHash = new Map(
    narinfos.flatMap((entry) => {
      const hashPart = narInfoHashPart(entry.key);
      return hashPart === undefined ? [] : [[hashPart, entry] as const];
    }),
  );
  const referrers = new Map<string, number>();
  for (const hashPart of byHash.keys()) {
    for (const ref of metas.get(hashPart)?.references ?? [])
      if (byHash.has(ref)) referrers.set(ref, (referrers.get(ref) ?? 0) + 1);
  }
  const layers: ObjectEntry[][] = [];
  let layer = [...byHash.keys()].filter((hashPart) => (referrers.get(hashPart) ?? 0) === 0);
  const placed = new Set<string>();
  while (layer.length > 0) {
    layers.push(layer.flatMap((hashPart) => byHash.get(hashPart) ?? []));
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

/** What the narinfos left after the narinfo deletes still need: their NARs, listings and derivers' logs. */
export function stillNeeded(
  metas: ReadonlyMap<string, NarInfoMeta>,
  deletedNarInfos: ReadonlySet<string>,
): { narKeys: Set<string>; derivers: Set<string>; narInfos: Set<string> } {
  const remaining = [...metas].filter(([hashPart]) => !deletedNarInfos.has(hashPart));
  return {
    narKeys: new Set(remaining.flatMap(([, meta]) => meta.url ?? [])),
    derivers: new Set(remaining.flatMap(([, meta]) => meta.deriver ?? [])),
    narInfos: new Set(remaining.map(([hashPart]) => hashPart)),
  };
}

/** `nar/<hash>.nar.zst` → `<hash>`. */
export function narHashOfKey(key: string): string {
  return key.slice(NAR_PREFIX.length).split('.')[0] ?? '';
}

/** `log/<drv base name>` → the derivation's base name. */
export function derivationOfLogKey(key: string): string {
  return key.slice(LOG_PREFIX.length);
}

/** Marks: one line per object, `<first marked, ms since the epoch> <key>`. */
export function parseMarks(text: string): Map<string, number> {
  const marks = new Map<string, number>();
  for (const line of text.split('\n')) {
    const match = /^(\d+) (\S+)$/.exec(line);
    if (match?.[2] !== undefined) marks.set(match[2], Number(match[1]));
  }
  return marks;
}

export function renderMarks(marks: ReadonlyMap<string, number>): string {
  return [...marks].map(([key, at]) => `${at} ${key}\n`).join('');
}
