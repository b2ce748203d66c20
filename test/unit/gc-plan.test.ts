import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ObjectEntry } from '../../src/cache/backend.js';
import { Column, PackedStrings } from '../../src/gc/columns.js';
import { Inventory, PathSet, type ObjectTable } from '../../src/gc/inventory.js';
import type { NarInfoMeta } from '../../src/gc/meta-cache.js';
import {
  countBroken,
  extendClosure,
  fixedRoots,
  KINDS,
  narInfoMeta,
  noMarks,
  parseMarks,
  planMarks,
  referrersFirst,
  renderMarks,
  stillNeeded,
  type ByKind,
} from '../../src/gc/plan.js';

// The GC's decisions on small buckets, no server: each path is a letter, its hash part 32 copies of it.
const HOUR = 3600_000;
const NOW = 1_000 * HOUR;
const GRACE = 6 * HOUR;
const OLDER_THAN = 720 * HOUR;

const hashOf = (name: string) => name.repeat(32);
const drv = (name: string) => `${'x'.repeat(32)}-${name}.drv`;

interface PathSpec {
  /** hours since it was written */
  age: number;
  refs?: string[];
  /** its NAR's and log's ages, when they differ */
  narAge?: number;
  deriver?: string;
  broken?: boolean;
}

function entry(key: string, ageHours: number): ObjectEntry {
  return { key, sizeBytes: 100, lastModified: new Date(NOW - ageHours * HOUR), etag: key };
}

/** The realisation of the output named `name` (its drv hash made of the name too). */
function realisationKeyOf(name: string): string {
  return `realisations/sha256:${name.charCodeAt(0).toString(16).repeat(32)}!out.doi`;
}

function narKey(name: string): string {
  return `nar/${name.repeat(52)}.nar.zst`;
}

/** An inventory of the listed keys by prefix, with the narinfos read as `metas` says. */
function inventoryOf(listed: Record<string, ObjectEntry[]>, metas: ReadonlyMap<string, NarInfoMeta>): Inventory {
  const inventory = new Inventory();
  for (const [prefix, entries] of Object.entries(listed)) inventory.addListed(prefix, entries);
  inventory.completeListing();
  for (const [hashPart, meta] of metas) {
    const id = inventory.knownPathId(hashPart);
    if (id !== undefined && id < inventory.narinfos.length) inventory.setMeta(id, meta);
  }
  return inventory;
}

/** A bucket of narinfos, their NARs, logs, listings and realisations (by path name), as the GC lists and reads it. */
function bucket(
  paths: Record<string, PathSpec>,
  extra: {
    logs?: Record<string, number>;
    listings?: Record<string, number>;
    realisations?: Record<string, number>;
    foreign?: string[];
  } = {},
) {
  const top: ObjectEntry[] = [entry('nix-cache-info', 2000)];
  for (const [name, age] of Object.entries(extra.listings ?? {})) top.push(entry(`${hashOf(name)}.ls`, age));
  const nars: ObjectEntry[] = [];
  const logs: ObjectEntry[] = Object.entries(extra.logs ?? {}).map(([drv, age]) => entry(`log/${drv}`, age));
  const realisations = Object.entries(extra.realisations ?? {}).map(([name, age]) =>
    entry(realisationKeyOf(name), age),
  );
  const metas = new Map<string, NarInfoMeta>();
  for (const [name, spec] of Object.entries(paths)) {
    top.push(entry(`${hashOf(name)}.narinfo`, spec.age));
    nars.push(entry(narKey(name), spec.narAge ?? spec.age));
    metas.set(hashOf(name), {
      references: (spec.refs ?? []).map(hashOf),
      url: narKey(name),
      ...(spec.deriver === undefined ? {} : { deriver: spec.deriver }),
      ...(spec.broken === true ? { problem: 'malformed' } : {}),
    });
  }
  for (const key of extra.foreign ?? []) top.push(entry(key, 1));
  return inventoryOf({ '': top, 'nar/': nars, 'log/': logs, 'realisations/': realisations }, metas);
}

const keysOf = (table: ObjectTable) => Array.from({ length: table.length }, (_, i) => table.key(i));

/** The names of the paths in `set`. */
const namesIn = (inventory: Inventory, set: PathSet) =>
  Array.from({ length: inventory.pathCount }, (_, id) => id)
    .filter((id) => set.has(id))
    .map((id) => inventory.hashPart(id)[0])
    .sort()
    .join('');
const keyNames = (entries: readonly { key: string }[]) =>
  entries
    .map((e) => (e.key.startsWith('log/') ? e.key : e.key.startsWith('nar/') ? `nar:${e.key[4]}` : (e.key[0] ?? '')))
    .sort()
    .join(' ');

/** Marks and picks for a bucket, given the changing roots and earlier marks; by key, for the assertions. */
function plan(
  paths: Record<string, PathSpec>,
  options: {
    pinned?: string[];
    leased?: string[];
    leasedNars?: string[];
    marked?: Record<string, number>;
    logs?: Record<string, number>;
    listings?: Record<string, number>;
    /** a realisation of each named output, with its age; `broken` ones do not parse */
    realisations?: Record<string, number>;
    broken?: string[];
  } = {},
) {
  const inventory = bucket(paths, {
    logs: options.logs ?? {},
    listings: options.listings ?? {},
    realisations: options.realisations ?? {},
  });
  Object.keys(options.realisations ?? {}).forEach((name, i) => {
    if (!(options.broken ?? []).includes(name)) inventory.realisationPaths[i] = inventory.pathId(hashOf(name));
  });
  const graceStart = NOW - GRACE;
  const fixed = fixedRoots(inventory, { olderThan: NOW - OLDER_THAN, graceStart });
  const reachable = new PathSet();
  const changing = [...(options.pinned ?? []), ...(options.leased ?? [])].map((name) => inventory.pathId(hashOf(name)));
  extendClosure(reachable, [...fixed.ids, ...changing], inventory);
  const previousMarks = noMarks(inventory);
  for (const [key, hoursAgo] of Object.entries(options.marked ?? {})) {
    const found = inventory.find(key);
    if (found !== undefined) previousMarks[found.kind][found.index] = NOW - hoursAgo * HOUR;
  }
  const leasedNarHashes = new Set((options.leasedNars ?? []).map((name) => name.repeat(52)));
  const result = planMarks({ inventory, reachable, leasedNarHashes, previousMarks, startedAt: NOW, graceStart });
  const marks = new Map<string, number>();
  const deletable = {} as ByKind<{ key: string }[]>;
  for (const kind of KINDS) {
    const table = inventory.tables[kind];
    result.marks[kind].forEach((at, i) => {
      if (at > 0) marks.set(table.key(i), at);
    });
    deletable[kind] = result.deletable[kind].map((i) => ({ key: table.key(i) }));
  }
  return { fixed, reachable: namesIn(inventory, reachable), ...result, marks, deletable };
}

describe('GC plan', () => {
  describe('roots and reachability', () => {
    const cases: {
      name: string;
      paths: Record<string, PathSpec>;
      pinned?: string[];
      leased?: string[];
      reachable: string;
    }[] = [
      { name: 'nothing is recent: nothing is reachable', paths: { a: { age: 800 }, b: { age: 800 } }, reachable: '' },
      {
        name: 'a recent narinfo keeps its closure',
        paths: { a: { age: 1, refs: ['b'] }, b: { age: 800, refs: ['c'] }, c: { age: 800 }, d: { age: 800 } },
        reachable: 'abc',
      },
      {
        name: 'a recent narinfo keeps an old reference',
        paths: { a: { age: 721 }, b: { age: 3, refs: ['a'] } },
        reachable: 'ab',
      },
      {
        name: 'a pin keeps its closure, whatever its age',
        paths: { a: { age: 900, refs: ['b'] }, b: { age: 900 }, c: { age: 900 } },
        pinned: ['a'],
        reachable: 'ab',
      },
      {
        name: 'a lease keeps its closure',
        paths: { a: { age: 900, refs: ['b'] }, b: { age: 900 } },
        leased: ['b'],
        reachable: 'b',
      },
      {
        name: 'a malformed narinfo is kept, with what it seems to refer to',
        paths: { a: { age: 900, broken: true, refs: ['b'] }, b: { age: 900 } },
        reachable: 'ab',
      },
      {
        name: 'a pinned path without a narinfo is reachable, and harms nothing',
        paths: { a: { age: 900 } },
        pinned: ['z'],
        reachable: 'z',
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const result = plan(c.paths, { pinned: c.pinned ?? [], leased: c.leased ?? [] });
        assert.equal(result.reachable, c.reachable);
      });
    }

    it('counts the recent roots, and the young ones when --older-than is shorter than the grace', () => {
      const inventory = bucket({ a: { age: 0.5 }, b: { age: 3 }, c: { age: 5 }, d: { age: 8 } });
      const roots = fixedRoots(inventory, { olderThan: NOW - HOUR, graceStart: NOW - GRACE });
      const rootSet = new PathSet();
      for (const id of roots.ids) rootSet.add(id);
      assert.deepEqual(
        { recent: roots.recent, young: roots.young, roots: namesIn(inventory, rootSet) },
        { recent: 1, young: 2, roots: 'abc' },
      );
    });
  });

  describe('marks', () => {
    const cases: {
      name: string;
      paths: Record<string, PathSpec>;
      marked?: Record<string, number>;
      leasedNars?: string[];
      logs?: Record<string, number>;
      deletable: string;
      marks: string;
      waiting?: number;
      young?: number;
    }[] = [
      {
        name: 'unreachable and old: marked now, deleted by a later run',
        paths: { a: { age: 800 } },
        deletable: '',
        marks: `${hashOf('a')}.narinfo ${narKey('a')}`,
        waiting: 2,
      },
      {
        name: 'marked for the whole grace: deletable, narinfo and NAR',
        paths: { a: { age: 800 } },
        marked: { [`${hashOf('a')}.narinfo`]: 7, [narKey('a')]: 7 },
        deletable: 'a nar:a',
        marks: `${hashOf('a')}.narinfo ${narKey('a')}`,
      },
      {
        name: 'marked for less than the grace: waits',
        paths: { a: { age: 800 } },
        marked: { [`${hashOf('a')}.narinfo`]: 5, [narKey('a')]: 7 },
        deletable: 'nar:a',
        marks: `${hashOf('a')}.narinfo ${narKey('a')}`,
        waiting: 1,
      },
      {
        name: 'a NAR younger than the grace is not marked',
        paths: { a: { age: 800, narAge: 1 } },
        marked: { [`${hashOf('a')}.narinfo`]: 7 },
        deletable: 'a',
        marks: `${hashOf('a')}.narinfo`,
        young: 1,
      },
      {
        name: 'a NAR named by a live lease is kept: its narinfo may not be written yet',
        paths: { a: { age: 800 } },
        marked: { [`${hashOf('a')}.narinfo`]: 7, [narKey('a')]: 7 },
        leasedNars: ['a'],
        deletable: 'a',
        marks: `${hashOf('a')}.narinfo`,
      },
      {
        name: "a reachable path's NAR and its deriver's log stay; an orphan log goes",
        paths: { a: { age: 1, deriver: drv('a') } },
        logs: { [drv('a')]: 800, [drv('b')]: 800 },
        marked: { [`log/${drv('a')}`]: 7, [`log/${drv('b')}`]: 7 },
        deletable: `log/${drv('b')}`,
        marks: `log/${drv('b')}`,
      },
      {
        name: 'a mark of something now reachable is dropped',
        paths: { a: { age: 1 } },
        marked: { [`${hashOf('a')}.narinfo`]: 7 },
        deletable: '',
        marks: '',
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const result = plan(c.paths, { marked: c.marked ?? {}, leasedNars: c.leasedNars ?? [], logs: c.logs ?? {} });
        assert.equal(
          keyNames([...result.deletable.narinfos, ...result.deletable.nars, ...result.deletable.logs]),
          c.deletable,
        );
        assert.equal(
          [...result.marks.keys()].sort().join(' '),
          c.marks
            .split(' ')
            .filter((k) => k !== '')
            .sort()
            .join(' '),
        );
        const waiting = result.waiting.narinfos.count + result.waiting.nars.count + result.waiting.logs.count;
        assert.equal(waiting, c.waiting ?? 0, 'waiting');
        assert.equal(result.young.count, c.young ?? 0, 'young');
      });
    }

    it('keeps the time an object was first marked', () => {
      const first = plan({ a: { age: 800 } });
      assert.equal(first.marks.get(`${hashOf('a')}.narinfo`), NOW);
      const again = plan({ a: { age: 800 } }, { marked: { [`${hashOf('a')}.narinfo`]: 3 } });
      assert.equal(again.marks.get(`${hashOf('a')}.narinfo`), NOW - 3 * HOUR);
    });
  });

  describe('order', () => {
    const cases: { name: string; refs: Record<string, string[]>; layers: string[] }[] = [
      { name: 'a chain goes referrer first', refs: { a: ['b'], b: ['c'], c: [] }, layers: ['a', 'b', 'c'] },
      {
        name: 'a diamond: the top, the middle together, the bottom',
        refs: { a: ['b', 'c'], b: ['d'], c: ['d'], d: [] },
        layers: ['a', 'bc', 'd'],
      },
      { name: 'unrelated paths go together', refs: { a: [], b: [], c: [] }, layers: ['abc'] },
      {
        name: 'references outside the deletable set do not hold anything back',
        refs: { a: ['z'], b: ['a'] },
        layers: ['b', 'a'],
      },
      {
        name: 'a cycle (not from Nix) goes last, together',
        refs: { a: ['b'], b: ['c'], c: ['b'] },
        layers: ['a', 'bc'],
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const metas = new Map(
          Object.entries(c.refs).map(([name, refs]) => [hashOf(name), { references: refs.map(hashOf) }]),
        );
        const inventory = inventoryOf(
          { '': Object.keys(c.refs).map((name) => entry(`${hashOf(name)}.narinfo`, 800)) },
          metas,
        );
        const ids = Object.keys(c.refs).map((name) => inventory.pathId(hashOf(name)));
        assert.deepEqual(
          referrersFirst(ids, inventory).map((layer) =>
            layer
              .map((id) => inventory.hashPart(id)[0])
              .sort()
              .join(''),
          ),
          c.layers,
        );
      });
    }

    it('keeps the NARs, logs and listings of the narinfos left, and only those', () => {
      const inventory = inventoryOf(
        {
          '': [entry(`${hashOf('a')}.narinfo`, 1), entry(`${hashOf('b')}.narinfo`, 1)],
          'nar/': [entry(narKey('a'), 1), entry(narKey('b'), 1)],
          'log/': [entry(`log/${drv('a')}`, 1), entry(`log/${drv('b')}`, 1)],
        },
        new Map<string, NarInfoMeta>([
          [hashOf('a'), { references: [], url: narKey('a'), deriver: drv('a') }],
          [hashOf('b'), { references: [], url: narKey('b'), deriver: drv('b') }],
        ]),
      );
      const deleted = new PathSet();
      deleted.add(inventory.pathId(hashOf('b')));
      const needed = stillNeeded(inventory, deleted);
      const kept = (flags: Uint8Array, table: ObjectTable) => keysOf(table).filter((_, i) => flags[i] === 1);
      assert.deepEqual(kept(needed.nars, inventory.tables.nars), [narKey('a')]);
      assert.deepEqual(kept(needed.logs, inventory.tables.logs), [`log/${drv('a')}`]);
      assert.equal(namesIn(inventory, needed.narInfos), 'a');
    });

    it("marks a realisation with its output's narinfo, and keeps one that does not parse", () => {
      const names = ['a', 'b', 'c', 'd'];
      const result = plan(
        { a: { age: 1 }, b: { age: 800 }, c: { age: 800 } },
        {
          realisations: { a: 800, b: 800, c: 800, d: 800 },
          broken: ['c'],
          marked: Object.fromEntries(names.map((name) => [realisationKeyOf(name), 700])),
        },
      );
      // a is recent; b's narinfo is unreachable; c does not parse; d's output has no narinfo
      assert.deepEqual(
        result.deletable.realisations.map((e) => e.key),
        [realisationKeyOf('b'), realisationKeyOf('d')],
      );
    });

    it('keeps the log under the derivation a build trace names while its output is kept (Nix 2.35 keys)', () => {
      // a and b were built from derivations resolved before the build: A and B as written, a and b as resolved
      const trace = (name: string) => `build-trace-v2/${drv(name)}/out.doi`;
      const inventory = inventoryOf(
        {
          '': [entry(`${hashOf('a')}.narinfo`, 1), entry(`${hashOf('b')}.narinfo`, 800)],
          'log/': ['a', 'A', 'b', 'B'].map((name) => entry(`log/${drv(name)}`, 800)),
          'realisations/': [entry(realisationKeyOf('a'), 800)],
          'build-trace-v2/': [entry(trace('A'), 800), entry(trace('B'), 800), entry(trace('a'), 800)],
        },
        new Map<string, NarInfoMeta>([
          [hashOf('a'), { references: [], deriver: drv('a') }],
          [hashOf('b'), { references: [], deriver: drv('b') }],
        ]),
      );
      assert.deepEqual(keysOf(inventory.tables.realisations), [
        realisationKeyOf('a'),
        trace('A'),
        trace('B'),
        trace('a'),
      ]);
      for (const [i, output] of ['a', 'a', 'b', 'a'].entries())
        inventory.realisationPaths[i] = inventory.pathId(hashOf(output));
      const reachable = new PathSet();
      extendClosure(
        reachable,
        fixedRoots(inventory, { olderThan: NOW - OLDER_THAN, graceStart: NOW - GRACE }).ids,
        inventory,
      );
      const marked = planMarks({
        inventory,
        reachable,
        leasedNarHashes: new Set(),
        previousMarks: noMarks(inventory),
        startedAt: NOW,
        graceStart: NOW,
      });
      const markedKeys = (kind: 'logs' | 'realisations') =>
        keysOf(inventory.tables[kind]).filter((_, i) => (marked.marks[kind][i] ?? 0) > 0);
      assert.deepEqual(markedKeys('logs'), [`log/${drv('b')}`, `log/${drv('B')}`]);
      assert.deepEqual(markedKeys('realisations'), [trace('B')]);
      const deleted = new PathSet();
      deleted.add(inventory.pathId(hashOf('b')));
      const needed = stillNeeded(inventory, deleted);
      assert.deepEqual(
        keysOf(inventory.tables.logs).filter((_, i) => needed.logs[i] === 1),
        [`log/${drv('a')}`, `log/${drv('A')}`],
      );
      assert.deepEqual(inventory.find(trace('A')), { kind: 'realisations', index: 1 });
    });

    it('marks a listing with its narinfo, orphan listings too, and keeps those of reachable paths', () => {
      const result = plan(
        { a: { age: 1, refs: ['b'] }, b: { age: 800 }, c: { age: 800 } },
        {
          listings: { a: 1, b: 800, c: 800, d: 800, e: 800 },
          leased: ['e'],
          marked: Object.fromEntries(['a', 'b', 'c', 'd', 'e'].map((name) => [`${hashOf(name)}.ls`, 700])),
        },
      );
      // a is recent and reaches b; c's narinfo is not reachable; d has no narinfo; e is leased (not published yet)
      assert.equal(keyNames(result.deletable.listings), 'c d');
      assert.equal(
        result.deletable.listings.every((e) => e.key.endsWith('.ls')),
        true,
      );
      assert.equal(keyNames(result.deletable.narinfos), '');
      assert.equal(result.waiting.narinfos.count, 1, "c's narinfo, marked only now");
    });
  });

  describe('the bucket as listed', () => {
    it('sorts keys into kinds and leaves foreign ones alone', () => {
      const inventory = bucket({ a: { age: 1 } }, { logs: { [drv('x')]: 1 }, foreign: ['index.html', 'nar/README'] });
      assert.deepEqual(keysOf(inventory.narinfos), [`${hashOf('a')}.narinfo`]);
      assert.equal(inventory.tables.nars.length, 1);
      assert.equal(inventory.tables.logs.length, 1);
      assert.deepEqual(inventory.foreign.sort(), ['index.html', 'nar/README']);
      const withListings = bucket({}, { listings: { a: 1 }, foreign: [`${hashOf('b')}.ls.tmp`, 'x.ls'] });
      assert.deepEqual(keysOf(withListings.tables.listings), [`${hashOf('a')}.ls`]);
      assert.deepEqual(withListings.foreign.sort(), [`${hashOf('b')}.ls.tmp`, 'x.ls']);
      assert.deepEqual(inventoryOf({ 'log/': [entry('log/x.txt', 1)] }, new Map()).foreign, ['log/x.txt']);
      assert.deepEqual(inventoryOf({ 'nar/': [entry('nar/README', 1)] }, new Map()).foreign, ['nar/README']);
    });

    it('shows the first 20 foreign keys and counts them all', () => {
      const foreign = Array.from({ length: 25 }, (_, i) => `notes-${i}.txt`);
      const inventory = bucket({}, { foreign });
      assert.deepEqual(inventory.foreign, foreign.slice(0, 20));
      assert.equal(inventory.foreignCount, 25);
    });

    it('counts narinfos whose references are missing', () => {
      const inventory = bucket({ a: { age: 1, refs: ['b'] }, b: { age: 1 }, c: { age: 1, refs: ['z'] } });
      assert.equal(countBroken(inventory), 1);
    });

    it('reads what a malformed narinfo seems to refer to, and says why it is malformed', () => {
      const text =
        `StorePath: /nix/store/${hashOf('a')}-a\nURL: ${narKey('a')}\nReferences: ${hashOf('b')}-b ` +
        `${hashOf('a')}-a\n`;
      const meta = narInfoMeta(text, `${hashOf('a')}.narinfo`, hashOf('a'));
      assert.deepEqual(meta.references, [hashOf('b')]);
      assert.equal(meta.url, narKey('a'));
      assert.match(meta.problem ?? '', /NarHash|no /);
    });

    it('reads back the marks it wrote, and ignores lines that are not marks or not of listed objects', () => {
      const inventory = bucket({ a: { age: 800 } }, { logs: { [drv('x')]: 800 } });
      const marks = noMarks(inventory);
      marks.nars[0] = 5;
      marks.narinfos[0] = 1_700_000_000_000;
      const text = Buffer.concat([...renderMarks(marks, inventory)]);
      assert.equal(text.toString(), `1700000000000 ${hashOf('a')}.narinfo\n5 ${narKey('a')}\n`);
      assert.deepEqual(parseMarks(text, inventory), marks);
      const other = parseMarks(
        Buffer.from(`garbage\n12 two words\n7 log/${drv('x')}\n9 ${hashOf('z')}.narinfo\n8 nar/gone.nar.zst\n`),
        inventory,
      );
      assert.deepEqual(
        KINDS.map((kind) => [...other[kind]]),
        [[0], [0], [7], [], []],
      );
    });

    it('writes many marks in chunks, all of them', () => {
      const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
      const hashParts = Array.from({ length: 5000 }, (_, i) =>
        Array.from(i.toString(32).padStart(32, '0'), (digit) => NIX32[parseInt(digit, 32)]).join(''),
      );
      const inventory = inventoryOf({ '': hashParts.map((hashPart) => entry(`${hashPart}.narinfo`, 800)) }, new Map());
      const marks = noMarks(inventory);
      marks.narinfos.fill(1);
      const chunks = [...renderMarks(marks, inventory)];
      assert.ok(chunks.length > 1, `${chunks.length} chunks`);
      const text = Buffer.concat(chunks);
      assert.equal(text.toString().split('\n').filter(Boolean).length, 5000);
      assert.deepEqual(parseMarks(text, inventory), marks);
    });
  });

  describe('packed columns', () => {
    it('finds each of many strings again, across growth, and not what was never added', () => {
      const strings = new PackedStrings(true);
      const texts = Array.from({ length: 20_000 }, (_, i) => `key-${i * 7919}`);
      texts.forEach((text, i) => {
        assert.equal(strings.add(text), i);
      });
      assert.equal(strings.length, texts.length);
      texts.forEach((text, i) => {
        assert.equal(strings.indexOf(text), i);
        assert.equal(strings.at(i), text);
      });
      assert.equal(strings.indexOf('key-1'), -1);
      assert.equal(strings.indexOf(''), -1);
      assert.equal(strings.add(''), texts.length);
      assert.equal(strings.indexOf(''), texts.length);
    });

    it('stores a character above U+00FF unfaithfully: such an ETag compares unequal, and its narinfo is read again', () => {
      const strings = new PackedStrings();
      strings.add('"etag-\u0101"');
      assert.notEqual(strings.at(0), '"etag-\u0101"');
    });

    it('grows a column, keeping every value', () => {
      const column = new Column((size) => new Float64Array(size));
      for (let i = 0; i < 5000; i += 1) column.push(i * 1.5);
      assert.equal(column.length, 5000);
      assert.equal(column.at(4999), 4999 * 1.5);
      assert.equal(column.at(0), 0);
    });
  });
});
