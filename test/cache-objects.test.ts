/**
 * What Nix writes to a binary cache besides NARs and narinfos, read back by Nix's own tools: build logs
 * (`nix log --store`), NAR listings (`nix store ls --store`, and byte for byte what `nix copy` writes) and the
 * realisations of content-addressed derivations (a fresh store substitutes them with --max-jobs 0), on file://
 * and on s3rver read over HTTP, through push and through the hook and daemon; and the GC collecting them.
 */
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { buildTraceFingerprint, parseBuildTrace, renderBuildTrace } from '../src/core/realisation.js';
import { parsePublicKey, verifySignature } from '../src/core/signing.js';
import type { CacheBackend } from '../src/cache/backend.js';
import { openCache } from '../src/cache/open.js';
import { allKeys, dropLeases } from './helpers/cache.js';
import { HOOK, queueEnv, settled, startDaemon, stopDaemon } from './helpers/daemon.js';
import {
  buildFixtures,
  cachectl,
  newKey,
  nixAtLeast,
  nixVerify,
  requireNix,
  run,
  tempDir,
  testEnv,
  type Key,
  withNix,
} from './helpers/nix.js';
import { startTestS3, useS3Here, type S3Server } from './helpers/s3rver.js';

const FIXTURES = new URL('../../test/fixtures/closures.nix', import.meta.url).pathname;
const CA_FIXTURES = new URL('../../test/fixtures/content-addressed.nix', import.meta.url).pathname;

/** The test environment with content-addressed derivations enabled (a later line of NIX_CONFIG wins). */
function withCa(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, NIX_CONFIG: `${env['NIX_CONFIG'] ?? ''}\nexperimental-features = nix-command ca-derivations` };
}

const hashPartOf = (path: string) => path.slice('/nix/store/'.length, '/nix/store/'.length + 32);

async function push(args: string[], env: NodeJS.ProcessEnv) {
  const result = await cachectl(['push', '--json', ...args], env);
  assert.equal(result.code, 0, `push failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as {
    uploaded: string[];
    failed: unknown[];
    logs: number;
    realisations: number;
    buildTraces: number;
  };
}

/** What Nix prints for `nix log` of `path` from `store` (the local store when not given). */
async function nixLog(path: string, store?: string) {
  return run('nix', ['log', ...(store === undefined ? [] : ['--store', store]), path]);
}

/** The listing `nix copy` writes for `path`, from a cache of its own. */
async function nixCopyListing(path: string): Promise<Buffer> {
  const dir = await nixCopyCache('?compression=zstd&write-nar-listing=true', [path]);
  return readFileSync(join(dir, `${hashPartOf(path)}.ls`));
}

/** cachectl's listing of `path` against nix copy's: byte for byte with Nix >= 2.34, as JSON with 2.8's key order. */
async function assertListingAsNixCopys(listing: Buffer | undefined, path: string): Promise<void> {
  assert.ok(listing !== undefined, `no listing of ${path}`);
  const nixs = await nixCopyListing(path);
  if (nixAtLeast('2.34')) assert.equal(listing.toString(), nixs.toString());
  else assert.deepEqual(JSON.parse(listing.toString()), JSON.parse(nixs.toString()));
}

/** A file:// cache of its own, with `query` as its store settings, written by `nix copy` of `installables`. */
async function nixCopyCache(query: string, installables: string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const dir = tempDir('nix-copy-cache');
  const copy = await run('nix', ['copy', '--to', `file://${dir}${query}`, ...installables], env);
  assert.equal(copy.code, 0, copy.stderr);
  return dir;
}

/**
 * A fresh cache on `target` for one suite: its URLs for cachectl and for Nix, a backend on it, a signing key, and
 * the test environment made by `environment`.
 */
interface TargetCache {
  cacheUrl: string;
  nixUrl: string;
  env: NodeJS.ProcessEnv;
  /** the S3 credentials, for environments made otherwise (empty on file://) */
  s3Env: Record<string, string>;
  /** the S3 server (none on file://) */
  s3: S3Server | undefined;
  backend: CacheBackend;
  key: Key;
  close(): Promise<void>;
}

async function openTarget(
  target: 'file' | 's3',
  name: string,
  environment: (env: NodeJS.ProcessEnv) => NodeJS.ProcessEnv = (env) => env,
): Promise<TargetCache> {
  requireNix();
  const key = await newKey(`cachectl-${name}-${target}-1`);
  let s3: S3Server | undefined;
  let cacheUrl: string;
  let nixUrl: string;
  if (target === 's3') {
    s3 = await startTestS3();
    useS3Here(s3);
    cacheUrl = s3.cacheUrl();
    nixUrl = s3.nixUrl();
  } else {
    cacheUrl = `file://${tempDir(`${name}-cache`)}`;
    nixUrl = cacheUrl;
  }
  const backend = await openCache(parseCacheUrl(cacheUrl));
  return {
    cacheUrl,
    nixUrl,
    env: environment(testEnv(s3?.env ?? {})),
    s3Env: s3?.env ?? {},
    s3,
    backend,
    key,
    close: async () => {
      await backend.close();
      await s3?.stop();
    },
  };
}

for (const target of ['file', 's3'] as const) {
  describe(withNix(`build logs and NAR listings on ${target}://`), () => {
    let cache: TargetCache;
    before(async () => {
      cache = await openTarget(target, 'objects');
    });
    after(() => cache.close());

    it('push uploads the log and the listing nix copy writes: nix log and nix store ls read them', async () => {
      const { listed } = await buildFixtures(['listed'], { nonce: `objects-${target}-${Date.now()}` });
      const result = await push(['--to', cache.cacheUrl, '--secret-key-file', cache.key.secretFile, listed], cache.env);
      assert.deepEqual(result.uploaded, [listed]);
      assert.equal(result.logs, 1);

      const local = await nixLog(listed);
      assert.match(local.stdout, /building listed: stdout\nbuilding listed: stderr\nno newline at the end$/);
      const fromCache = await nixLog(listed, cache.nixUrl);
      assert.equal(fromCache.code, 0, fromCache.stderr);
      assert.equal(fromCache.stdout, local.stdout);

      await assertListingAsNixCopys(await cache.backend.get(`${hashPartOf(listed)}.ls`), listed);
      const ls = await run('nix', ['store', 'ls', '--store', cache.nixUrl, '-R', '-l', listed]);
      assert.equal(ls.code, 0, ls.stderr);
      const localLs = await run('nix', ['store', 'ls', '-R', '-l', listed]);
      assert.equal(ls.stdout, localLs.stdout);
      assert.match(ls.stdout, /names\/"quoted"/);

      const verify = await nixVerify(cache.nixUrl, cache.key.publicKey, [listed]);
      assert.equal(verify.code, 0, verify.stderr);
      if (target === 's3') {
        const drv = (await run('nix-store', ['-q', '--deriver', listed])).stdout.trim();
        const log = await fetch(`${cache.s3?.httpUrl}/log/${drv.slice('/nix/store/'.length)}`);
        assert.equal(log.headers.get('content-type'), 'text/plain; charset=utf-8');
        assert.equal(log.headers.get('content-encoding'), null);
        const listing = await fetch(`${cache.s3?.httpUrl}/${hashPartOf(listed)}.ls`);
        assert.equal(listing.headers.get('content-type'), 'application/json');
      }
    });

    it('uploads a path with a name that is not UTF-8 without a listing, which nix copy cannot write', async () => {
      const { latin1 } = await buildFixtures(['latin1'], { nonce: `objects-latin1-${target}-${Date.now()}` });
      const result = await push(['--to', cache.cacheUrl, '--secret-key-file', cache.key.secretFile, latin1], cache.env);
      assert.deepEqual(result.uploaded, [latin1]);
      assert.equal(await cache.backend.exists(`${hashPartOf(latin1)}.ls`), false);
      const ls = await run('nix', ['store', 'ls', '--store', cache.nixUrl, '-R', latin1]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.equal(ls.stdout, (await run('nix', ['store', 'ls', '-R', latin1])).stdout);
      // Nix >= 2.34 fails the whole path on it; Nix 2.8 writes the byte as it is, which is not JSON (not UTF-8).
      const dir = tempDir('nix-copy-cache');
      const copy = await run('nix', ['copy', '--to', `file://${dir}?write-nar-listing=true`, latin1], cache.env);
      if (nixAtLeast('2.34')) assert.match(copy.stderr, /json\.exception\.type_error\.316\] incomplete UTF-8 string/);
      else assert.equal(isUtf8(readFileSync(join(dir, `${hashPartOf(latin1)}.ls`))), false);
    });

    it('uploads paths whose log Nix did not keep as before, and no listing with --nar-listing false', async () => {
      const nonce = `objects-nolog-${target}-${Date.now()}`;
      const build = await run(
        'nix-build',
        [FIXTURES, '--no-out-link', '--argstr', 'nonce', nonce, '-A', 'tiny', '--option', 'keep-build-log', 'false'],
        cache.env,
      );
      assert.equal(build.code, 0, build.stderr);
      const tiny = build.stdout.trim();
      assert.equal((await nixLog(tiny)).code, 1, 'Nix kept no log');
      const result = await push(['--to', cache.cacheUrl, '--nar-listing', 'false', tiny], cache.env);
      assert.deepEqual([result.uploaded, result.logs], [[tiny], 0]);
      assert.equal(await cache.backend.exists(`${hashPartOf(tiny)}.narinfo`), true);
      assert.equal(await cache.backend.exists(`${hashPartOf(tiny)}.ls`), false);
      const fromCache = await nixLog(tiny, cache.nixUrl);
      assert.match(fromCache.stderr, /build log of .* is not available/);
    });

    it('reads logs from NIX_LOG_DIR, plain or bzip2; a corrupt one fails its path by name, nothing published', async () => {
      const { listed } = await buildFixtures(['listed'], { nonce: `objects-logdir-${target}-${Date.now()}` });
      const drv = basename((await run('nix-store', ['-q', '--deriver', listed])).stdout.trim());
      const logDir = tempDir('log-dir');
      const file = join(logDir, 'drvs', drv.slice(0, 2), drv.slice(2));
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(`${file}.bz2`, 'not bzip2 at all');
      const withLogDir = { ...cache.env, NIX_LOG_DIR: logDir };
      const bad = await cachectl(['push', '--json', '--to', cache.cacheUrl, listed], withLogDir);
      assert.equal(bad.code, 1, bad.stderr);
      const failed = (JSON.parse(bad.stdout) as { failed: { code: string; message: string }[] }).failed;
      assert.deepEqual(
        failed.map((failure) => failure.code),
        ['BUILD_LOG_UNREADABLE'],
      );
      assert.ok(failed[0]?.message.includes(`${file}.bz2`), failed[0]?.message);
      assert.equal(await cache.backend.exists(`${hashPartOf(listed)}.narinfo`), false);

      rmSync(`${file}.bz2`);
      writeFileSync(file, 'a plain log\n');
      const result = await push(['--to', cache.cacheUrl, listed], withLogDir);
      assert.deepEqual([result.uploaded, result.logs], [[listed], 1]);
      assert.equal((await nixLog(listed, cache.nixUrl)).stdout, 'a plain log\n');
    });

    it('the daemon uploads the log and listing of what the hook queued', async () => {
      const nonce = `objects-hook-${target}-${Date.now()}`;
      const queue = queueEnv(cache.s3Env);
      const daemon = startDaemon(['--to', cache.cacheUrl], queue);
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
        const fromCache = await nixLog(listed, cache.nixUrl);
        assert.equal(fromCache.stdout, (await nixLog(listed)).stdout);
        assert.match(fromCache.stdout, /building listed: stdout/);
        await assertListingAsNixCopys(await cache.backend.get(`${hashPartOf(listed)}.ls`), listed);
      } finally {
        await stopDaemon(daemon);
      }
    });

    it('the GC collects logs and listings with their narinfos, and orphan listings', async () => {
      const orphan = `${'0'.repeat(32)}.ls`;
      await cache.backend.put(
        orphan,
        Buffer.from('{"version":1,"root":{"type":"regular","size":0,"narOffset":96}}'),
        'listing',
      );
      const kinds = (keys: string[]) => ({
        listings: keys.filter((k) => k.endsWith('.ls')).length,
        logs: keys.filter((k) => k.startsWith('log/')).length,
        narinfos: keys.filter((k) => k.endsWith('.narinfo')).length,
      });
      const before = kinds(await allKeys(cache.backend));
      assert.ok(before.listings >= 3 && before.logs >= 2, JSON.stringify(before));
      await dropLeases(cache.backend);
      const gc = await cachectl(
        ['gc', '--to', cache.cacheUrl, '--older-than', '0s', '--grace', '0s', '--json'],
        cache.env,
      );
      assert.equal(gc.code, 0, gc.stderr);
      const report = JSON.parse(gc.stdout) as { deleted: Record<string, { count: number }> };
      assert.equal(report.deleted['listings']?.count, before.listings, gc.stdout);
      assert.equal(report.deleted['logs']?.count, before.logs);
      assert.deepEqual(kinds(await allKeys(cache.backend)), { listings: 0, logs: 0, narinfos: 0 });
    });
  });
}

for (const target of ['file', 's3'] as const) {
  describe(withNix(`realisations of content-addressed derivations on ${target}://`), () => {
    let cache: TargetCache;
    before(async () => {
      cache = await openTarget(target, 'ca', withCa);
    });
    after(() => cache.close());

    /** Builds `top` of the content-addressed fixtures: its derivation and its output. */
    async function buildTop(nonce: string, extra: string[] = [], buildEnv = cache.env) {
      const build = await run(
        'nix-build',
        [CA_FIXTURES, '--no-out-link', '--argstr', 'nonce', nonce, '-A', 'top', ...extra],
        buildEnv,
      );
      assert.equal(build.code, 0, build.stderr);
      const drv = await run('nix-instantiate', [CA_FIXTURES, '--argstr', 'nonce', nonce, '-A', 'top'], buildEnv);
      return { out: build.stdout.trim(), drv: drv.stdout.trim(), stderr: build.stderr };
    }

    /**
     * What a push of `top` must have put up for Nix 2.35 and for `nix log` of the derivation a user has: top's
     * build traces under the derivation as written (`drv`, what nix-instantiate gives) and as resolved (its
     * output's deriver), each signed by the cache's key over Nix 2.35's fingerprint, and the log under both.
     */
    async function assertTracesAndLogs(out: string, drv: string): Promise<void> {
      const resolved = (await run('nix-store', ['-q', '--deriver', out], cache.env)).stdout.trim();
      assert.notEqual(resolved, drv, 'Nix built top from a resolved derivation');
      const outPath = out.slice('/nix/store/'.length);
      for (const drvPath of [drv, resolved]) {
        const key = { drvPath: drvPath.slice('/nix/store/'.length), outputName: 'out' };
        const body = await cache.backend.get(`build-trace-v2/${key.drvPath}/out.doi`);
        assert.ok(body !== undefined, `a build trace for ${drvPath}`);
        const trace = parseBuildTrace(body.toString(), key, drvPath);
        assert.equal(body.toString(), renderBuildTrace(trace));
        assert.equal(trace.outPath, outPath);
        assert.equal(trace.signatures.length, 1);
        const publicKey = parsePublicKey(cache.key.publicKey);
        assert.equal(verifySignature([publicKey], buildTraceFingerprint(trace), trace.signatures[0] ?? ''), true);
        // what `nix log` prints of the derivation Nix built (the resolved one: the one it kept the log under)
        const local = (await run('nix', ['log', resolved], cache.env)).stdout;
        assert.match(local, /building top with tool/);
        if (nixAtLeast('2.34')) {
          const log = await nixLog(drvPath, cache.nixUrl);
          assert.equal(log.code, 0, `nix log --store of ${drvPath}: ${log.stderr}`);
          assert.equal(log.stdout, local);
        } else {
          // Nix 2.8's nix log --store takes only paths valid in that store, and a cache holds no .drv
          assert.equal((await cache.backend.get(`log/${key.drvPath}`))?.toString(), local);
        }
      }
    }

    /** Substitutes `top` into a fresh store with --max-jobs 0: only from the cache, nothing built. */
    function substituteTop(nonce: string) {
      return run(
        'nix-build',
        [
          CA_FIXTURES,
          '--no-out-link',
          '--argstr',
          'nonce',
          nonce,
          '-A',
          'top',
          '--store',
          tempDir('ca-fresh-store'),
          '--max-jobs',
          '0',
          '--option',
          'substituters',
          cache.nixUrl,
          '--option',
          'trusted-public-keys',
          cache.key.publicKey,
        ],
        { ...cache.env, XDG_CACHE_HOME: tempDir('xdg') },
      );
    }

    it('push of a .drv: realisations, build traces, logs under both .drvs; a fresh store substitutes it', async () => {
      const nonce = `ca-push-${target}-${Date.now()}`;
      const { out, drv } = await buildTop(nonce);
      const before = await substituteTop(nonce);
      assert.notEqual(before.code, 0, 'nothing to substitute yet');
      assert.match(
        before.stderr,
        nixAtLeast('2.34') ? /local builds are disabled \(max-jobs = 0\)/ : /unable to start any build/,
      );

      const result = await push(['--to', cache.cacheUrl, '--secret-key-file', cache.key.secretFile, drv], cache.env);
      assert.deepEqual(result.failed, []);
      assert.ok(result.uploaded.includes(out), JSON.stringify(result.uploaded));
      // top and dep, each for the derivation as written and as resolved (Nix records both)
      assert.ok(result.realisations >= 2, `${result.realisations} realisations`);
      // the derivation's output: `drv^out` from Nix 2.13, all of them by `drv` before
      const info = await run('nix', ['realisation', 'info', nixAtLeast('2.13') ? `${drv}^out` : drv], cache.env);
      const id = info.stdout.split(' ')[0] ?? '';
      const doi = await cache.backend.get(`realisations/${id}.doi`);
      assert.ok(doi !== undefined, `realisations/${id}.doi`);
      assert.equal((JSON.parse(doi.toString()) as { outPath: string }).outPath, out.slice('/nix/store/'.length));
      // beside each realisation its build trace (Nix 2.35), for top, dep and build-only
      assert.equal(result.buildTraces, result.realisations);
      await assertTracesAndLogs(out, drv);

      const substituted = await substituteTop(nonce);
      assert.equal(substituted.code, 0, substituted.stderr);
      assert.equal(substituted.stdout.trim(), out);
      assert.match(substituted.stderr, new RegExp(`copying path '${out}' from`));
      // Nix 2.8 trusts content-addressed paths by their content and does not check a realisation's signatures,
      // so the signature is checked here: over Nix's own bytes of the realisation, less its signatures field.
      const dir = await nixCopyCache('', ['-f', CA_FIXTURES, 'top', '--argstr', 'nonce', nonce], cache.env);
      const nixText = readFileSync(join(dir, 'realisations', `${id}.doi`), 'utf8');
      assert.ok(nixText.endsWith(',"signatures":[]}'), nixText);
      const fingerprint = `${nixText.slice(0, -',"signatures":[]}'.length)}}`;
      const { signatures } = JSON.parse(doi.toString()) as { signatures: string[] };
      assert.equal(signatures.length, 1);
      assert.equal(verifySignature([parsePublicKey(cache.key.publicKey)], fingerprint, signatures[0] ?? ''), true);
    });

    it('writes each realisation byte for byte as nix copy of the derivation does', async () => {
      const nonce = `ca-bytes-${target}-${Date.now()}`;
      const { out } = await buildTop(nonce);
      const dir = await nixCopyCache('', ['-f', CA_FIXTURES, 'top', '--argstr', 'nonce', nonce], cache.env);
      // pushed by output path, unsigned, as nix copy leaves them
      const result = await push(['--to', cache.cacheUrl, out], cache.env);
      assert.deepEqual(result.failed, []);
      // Nix 2.8 copies the realisations top depends on too; from 2.34 (no more dependent realisations), top's alone
      const written = readdirSync(join(dir, 'realisations'));
      assert.equal(written.length, nixAtLeast('2.34') ? 1 : 2, written.join(' '));
      for (const name of written) {
        assert.deepEqual(
          await cache.backend.get(`realisations/${name}`),
          readFileSync(join(dir, 'realisations', name)),
          name,
        );
      }
    });

    it('the daemon uploads the realisations of what the hook queued', async () => {
      const nonce = `ca-hook-${target}-${Date.now()}`;
      const queue = withCa(queueEnv(cache.s3Env));
      const daemon = startDaemon(['--to', cache.cacheUrl, '--secret-key-file', cache.key.secretFile], queue);
      await daemon.waitForLog('ready');
      try {
        const { out, stderr: buildStderr } = await buildTop(nonce, ['--post-build-hook', HOOK], queue);
        // fixed, dep, build-only and top; Nix 2.8 gives the hook only DRV_PATH for dep, build-only and top's
        // resolved derivation (their outputs are known only through realisations), and no word is said about it
        const report = await settled(queue, 4);
        assert.deepEqual([report.counts.done, report.counts.failed], [4, 0]);
        assert.doesNotMatch(buildStderr, /cachectl post-build-hook:/);
        const substituted = await substituteTop(nonce);
        assert.equal(substituted.code, 0, substituted.stderr);
        assert.equal(substituted.stdout.trim(), out);
        const drv = await run('nix-instantiate', [CA_FIXTURES, '--argstr', 'nonce', nonce, '-A', 'top'], queue);
        await assertTracesAndLogs(out, drv.stdout.trim());
      } finally {
        await stopDaemon(daemon);
      }
    });

    it('the GC keeps realisations, build traces and their logs with their narinfo, then collects them', async () => {
      const broken = `realisations/sha256:${'0'.repeat(64)}!out.doi`;
      await cache.backend.put(broken, Buffer.from('{"id": 1}'), 'realisation');
      await dropLeases(cache.backend);
      const keys = async (prefix: string) => (await allKeys(cache.backend)).filter((k) => k.startsWith(prefix));
      const realisations = async () => [...(await keys('realisations/')), ...(await keys('build-trace-v2/'))];
      const count = (await realisations()).length;
      assert.ok(count >= 10, `${count} realisations and build traces`);
      // the logs of the derivations top was built from (as written, not the deriver in its narinfo) among them
      const traced = (await keys('build-trace-v2/')).map((key) => `log/${key.split('/')[1]}`);
      const logs = await keys('log/');
      assert.ok(traced.filter((log) => logs.includes(log)).length >= 4, logs.join(' '));
      const gc = async (olderThan: string) => {
        const args = ['gc', '--to', cache.cacheUrl, '--older-than', olderThan, '--grace', '0s', '--json'];
        const result = await cachectl(args, cache.env);
        assert.equal(result.code, 0, result.stderr);
        return JSON.parse(result.stdout) as {
          deleted: { realisations: { count: number }; logs: { count: number } };
          problems: string[];
        };
      };
      const kept = await gc('1h');
      assert.deepEqual([kept.deleted.realisations.count, kept.deleted.logs.count], [0, 0]);
      assert.ok(
        kept.problems.some((problem) => problem.startsWith(`${broken}: realisation`)),
        kept.problems.join('\n'),
      );
      const collected = await gc('0s');
      assert.equal(collected.deleted.realisations.count, count - 1);
      assert.deepEqual(await realisations(), [broken]);
      assert.deepEqual(await keys('log/'), []);
    });
  });
}
