import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { openCache } from '../src/cache/open.js';
import { tempDir } from './helpers/nix.js';
import { startTestS3, useS3Here, type S3Server } from './helpers/s3rver.js';

/** A NAR-sized body that sends `bytes`, tells it has, then never ends: only an abort stops its upload. */
function stalledBody(bytes: number, onSent: () => void): AsyncIterable<Buffer> {
  return (async function* () {
    for (let sent = 0; sent < bytes; sent += 1024 * 1024) yield randomBytes(1024 * 1024);
    onSent();
    await new Promise(() => undefined);
  })();
}

// The daemon's drain limit aborts a signal that the backend holds: the uploads in flight must stop, publish
// nothing, and leave nothing behind.
for (const target of ['file', 's3'] as const) {
  describe(`an abandoned upload to ${target}://`, () => {
    let s3: S3Server | undefined;
    let url: string;
    let dir: string;
    before(async () => {
      dir = tempDir('abandon');
      if (target === 's3') {
        s3 = await startTestS3();
        useS3Here(s3);
        url = s3.cacheUrl();
      } else {
        url = `file://${dir}`;
      }
    });
    after(async () => s3?.stop());

    it('stops when the signal aborts, publishes nothing, and no later request goes out', async () => {
      const controller = new AbortController();
      const backend = await openCache(parseCacheUrl(url), { signal: controller.signal });
      await backend.put('nix-cache-info', Buffer.from('StoreDir: /nix/store\n'), 'cacheInfo');
      let sent!: () => void;
      const bodySent = new Promise<void>((resolve) => (sent = resolve));
      // 12 MiB: past the first 5 MiB part of a multipart upload
      const upload = backend.putStream('nar/big.nar', stalledBody(12 * 1024 * 1024, sent), 'nar', 64 * 1024 * 1024);
      await bodySent;
      controller.abort();
      await assert.rejects(upload);
      await assert.rejects(backend.put('later.narinfo', Buffer.from('x'), 'narinfo'));
      const reader = await openCache(parseCacheUrl(url));
      assert.equal(await reader.exists('nar/big.nar'), false, 'the abandoned NAR is not published');
      assert.equal(await reader.exists('later.narinfo'), false);
      assert.equal(await reader.exists('nix-cache-info'), true, 'what was written before stays');
      if (target === 'file') assert.deepEqual(readdirSync(join(dir, 'nar')), [], 'no temp file is left');
      await reader.close();
      await backend.close();
    });
  });
}
