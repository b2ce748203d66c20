/**
 * What Nix writes to a binary cache besides NARs and narinfos, read back by Nix's own tools: build logs
 * (`nix log --store`), NAR listings (`nix store ls --store`, and byte for byte what `nix copy` writes), on file://
 * and on s3rver read over HTTP, through push and through the hook and daemon; and the GC collecting them.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseCacheUrl } from '../src/core/cache-url.js';
import type { CacheBackend } from '../src/cache/backend.js';
import { openCache } from '../src/cache/open.js';
import { allKeys, dropLeases } from './helpers/cache.js';
import { HOOK, queueEnv, settled, startDaemon, stopDaemon } from './helpers/daemon.js';
import {
  buildFixtures,
  cachectl,
  newKey,
  nixVerify,
  requireNix,
  run,
  tempDir,
  testEnv,
  type Key,
} from './helpers/nix.js';
import { startTestS3, useS3Here, type S3Server } from './helpers/s3rver.js';

const FIXTURES = new URL('../../test/fixtures/closures.nix', import.meta.url).pathname;

const hashPartOf = (path: string) => path.slice('/nix/store/'.length, '/nix/store/'.length + 32);

async function push(args: string[], env: NodeJS.ProcessEnv) {
  const result = await cachectl(['push', '--json', ...args], env);
  assert.equal(result.code, 0, `push failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as { uploaded: string[]; failed: unknown[]; logs: number };
}

/** What Nix prints for `nix log` of `path` from `store` (the local store when not given). */
async function nixLog(path: string, store?: string) {
  return run('nix', ['log', ...(store === undefined ? [] : ['--store', store]), path]);
}

/** The listing `nix copy` writes for `path`, from a cache of its own. */
async function nixCopyListing(path: string): Promise<Buffer> {
  const dir = tempDir('nix-copy-cache');
  const copy = await run('nix', ['copy', '--to', `file://${dir}?compression=zstd&write-nar-listing=true`, path]);
  assert.equal(copy.code, 0, copy.stderr);
  return readFileSync(join(dir, `${hashPartOf(path)}.ls`));
}

for (const target of ['file', 's3'] as const) {
  describe(`build logs and NAR listings on ${target}://`, () => {
    let s3: S3Server | undefined;
    let key: Key;
    let cacheUrl = '';
    let nixUrl = '';
    let env: NodeJS.ProcessEnv = {};
    let backend: CacheBackend;

    before(async () => {
      requireNix();
      key = await newKey(`cachectl-objects-${target}-1`);
      if (target === 's3') {
        s3 = await startTestS3();
        useS3Here(s3);
        cacheUrl = s3.cacheUrl();
        nixUrl = s3.httpUrl;
        env = testEnv(s3.env);
      } else {
        cacheUrl = `file://${tempDir('objects-cache')}`;
        nixUrl = cacheUrl;
        env = testEnv();
      }
      backend = await openCache(parseCacheUrl(cacheUrl));
    });
    after(async () => {
      backend.close();
      await s3?.stop();
    });

    it('push uploads the build log and the listing: nix log and nix store ls read them', async () => {
      const { listed } = await buildFixtures(['listed'], { nonce: `objects-${target}-${Date.now()}` });
      const result = await push(['--to', cacheUrl, '--secret-key-file', key.secretFile, listed], env);
      assert.deepEqual(result.uploaded, [listed]);
      assert.equal(result.logs, 1);

      const local = await nixLog(listed);
      assert.match(local.stdout, /building listed: stdout\nbuilding listed: stderr\nno newline at the end$/);
      const fromCache = await nixLog(listed, nixUrl);
      assert.equal(fromCache.code, 0, fromCache.stderr);
      assert.equal(fromCache.stdout, local.stdout);

      assert.deepEqual(await backend.get(`${hashPartOf(listed)}.ls`), await nixCopyListing(listed));
      const ls = await run('nix', ['store', 'ls', '--store', nixUrl, '-R', '-l', listed]);
      assert.equal(ls.code, 0, ls.stderr);
      const localLs = await run('nix', ['store', 'ls', '-R', '-l', listed]);
      assert.equal(ls.stdout, localLs.stdout);
      assert.match(ls.stdout, /names\/"quoted"/);

      const verify = await nixVerify(nixUrl, key.publicKey, [listed]);
      assert.equal(verify.code, 0, verify.stderr);
      if (target === 's3') {
        const drv = (await run('nix-store', ['-q', '--deriver', listed])).stdout.trim();
        const log = await fetch(`${nixUrl}/log/${drv.slice('/nix/store/'.length)}`);
        assert.equal(log.headers.get('content-type'), 'text/plain; charset=utf-8');
        assert.equal(log.headers.get('content-encoding'), null);
        const listing = await fetch(`${nixUrl}/${hashPartOf(listed)}.ls`);
        assert.equal(listing.headers.get('content-type'), 'application/json');
      }
    });

    it('uploads paths whose log Nix did not keep as before, and no listing with --nar-listing false', async () => {
      const nonce = `objects-nolog-${target}-${Date.now()}`;
      const build = await run(
        'nix-build',
        [FIXTURES, '--no-out-link', '--argstr', 'nonce', nonce, '-A', 'tiny', '--option', 'keep-build-log', 'false'],
        env,
      );
      assert.equal(build.code, 0, build.stderr);
      const tiny = build.stdout.trim();
      assert.equal((await nixLog(tiny)).code, 1, 'Nix kept no log');
      const result = await push(['--to', cacheUrl, '--nar-listing', 'false', tiny], env);
      assert.deepEqual([result.uploaded, result.logs], [[tiny], 0]);
      assert.equal(await backend.exists(`${hashPartOf(tiny)}.narinfo`), true);
      assert.equal(await backend.exists(`${hashPartOf(tiny)}.ls`), false);
      const fromCache = await nixLog(tiny, nixUrl);
      assert.match(fromCache.stderr, /build log of .* is not available/);
    });

    it('reads logs from NIX_LOG_DIR, plain or bzip2; a corrupt one fails its path by name, nothing published', async () => {
      const { listed } = await buildFixtures(['listed'], { nonce: `objects-logdir-${target}-${Date.now()}` });
      const drv = basename((await run('nix-store', ['-q', '--deriver', listed])).stdout.trim());
      const logDir = tempDir('log-dir');
      const file = join(logDir, 'drvs', drv.slice(0, 2), drv.slice(2));
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(`${file}.bz2`, 'not bzip2 at all');
      const withLogDir = { ...env, NIX_LOG_DIR: logDir };
      const bad = await cachectl(['push', '--json', '--to', cacheUrl, listed], withLogDir);
      assert.equal(bad.code, 1, bad.stderr);
      const failed = (JSON.parse(bad.stdout) as { failed: { code: string; message: string }[] }).failed;
      assert.deepEqual(
        failed.map((failure) => failure.code),
        ['BUILD_LOG_UNREADABLE'],
      );
      assert.ok(failed[0]?.message.includes(`${file}.bz2`), failed[0]?.message);
      assert.equal(await backend.exists(`${hashPartOf(listed)}.narinfo`), false);

      rmSync(`${file}.bz2`);
      writeFileSync(file, 'a plain log\n');
      const result = await push(['--to', cacheUrl, listed], withLogDir);
      assert.deepEqual([result.uploaded, result.logs], [[listed], 1]);
      assert.equal((await nixLog(listed, nixUrl)).stdout, 'a plain log\n');
    });

    it('the daemon uploads the log and listing of what the hook queued', async () => {
      const nonce = `objects-hook-${target}-${Date.now()}`;
      const queue = queueEnv(s3?.env ?? {});
      const daemon = startDaemon(['--to', cacheUrl], queue);
      await daemon.waitForLog('ready');
      try {
        const build = await run(
          'nix-build',
          [FIXTURES, '--no-out-link', '--argstr', 'nonce', nonce, '-A', 'listed', '--post-build-hook', HOOK],
          queue,
        );
        assert.equal(build.code, 0, build.stderr);
        const listed = build.stdout.trim();
        await settled(queue, 1);
        const fromCache = await nixLog(listed, nixUrl);
        assert.equal(fromCache.stdout, (await nixLog(listed)).stdout);
        assert.match(fromCache.stdout, /building listed: stdout/);
        assert.deepEqual(await backend.get(`${hashPartOf(listed)}.ls`), await nixCopyListing(listed));
      } finally {
        await stopDaemon(daemon);
      }
    });

    it('the GC collects logs and listings with their narinfos, and orphan listings', async () => {
      const orphan = `${'0'.repeat(32)}.ls`;
      await backend.put(orphan, Buffer.from('{"version":1,"root":{"type":"regular","size":0,"narOffset":96}}'), 'x');
      const kinds = (keys: string[]) => ({
        listings: keys.filter((k) => k.endsWith('.ls')).length,
        logs: keys.filter((k) => k.startsWith('log/')).length,
        narinfos: keys.filter((k) => k.endsWith('.narinfo')).length,
      });
      const before = kinds(await allKeys(backend));
      assert.ok(before.listings >= 3 && before.logs >= 2, JSON.stringify(before));
      await dropLeases(backend);
      const gc = await cachectl(['gc', '--to', cacheUrl, '--older-than', '0s', '--grace', '0s', '--json'], env);
      assert.equal(gc.code, 0, gc.stderr);
      const report = JSON.parse(gc.stdout) as { deleted: Record<string, { count: number }> };
      assert.equal(report.deleted['listings']?.count, before.listings, gc.stdout);
      assert.equal(report.deleted['logs']?.count, before.logs);
      assert.deepEqual(kinds(await allKeys(backend)), { listings: 0, logs: 0, narinfos: 0 });
    });
  });
}
