import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { listAll, listRanges, type CacheBackend } from '../src/cache/backend.js';
import { FileBackend } from '../src/cache/file.js';
import { openCache } from '../src/cache/open.js';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { mapLimit } from '../src/core/limit.js';
import { nix32Encode } from '../src/core/nix32.js';
import { startLatencyProxy, type LatencyProxy } from './helpers/latency-proxy.js';
import { tempDir } from './helpers/nix.js';
import { startS3rver, useS3Here, type S3rver } from './helpers/s3rver.js';

// Listings split into key ranges listed at once (S3), against s3rver and through the latency proxy: every key
// once, whatever it begins with, and the ranges stop where the next begins.

/** Keys before and beyond the nix32 alphabet, and beyond ASCII. */
const EDGE_KEYS = [
  '!first',
  '-dash',
  '.hidden',
  '0',
  '0\u{10ffff}x',
  ':colon',
  'A-upper',
  'e-not-nix32',
  'nix-cache-info',
  'z',
  'zz',
  '~tilde',
  'é-latin1',
  '\u{1f600}-emoji',
];
/** Enough narinfos for the first page to show that a split into ranges pays. */
const NARINFOS = 12_000;

function keysOf(entries: readonly { key: string }[]): string[] {
  return entries.map((entry) => entry.key).sort();
}

describe('listing in parallel ranges', () => {
  let s3: S3rver;
  let proxy: LatencyProxy;
  let direct: CacheBackend;
  let viaProxy: CacheBackend;
  const keys: string[] = [];
  let ranges: ReturnType<typeof listRanges> = [];

  before(async () => {
    s3 = await startS3rver();
    useS3Here(s3);
    proxy = await startLatencyProxy(s3.port, { delayMs: 0 });
    direct = await openCache(parseCacheUrl(s3.cacheUrl()));
    viaProxy = await openCache(
      parseCacheUrl(`s3://${s3.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1`),
    );
    for (let i = 0; i < NARINFOS; i += 1) keys.push(`${nix32Encode(randomBytes(20))}.narinfo`);
    for (let i = 0; i < 300; i += 1) keys.push(`nar/${nix32Encode(randomBytes(32))}.nar.zst`);
    keys.push(...EDGE_KEYS, ...EDGE_KEYS.map((key) => `nar/${key}`));
    await mapLimit(keys, 32, (key) => direct.put(key, Buffer.from(key), 'stateText'));
    // Then keys on the edges of the ranges the first page leads to, all after it (so the ranges stay the same):
    // each range's first key, the key its listing starts after, and one between the two.
    let first: string[] = [];
    for await (const page of direct.list('')) {
      first = keysOf(page);
      break;
    }
    ranges = listRanges('', first.at(-1) as string);
    const edges = ranges.slice(1).flatMap(({ startAfter, from }) => [from, startAfter, `${startAfter}x`]);
    await mapLimit(edges, 32, (key) => direct.put(key, Buffer.from(key), 'stateText'));
    keys.push(...edges);
  });

  after(async () => {
    await direct.close();
    await viaProxy.close();
    await proxy.stop();
    await s3.stop();
  });

  it('lists every key once, at the top level and under a prefix, as one listing in order does', async () => {
    assert.equal(direct.listsByPage, true);
    for (const prefix of ['', 'nar/']) {
      const inOrder: string[] = [];
      for await (const page of direct.list(prefix)) inOrder.push(...keysOf(page));
      const parallel = keysOf(await listAll(direct, prefix));
      assert.equal(new Set(parallel).size, parallel.length, 'a key listed twice');
      assert.deepEqual(parallel, inOrder.sort());
      const expected = keys.filter((key) => key.startsWith(prefix) && !key.slice(prefix.length).includes('/'));
      assert.deepEqual(parallel, expected.sort());
    }
  });

  it('splits a listing of many pages into ranges, and stops each range where the next begins', async () => {
    assert.ok(ranges.length >= 2, `${ranges.length} ranges for ${NARINFOS} narinfos`);
    const before = proxy.stats.requests;
    const listed = await listAll(viaProxy, '');
    const requests = proxy.stats.requests - before;
    const topKeys = keys.filter((key) => !key.includes('/')).length;
    assert.equal(listed.length, topKeys);
    // the first page, then each range's pages: at most one partial page a range more than in one listing
    const pages = Math.ceil(topKeys / 1000);
    assert.ok(requests > ranges.length && requests <= pages + ranges.length + 1, `${requests} requests`);
  });

  it('lists a few pages in order: a split would cost more requests than it saves', async () => {
    assert.deepEqual(listRanges('', '0zzzz.narinfo').length > 1, true);
    assert.deepEqual(listRanges('', 'bzzzz.narinfo'), []);
    assert.deepEqual(listRanges('nar/', 'nar/zz'), []);
    // A NAR's hash begins with 0 or 1: a first page reaching 7 of its 64 cells means about 9 pages, not 146.
    const narFirstPageEnd = `nar/06${'z'.repeat(50)}.nar.zst`;
    assert.deepEqual(
      listRanges('nar/', narFirstPageEnd).map(({ from, to }) => [from, to]),
      [
        [narFirstPageEnd, 'nar/14'],
        ['nar/14', undefined],
      ],
    );
    const before = proxy.stats.requests;
    assert.equal((await listAll(viaProxy, 'nar/')).length, 300 + EDGE_KEYS.length);
    assert.equal(proxy.stats.requests - before, 1);
  });

  it('holds each request for the delay it is set to', async () => {
    proxy.delayMs = 200;
    try {
      const started = performance.now();
      assert.deepEqual(await viaProxy.get('z'), Buffer.from('z'));
      assert.ok(performance.now() - started >= 199, 'answered before the delay');
    } finally {
      proxy.delayMs = 0;
    }
  });

  it('a file:// cache lists one range, in order, every key once', async () => {
    const dir = tempDir('listing');
    const backend: CacheBackend = new FileBackend(dir);
    const fileKeys = keys.filter((key) => !key.includes('/'));
    await mapLimit(fileKeys, 32, (key) => backend.put(key, Buffer.from(key), 'stateText'));
    assert.equal(backend.listsByPage, false);
    const pages: string[][] = [];
    for await (const page of backend.list('')) pages.push(page.map((entry) => entry.key));
    assert.deepEqual(pages.flat(), [...fileKeys].sort());
    assert.deepEqual(keysOf(await listAll(backend, '')), [...fileKeys].sort());
    const after = [...fileKeys].sort()[1000] as string;
    const rest: string[] = [];
    for await (const page of backend.list('', { startAfter: after })) rest.push(...page.map((entry) => entry.key));
    assert.deepEqual(
      rest,
      [...fileKeys].sort().filter((key) => key > after),
    );
  });

  it('lists deep, on s3rver and file://: every key below a prefix, at any depth, in order', async () => {
    const nested = [
      'build-trace-v2/a.drv/out.doi',
      'build-trace-v2/a.drv/dev.doi',
      'build-trace-v2/b.drv/out.doi',
      'build-trace-v2/top.doi',
    ];
    const prefixed = await openCache(parseCacheUrl(s3.cacheUrl(`deep-${Date.now()}`)));
    for (const backend of [prefixed, new FileBackend(tempDir('deep-listing'))]) {
      await mapLimit(nested, 8, (key) => backend.put(key, Buffer.from(key), 'stateText'));
      const deep: string[] = [];
      for await (const page of backend.list('build-trace-v2/', { deep: true })) deep.push(...page.map((e) => e.key));
      assert.deepEqual(deep, [...nested].sort());
      // one level only, by default
      assert.deepEqual(keysOf(await listAll(backend, 'build-trace-v2/')), ['build-trace-v2/top.doi']);
      await backend.close();
    }
  });
});
