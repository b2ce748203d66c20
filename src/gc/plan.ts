/**
 * The GC's decisions, without I/O (DESIGN.md section 5): from the inventory of the bucket (its listing and parsed
 * narinfos), the roots and the marks of earlier runs, what is reachable, what is marked, what may go and in what
 * order. gc.ts reads the bucket and carries the plan out; sweep.ts deletes.
 */
import { CachectlError, errorText } from '../core/errors.js';
import { parseNarInfo } from '../core/narinfo.js';
import { baseNameProblem, hashPartOf } from '../core/store-path.js';
import { isNarKey, NAR_PREFIX } from '../cache/layout.js';
import { byKind, KINDS, PathSet, type ByKind, type Inventory } from './inventory.js';
import type { NarInfoMeta } from './meta-cache.js';

export { byKind, KINDS, type ByKind, type Kind } from './inventory.js';

export interface Tally {
  count: number;
  bytes: number;
}

export function tally(): Tally {
  return { count: 0, bytes: 0 };
}

export function addTo(into: Tally, sizeBytes: number): void {
  into.count += 1;
  into.bytes += sizeBytes;
}

/** What the GC needs from a narinfo's text; for a malformed one, what it seems to refer to. */
export function narInfoMeta(text: string, key: string, hashPart: string): NarInfoMeta {
  const otherHashParts = (baseNames: string[]) => baseNames.map(hashPartOf).filter((ref) => ref !== hashPart);
  try {
    const info = parseNarInfo(text, key);
    if (!info.storePath.includes(`/${hashPart}-`))
      throw new CachectlError('NARINFO_INVALID', `narinfo ${key} is for ${info.storePath}`);
    return {
      references: otherHashParts(info.references), // the parser checked them
      url: info.url,
      ...(info.deriver === undefined ? {} : { deriver: info.deriver }),
    };
  } catch (err) {
    const url = /^URL: (.*)$/m.exec(text)?.[1];
    const references = /^References: (.*)$/m.exec(text)?.[1]?.split(' ') ?? [];
    return {
      references: otherHashParts(references.filter((ref) => baseNameProblem(ref) === undefined)),
      ...(url !== undefined && isNarKey(url) ? { url } : {}),
      problem: errorText(err),
    };
  }
}

/** Narinfos whose references are not all in the cache. */
export function countBroken(inventory: Inventory): number {
  let broken = 0;
  for (let id = 0; id < inventory.narinfos.length; id += 1) {
    if (inventory.someReference(id, (ref) => !inventory.hasNarInfo(ref))) broken += 1;
  }
  return broken;
}

/**
 * The roots that do not change while a run lasts: narinfos newer than --older-than (recent); narinfos younger
 * than the grace, which are not marked, so neither may what they refer to be (young); malformed ones, kept with
 * what they seem to refer to.
 */
export function fixedRoots(
  inventory: Inventory,
  times: { olderThan: number; graceStart: number },
): { ids: number[]; recent: number; young: number } {
  const roots = { ids: [] as number[], recent: 0, young: 0 };
  const { modified } = inventory.narinfos;
  for (let id = 0; id < inventory.narinfos.length; id += 1) {
    if (!inventory.hasNarInfo(id)) continue;
    const at = modified.at(id);
    if (at >= times.olderThan) roots.recent += 1;
    else if (at > times.graceStart) roots.young += 1;
    else if (!inventory.problems.has(id)) continue;
    roots.ids.push(id);
  }
  return roots;
}

/** Adds to `reached` every path `roots` reach through References (roots without a narinfo included). */
export function extendClosure(reached: PathSet, roots: Iterable<number>, inventory: Inventory): void {
  const todo = [...roots].filter((id) => !reached.has(id));
  const visit = (ref: number) => {
    if (!reached.has(ref)) todo.push(ref);
  };
  for (let id = todo.pop(); id !== undefined; id = todo.pop()) {
    if (reached.has(id)) continue;
    reached.add(id);
    inventory.forEachReference(id, visit);
  }
}

/** When each object was first marked, by kind and index; 0 for one not marked. */
export type Marks = ByKind<Float64Array>;

export function noMarks(inventory: Inventory): Marks {
  return byKind((kind) => new Float64Array(inventory.tables[kind].length));
}

export interface MarkInput {
  inventory: Inventory;
  /** paths the roots reach */
  reachable: PathSet;
  /** NAR hashes named by live leases: NARs whose narinfo may not be written yet */
  leasedNarHashes: ReadonlySet<string>;
  /** from earlier runs */
  previousMarks: Marks;
  startedAt: number;
  /** objects modified after this are too young to mark */
  graceStart: number;
}

export interface MarkPlan {
  /** the marks to keep in the bucket: every unreachable object old enough, with when it was first marked */
  marks: Marks;
  /** indexes of what was marked for the whole grace: deleted by this run, unless protected again at the last check */
  deletable: ByKind<number[]>;
  /** marked, waiting out the grace */
  waiting: ByKind<Tally>;
  /** unreachable but younger than the grace: not marked yet */
  young: Tally;
}

/** Marks what the roots do not reach and is old enough, and picks what has been marked long enough to go. */
export function planMarks(input: MarkInput): MarkPlan {
  const { inventory, reachable } = input;
  const { tables } = inventory;
  const liveNars = new Uint8Array(tables.nars.length);
  const liveLogs = new Uint8Array(tables.logs.length);
  for (let id = 0; id < inventory.narinfos.length; id += 1) {
    if (!reachable.has(id)) continue;
    const nar = inventory.narOfNarInfo(id);
    if (nar >= 0) liveNars[nar] = 1;
    const log = inventory.logOfNarInfo(id);
    if (log >= 0) liveLogs[log] = 1;
  }
  // A content-addressed output's log is also under the derivation it was resolved from, which its build trace names.
  forEachRealisationLog(inventory, (output, log) => {
    if (reachable.has(output)) liveLogs[log] = 1;
  });
  const unreachable: ByKind<(index: number) => boolean> = {
    narinfos: (id) => inventory.hasNarInfo(id) && !reachable.has(id),
    nars: (i) => liveNars[i] === 0 && !input.leasedNarHashes.has(narHashOfKey(tables.nars.key(i))),
    logs: (i) => liveLogs[i] === 0,
    listings: (i) => !reachable.has(inventory.listingPaths[i] as number),
    realisations: (i) => {
      const output = inventory.realisationPaths[i] as number;
      return output >= 0 && !reachable.has(output);
    },
  };
  const plan: MarkPlan = {
    marks: noMarks(inventory),
    deletable: byKind(() => []),
    waiting: byKind(tally),
    young: tally(),
  };
  for (const kind of KINDS) {
    const table = tables[kind];
    for (let i = 0; i < table.length; i += 1) {
      if (!unreachable[kind](i)) continue;
      const size = table.sizes.at(i);
      if (table.modified.at(i) > input.graceStart) {
        addTo(plan.young, size);
        continue;
      }
      const markedAt = input.previousMarks[kind][i] || input.startedAt;
      plan.marks[kind][i] = markedAt;
      if (markedAt <= input.graceStart) plan.deletable[kind].push(i);
      else addTo(plan.waiting[kind], size);
    }
  }
  return plan;
}

/**
 * Layers of the narinfos `ids` such that nothing in a layer is referred to by a later one: deleting them in
 * order, no narinfo left in the cache ever refers to a deleted one.
 */
export function referrersFirst(ids: readonly number[], inventory: Inventory): number[][] {
  const inSet = new PathSet();
  for (const id of ids) inSet.add(id);
  const referrers = new Int32Array(inventory.pathCount);
  for (const id of ids) {
    inventory.forEachReference(id, (ref) => {
      if (inSet.has(ref)) referrers[ref] = (referrers[ref] ?? 0) + 1;
    });
  }
  const layers: number[][] = [];
  const placed = new PathSet();
  let layer = ids.filter((id) => referrers[id] === 0);
  while (layer.length > 0) {
    layers.push(layer);
    const next: number[] = [];
    for (const id of layer) {
      placed.add(id);
      inventory.forEachReference(id, (ref) => {
        if (!inSet.has(ref)) return;
        const left = (referrers[ref] ?? 0) - 1;
        referrers[ref] = left;
        if (left === 0) next.push(ref);
      });
    }
    layer = next;
  }
  // A reference cycle cannot come from Nix; if a bucket has one anyway, its members go last, together.
  const rest = ids.filter((id) => !placed.has(id));
  if (rest.length > 0) layers.push(rest);
  return layers;
}

/** What the narinfos left after the narinfo deletes still need: their NARs, logs and listings. */
export function stillNeeded(
  inventory: Inventory,
  deletedNarInfos: PathSet,
): { nars: Uint8Array; logs: Uint8Array; narInfos: PathSet } {
  const needed = {
    nars: new Uint8Array(inventory.tables.nars.length),
    logs: new Uint8Array(inventory.tables.logs.length),
    narInfos: new PathSet(),
  };
  for (let id = 0; id < inventory.narinfos.length; id += 1) {
    if (!inventory.hasNarInfo(id) || deletedNarInfos.has(id)) continue;
    needed.narInfos.add(id);
    const nar = inventory.narOfNarInfo(id);
    if (nar >= 0) needed.nars[nar] = 1;
    const log = inventory.logOfNarInfo(id);
    if (log >= 0) needed.logs[log] = 1;
  }
  forEachRealisationLog(inventory, (output, log) => {
    if (needed.narInfos.has(output)) needed.logs[log] = 1;
  });
  return needed;
}

/** Calls `visit` with the output's path id and the log's index of each build trace whose derivation has a log. */
function forEachRealisationLog(inventory: Inventory, visit: (output: number, log: number) => void): void {
  const { realisationLogs, realisationPaths } = inventory;
  for (let i = 0; i < realisationLogs.length; i += 1) {
    const log = realisationLogs[i] as number;
    const output = realisationPaths[i] as number;
    if (log >= 0 && output >= 0) visit(output, log);
  }
}

/** `nar/<hash>.nar.zst` → `<hash>`. */
export function narHashOfKey(key: string): string {
  return key.slice(NAR_PREFIX.length).split('.')[0] ?? '';
}

/**
 * Marks: one line per object, `<first marked, ms since the epoch> <key>`. Marks of objects no longer listed
 * are dropped. Read line by line: at a million marks the text is a hundred MB.
 */
export function parseMarks(text: Buffer, inventory: Inventory): Marks {
  const marks = noMarks(inventory);
  for (let start = 0; start < text.length;) {
    let end = text.indexOf(10, start);
    if (end < 0) end = text.length;
    const match = /^(\d+) (\S+)$/.exec(text.toString('utf8', start, end));
    start = end + 1;
    if (match?.[2] === undefined) continue;
    const found = inventory.find(match[2]);
    if (found !== undefined) marks[found.kind][found.index] = Number(match[1]);
  }
  return marks;
}

/** Counts the marks. */
export function countMarks(marks: Marks): number {
  let count = 0;
  for (const kind of KINDS) for (const at of marks[kind]) if (at > 0) count += 1;
  return count;
}

/** The marks as text, in chunks of a few thousand lines. */
export function* renderMarks(marks: Marks, inventory: Inventory): Generator<Buffer> {
  let lines: string[] = [];
  for (const kind of KINDS) {
    const table = inventory.tables[kind];
    const atOf = marks[kind];
    for (let i = 0; i < atOf.length; i += 1) {
      const at = atOf[i] as number;
      if (at > 0) lines.push(`${at} ${table.key(i)}\n`);
      if (lines.length >= 4096) {
        yield Buffer.from(lines.join(''));
        lines = [];
      }
    }
  }
  if (lines.length > 0) yield Buffer.from(lines.join(''));
}
