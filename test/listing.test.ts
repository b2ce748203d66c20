import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { listAll, type CacheBackend } from '../src/cache/backend.js';
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

/** Keys on the ranges' edges: before the alphabet, on each bound, just under one, beyond ASCII. */
const EDGE_KEYS = [
  '!first',
  '.hidden',
  '0',
  '0\u{10ffff}x',
  '-dash',
  '9zzzz',
  ':colon',
  'A-upper',
  'a',
  'dz',
  'e-not-nix32',
  'nix-cache-info',
  'z',
  'zz',
  '~tilde',
  'é-latin1',
  '\u{1f600}-emoji',
];

function keysOf(entries: readonly { key: string }[]): string[] {
  return entries.map((entry) => entry.key).sort();
}

describe('listing in parallel ranges', () => {
  let s3: S3rver;
  let proxy: LatencyProxy;
  let direct: CacheBackend;
  let viaProxy: CacheBackend;
  const keys: string[] = [];

  before(async () => {
    s3 = await startS3rver();
    useS3Here(s3);
    proxy = await startLatencyProxy(s3.port, { delayMs: 0 });
    direct = await openCache(parseCacheUrl(s3.cacheUrl()));
    viaProxy = await openCache(
      parseCacheUrl(`s3://${s3.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1`),
    );
    // 2,500 narinfo keys (three pages in some ranges), NARs, and the edge keys at both levels
    for (let i = 0; i < 2500; i += 1) keys.push(`${nix32Encode(randomBytes(20))}.narinfo`);
    for (let i = 0; i < 300; i += 1) keys.push(`nar/${nix32Encode(randomBytes(32))}.nar.zst`);
    keys.push(...EDGE_KEYS, ...EDGE_KEYS.map((key) => `nar/${key}`));
    await mapLimit(keys, 32, (key) => direct.put(key, Buffer.from(key), 'text/plain'));
  });

  after(async () => {
    direct.close();
    viaProxy.close();
    await proxy.stop();
    await s3.stop();
  });

  it('lists every key once, at the top level and under a prefix, as one listing in order does', async () => {
    assert.equal(direct.listsInParallel, true);
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

  it('asks once per range, and stops each range where the next begins', async () => {
    const before = proxy.stats.requests;
    const listed = await listAll(viaProxy, '');
    const requests = proxy.stats.requests - before;
    assert.equal(listed.length, keys.filter((key) => !key.includes('/')).length);
    // 33 ranges; 2,500 narinfos spread over 32 of them are ~80 each: one page per range, none past its end
    assert.equal(requests, 33);
  });

  it('holds each request for the delay it is set to', async () => {
    proxy.delayMs = 200;
    try {
      const started = performance.now();
      assert.deepEqual(await viaProxy.get('a'), Buffer.from('a'));
      assert.ok(performance.now() - started >= 199, 'answered before the delay');
    } finally {
      proxy.delayMs = 0;
    }
  });

  it('a file:// cache lists one range, in order, every key once', async () => {
    const dir = tempDir('listing');
    const backend: CacheBackend = new FileBackend(dir);
    const fileKeys = keys.filter((key) => !key.includes('/'));
    await mapLimit(fileKeys, 32, (key) => backend.put(key, Buffer.from(key), 'text/plain'));
    assert.equal(backend.listsInParallel, false);
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
});
