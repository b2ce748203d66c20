/**
 * The headers each kind of object goes up with on S3, as a reader (a CDN, a caching proxy, Nix) gets them back
 * from s3rver: narinfos and nix-cache-info short-lived, NARs (sent whole and streamed in parts) and listings
 * immutable, each with its Content-Type, and both headers configurable by class. (A file:// cache keeps no
 * headers: whatever serves the directory sets them.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseNarInfo } from '../src/core/narinfo.js';
import { buildFixtures, cachectl, requireNix, run, stopWhenDone, testEnv, withNix } from './helpers/nix.js';
import { startTestS3, useS3Here } from './helpers/s3rver.js';

const hashPartOf = (path: string) => path.slice('/nix/store/'.length, '/nix/store/'.length + 32);

describe(withNix('object headers on s3://'), () => {
  it('sends each class with its Content-Type and Cache-Control, and the ones configured', async () => {
    requireNix();
    const s3 = await startTestS3();
    useS3Here(s3);
    stopWhenDone(() => void s3.stop());
    const env = testEnv(s3.env);
    const { listed, big } = await buildFixtures(['listed', 'big'], { nonce: `headers-${Date.now()}` });
    const pushed = await cachectl(['push', '--to', s3.cacheUrl(), listed, big], env);
    assert.equal(pushed.code, 0, pushed.stderr);

    const headersOf = async (key: string) => {
      const response = await fetch(`${s3.httpUrl}/${key}`);
      assert.equal(response.status, 200, key);
      await response.arrayBuffer();
      return {
        contentType: response.headers.get('content-type'),
        cacheControl: response.headers.get('cache-control'),
        contentEncoding: response.headers.get('content-encoding'),
      };
    };
    const narOf = async (path: string) => {
      const text = await (await fetch(`${s3.httpUrl}/${hashPartOf(path)}.narinfo`)).text();
      return parseNarInfo(text, path).url;
    };
    const drv = (await run('nix-store', ['-q', '--deriver', listed], env)).stdout.trim().slice('/nix/store/'.length);
    const short = 'public, max-age=300';
    const immutable = 'public, max-age=31536000, immutable';
    const seen = {
      narinfo: await headersOf(`${hashPartOf(listed)}.narinfo`),
      cacheInfo: await headersOf('nix-cache-info'),
      nar: await headersOf(await narOf(listed)),
      streamedNar: await headersOf(await narOf(big)),
      listing: await headersOf(`${hashPartOf(listed)}.ls`),
      log: await headersOf(`log/${drv}`),
    };
    assert.deepEqual(seen, {
      narinfo: { contentType: 'text/x-nix-narinfo', cacheControl: short, contentEncoding: null },
      cacheInfo: { contentType: 'text/x-nix-cache-info', cacheControl: short, contentEncoding: null },
      nar: { contentType: 'application/x-nix-nar', cacheControl: immutable, contentEncoding: null },
      streamedNar: { contentType: 'application/x-nix-nar', cacheControl: immutable, contentEncoding: null },
      listing: { contentType: 'application/json', cacheControl: immutable, contentEncoding: null },
      log: { contentType: 'text/plain; charset=utf-8', cacheControl: short, contentEncoding: null },
    });

    const { tiny } = await buildFixtures(['tiny'], { nonce: `headers-set-${Date.now()}` });
    const configured = await cachectl(
      [
        'push',
        '--to',
        s3.cacheUrl(),
        '--cache-control',
        'narinfo=public, max-age=60',
        '--content-type',
        'nar=application/octet-stream',
        tiny,
      ],
      { ...env, CACHECTL_CACHE_CONTROL: 'nar=no-cache' },
    );
    assert.equal(configured.code, 0, configured.stderr);
    assert.deepEqual(
      [await headersOf(`${hashPartOf(tiny)}.narinfo`), await headersOf(await narOf(tiny))],
      [
        { contentType: 'text/x-nix-narinfo', cacheControl: 'public, max-age=60', contentEncoding: null },
        // a flag replaces the environment's list whole: nar keeps its default Cache-Control
        { contentType: 'application/octet-stream', cacheControl: immutable, contentEncoding: null },
      ],
    );
  });
});
