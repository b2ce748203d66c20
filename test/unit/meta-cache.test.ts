import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { CacheBackend } from '../../src/cache/backend.js';
import { FileBackend } from '../../src/cache/file.js';
import { nix32Encode } from '../../src/core/nix32.js';
import { collectGarbage } from '../../src/gc/gc.js';
import { MetaCache } from '../../src/gc/meta-cache.js';
import { tempDir } from '../helpers/nix.js';

// The GC's metadata cache on a real file:// cache and a real SQLite file: what a run reads again, and what the
// cache file holds after the bucket changed under it.
const hashOf = (name: string) => nix32Encode(Buffer.alloc(20, name)).slice(0, 32);
const narHashOf = (name: string) => nix32Encode(Buffer.alloc(32, name));

async function putNarInfo(backend: CacheBackend, name: string, refs: readonly string[]): Promise<void> {
  const nar = `nar/${narHashOf(name)}.nar`;
  await backend.put(nar, Buffer.from('nar'), 'nar');
  const text =
    `StorePath: /nix/store/${hashOf(name)}-${name}\nURL: ${nar}\nCompression: none\nNarHash: sha256:` +
    `${narHashOf(name)}\nNarSize: 3\nReferences: ${refs.map((ref) => `${hashOf(ref)}-${ref}`).join(' ')}\n`;
  await backend.put(`${hashOf(name)}.narinfo`, Buffer.from(text), 'narinfo');
}

/** One dry run; the narinfos it read from the bucket, and the cache file's rows after it. */
async function dryRun(backend: FileBackend, file: string): Promise<{ read: string[]; broken: number; rows: number }> {
  const read: string[] = [];
  const counting: CacheBackend = Object.assign(Object.create(backend) as FileBackend, {
    get: (key: string) => {
      if (key.endsWith('.narinfo')) read.push(key);
      return backend.get(key);
    },
    // the GC's way of reading narinfos on file://
    getMany: (keys: readonly string[]) => {
      read.push(...keys.filter((key) => key.endsWith('.narinfo')));
      return backend.getMany(keys);
    },
  });
  const metaCache = MetaCache.open(file);
  const report = await collectGarbage({
    backend: counting,
    olderThanMs: 0,
    graceMs: 0,
    dryRun: true,
    metaCache,
    jobs: 4,
  });
  metaCache.close();
  const db = new Database(file, { readonly: true });
  const { rows } = db.prepare<[], { rows: number }>('SELECT count(*) AS rows FROM narinfo_meta').get() as {
    rows: number;
  };
  db.close();
  return { read: read.sort(), broken: report.brokenNarInfos, rows };
}

describe('the GC metadata cache', () => {
  it('reads a narinfo once, again only when rewritten, and forgets what left the bucket', async () => {
    const backend = new FileBackend(tempDir('meta-cache'));
    const file = join(tempDir('meta-cache-db'), 'meta.db');
    const names = ['a', 'b', 'c', 'd', 'e'];
    for (const [i, name] of names.entries()) await putNarInfo(backend, name, names.slice(i + 1, i + 2));
    const key = (name: string) => `${hashOf(name)}.narinfo`;

    assert.deepEqual(await dryRun(backend, file), { read: names.map(key).sort(), broken: 0, rows: 5 });
    assert.deepEqual(await dryRun(backend, file), { read: [], broken: 0, rows: 5 });

    // c goes (so b refers to a missing narinfo); e is rewritten to refer to a path the cache never had.
    await backend.delete([key('c')]);
    await putNarInfo(backend, 'e', ['missing']);
    assert.deepEqual(await dryRun(backend, file), { read: [key('e')], broken: 2, rows: 4 });
    assert.deepEqual(await dryRun(backend, file), { read: [], broken: 2, rows: 4 });
  });

  it('opens a cache file of the earlier keyed layout, dropping its rows', async () => {
    const backend = new FileBackend(tempDir('meta-cache'));
    await putNarInfo(backend, 'a', []);
    const file = join(tempDir('meta-cache-db'), 'meta.db');
    const old = new Database(file);
    old.exec('CREATE TABLE narinfos (key TEXT PRIMARY KEY, etag TEXT NOT NULL, meta TEXT NOT NULL)');
    old.prepare('INSERT INTO narinfos VALUES (?, ?, ?)').run(`${hashOf('a')}.narinfo`, 'x', '{"references":[]}');
    old.close();
    assert.deepEqual(await dryRun(backend, file), { read: [`${hashOf('a')}.narinfo`], broken: 0, rows: 1 });
  });
});
