import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, utimesSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { parseDuration } from '../src/core/duration.js';
import { listAll, type CacheBackend } from '../src/cache/backend.js';
import { MARKS_KEY } from '../src/cache/layout.js';
import { SWEEP_WINDOW_MS } from '../src/gc/lease.js';
import { openCache } from '../src/cache/open.js';
import { allKeys, cacheProblems, dropLeases, putNarInfoChain } from './helpers/cache.js';
import { waitFor } from './helpers/daemon.js';
import {
  cachectl,
  CACHECTL,
  execFileAsync,
  newKey,
  nixClosure,
  nixVerify,
  requireNix,
  tempDir,
  testEnv,
  type Key,
  withNix,
} from './helpers/nix.js';
import { startTestS3, useS3Here, type S3Server } from './helpers/s3rver.js';

interface GcJson {
  dryRun: boolean;
  deleted: {
    narinfos: { count: number };
    nars: { count: number };
    logs: { count: number };
    listings: { count: number };
    leases: number;
  };
  roots: { young: number };
  waiting: { narinfos: { count: number }; nars: { count: number } };
  young: { count: number };
  problems: string[];
  foreign: string[];
  stopped?: string;
}

/** Closures with shared dependencies, built once: bases, leaves that each use two bases, old paths using one. */
async function buildShared(
  nonce: string,
  leaves: number,
): Promise<{ bases: string[]; leaves: string[]; old: string[] }> {
  const file = join(tempDir('gc-nix'), 'shared.nix');
  writeFileSync(
    file,
    `{ nonce }: let
      mk = name: script: attrs: derivation ({ name = "cachectl-gc-\${name}-\${nonce}"; system = builtins.currentSystem;
        builder = "/bin/sh"; args = [ "-ec" script ]; PATH = "/usr/bin:/bin"; } // attrs);
      bases = builtins.genList (k: mk "base-\${toString k}" "head -c 20000 /dev/urandom > $out" {}) 6;
      at = i: builtins.elemAt bases (i - 6 * (i / 6));
    in {
      bases = bases;
      leaves = builtins.genList
        (i: mk "leaf-\${toString i}" "printf '%s %s' $a $b > $out" { a = at i; b = at (i * 7 + 1); }) ${leaves};
      old = builtins.genList (i: mk "old-\${toString i}" "printf '%s' $a > $out" { a = at i; }) 8;
    }`,
  );
  const build = async (attr: string) =>
    (
      await execFileAsync('nix-build', [file, '--no-out-link', '--argstr', 'nonce', nonce, '-A', attr], {
        env: testEnv(),
        maxBuffer: 1 << 24,
      })
    ).stdout
      .trim()
      .split('\n');
  return { bases: await build('bases'), leaves: await build('leaves'), old: await build('old') };
}

describe('durations', () => {
  it('reads Go-style durations and names the option when one is wrong', () => {
    assert.equal(parseDuration('720h', '--older-than'), 720 * 3_600_000);
    assert.equal(parseDuration('1h30m', '--grace'), 90 * 60_000);
    assert.equal(parseDuration('0s', '--grace'), 0);
    assert.equal(parseDuration('2.5d', '--grace'), 60 * 3_600_000);
    for (const bad of ['', '10', 'h', '5 m', '-1h', '3w', '1h 2m']) {
      assert.throws(
        () => parseDuration(bad, '--grace'),
        /--grace ".*" is not a duration; write it like 720h, 30m, 1h30m or 0s/,
      );
    }
  });
});

for (const target of ['file', 's3'] as const) {
  describe(withNix(`cachectl gc on ${target}://`), () => {
    let s3: S3Server | undefined;
    let env: NodeJS.ProcessEnv = {};
    let key: Key;
    /** a fresh cache for each test */
    let newCache: () => { url: string; nixUrl: string; dir?: string };

    before(async () => {
      requireNix();
      key = await newKey(`cachectl-gc-${target}-1`);
      if (target === 's3') {
        s3 = await startTestS3();
        env = testEnv(s3.env);
        useS3Here(s3);
        let n = 0;
        newCache = () => {
          const prefix = `t${(n += 1)}/`;
          return {
            url: (s3 as S3Server).cacheUrl(prefix),
            nixUrl: (s3 as S3Server).nixUrl(prefix.slice(0, -1)),
          };
        };
      } else {
        env = testEnv();
        newCache = () => {
          const dir = tempDir('gc-cache');
          return { url: `file://${dir}`, nixUrl: `file://${dir}`, dir };
        };
      }
    });
    after(() => s3?.stop());

    /** Runs a test on a fresh cache, with a backend open on it. */
    const withFreshCache = async (
      test: (cache: ReturnType<typeof newCache>, backend: CacheBackend) => Promise<void>,
    ): Promise<void> => {
      const cache = newCache();
      const backend = await openCache(parseCacheUrl(cache.url));
      try {
        await test(cache, backend);
      } finally {
        await backend.close();
      }
    };

    const push = async (url: string, paths: string[]) => {
      const result = await cachectl(['push', '--to', url, '--secret-key-file', key.secretFile, ...paths], env);
      assert.equal(result.code, 0, result.stderr);
    };
    /**
     * S3 listings give Last-Modified in whole seconds, and Swift's round up: an object written just now may look
     * newer than a GC that starts within the second. The tests mean "written before the GC started".
     */
    const pastLastWrite = () => (target === 's3' ? sleep(1_100) : Promise.resolve());
    const gc = async (url: string, args: string[]): Promise<GcJson> => {
      const result = await cachectl(
        ['gc', '--to', url, '--json', '--metadata-cache', join(tempDir('gc-meta'), 'meta.db'), ...args],
        env,
      );
      assert.equal(result.code, 0, result.stderr);
      return JSON.parse(result.stdout) as GcJson;
    };

    it(
      'keeps the closures of pins and recent uploads whole, deletes old unpinned closures with their NARs, and ' +
        '--dry-run deletes nothing',
      () =>
        withFreshCache(async (cache, backend) => {
          const { bases, leaves, old } = await buildShared(`retain-${target}-${Date.now()}`, 2);
          const [pinned, recent] = leaves as [string, string];
          // old[1], old[2] and base 5 are needed by nothing pinned or recent; bases 1 and 2 are (leaf i uses
          // bases i and 7i+1)
          const oldRoots = [old[1] as string, old[2] as string, bases[5] as string];
          await push(cache.url, [pinned, ...oldRoots]);
          await dropLeases(backend);
          // what the old ones are older than: 7 s (leaving time for the steps between the last push and the GC)
          await sleep(10_000);
          await push(cache.url, [recent]);
          await dropLeases(backend);
          const pin = await cachectl(['pin', 'release-1', pinned, '--to', cache.url], env);
          assert.equal(pin.code, 0, pin.stderr);
          // Build logs, which push uploaded, keyed by the deriver a narinfo names: of a doomed path, of a kept one.
          const logKey = async (path: string) => {
            const deriver = await execFileAsync('nix-store', ['-q', '--deriver', path], { env: testEnv() });
            return `log/${deriver.stdout.trim().slice(11)}`;
          };
          const [doomedLog, keptLog] = [await logKey(old[1] as string), await logKey(pinned)];

          const keep = new Set(await nixClosure([pinned, recent]));
          const doomed = (await nixClosure(oldRoots)).filter((path) => !keep.has(path));
          assert.ok(doomed.length >= 3, `the old closures have paths of their own: ${doomed.join(' ')}`);
          const before = await allKeys(backend);
          assert.ok(before.includes(doomedLog) && before.includes(keptLog), 'push uploaded the logs');
          await pastLastWrite();
          const plan = await gc(cache.url, ['--older-than', '7s', '--grace', '0s', '--dry-run']);
          assert.equal(plan.dryRun, true);
          assert.equal(plan.deleted.narinfos.count, doomed.length);
          assert.equal(plan.deleted.nars.count, doomed.length);
          // every path built here has a log and a listing, which go with its narinfo
          assert.equal(plan.deleted.logs.count, doomed.length);
          assert.equal(plan.deleted.listings.count, doomed.length);
          assert.deepEqual(await allKeys(backend), before, '--dry-run changed the bucket');

          const done = await gc(cache.url, ['--older-than', '7s', '--grace', '0s']);
          assert.equal(done.deleted.narinfos.count, doomed.length);
          assert.equal(done.deleted.nars.count, doomed.length);
          assert.deepEqual(done.problems, []);
          const after = new Set(await allKeys(backend));
          assert.ok(
            !after.has(doomedLog) && after.has(keptLog),
            'the log of the dead deriver goes, the live one stays',
          );
          for (const path of doomed) assert.ok(!after.has(`${path.slice(11, 43)}.narinfo`), `${path} survived`);
          for (const path of keep) assert.ok(after.has(`${path.slice(11, 43)}.narinfo`), `${path} was deleted`);
          assert.deepEqual((await cacheProblems(backend)).problems, []);
          const verify = await nixVerify(cache.nixUrl, key.publicKey, [pinned, recent]);
          assert.equal(verify.code, 0, verify.stderr);

          // Unpinned and all old: nothing is left but nix-cache-info.
          assert.equal((await cachectl(['unpin', 'release-1', '--to', cache.url], env)).code, 0);
          const unpinAgain = await cachectl(['unpin', 'release-1', '--to', cache.url], env);
          assert.match(unpinAgain.stderr, /there is no pin "release-1" in .*; cachectl pins lists them/);
          await gc(cache.url, ['--older-than', '0s', '--grace', '0s']);
          assert.deepEqual(await allKeys(backend), ['nix-cache-info']);
        }),
    );

    it('marks before it deletes: nothing younger than the grace, nothing marked for less than it', () =>
      withFreshCache(async (cache, backend) => {
        const { old } = await buildShared(`grace-${target}-${Date.now()}`, 1);
        await push(cache.url, [old[0] as string]);
        await dropLeases(backend);
        await pastLastWrite();
        const young = await gc(cache.url, ['--older-than', '0s', '--grace', '1h']);
        assert.equal(young.roots.young, 2, 'two narinfos too young to be marked: kept, with what they refer to');
        assert.equal(
          young.deleted.narinfos.count +
            young.waiting.narinfos.count +
            young.deleted.nars.count +
            young.waiting.nars.count,
          0,
        );
        if (cache.dir === undefined) return; // the rest needs old objects, which only a directory can fake
        const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
        for (const key of await allKeys(backend)) utimesSync(join(cache.dir, key), twoHoursAgo, twoHoursAgo);
        const marked = await gc(cache.url, ['--older-than', '1h', '--grace', '1h']);
        assert.equal(marked.waiting.narinfos.count, 2);
        assert.equal(marked.deleted.narinfos.count, 0);
        const again = await gc(cache.url, ['--older-than', '1h', '--grace', '1h']);
        assert.equal(again.deleted.narinfos.count, 0, 'marked just now: not yet');
        // Once marked for longer than the grace, they go.
        const marks = (await backend.get(MARKS_KEY))?.toString('utf8') ?? '';
        await backend.put(MARKS_KEY, Buffer.from(marks.replace(/^\d+ /gm, `${twoHoursAgo.getTime()} `)), 'stateText');
        const swept = await gc(cache.url, ['--older-than', '1h', '--grace', '1h']);
        assert.equal(swept.deleted.narinfos.count, 2);
        assert.equal(swept.deleted.nars.count, 2);
      }));

    it('reports malformed narinfos, bad pins and foreign keys, and never deletes them or what they seem to need', () =>
      withFreshCache(async (cache, backend) => {
        const { bases } = await buildShared(`foreign-${target}-${Date.now()}`, 1);
        await push(cache.url, [bases[0] as string, bases[1] as string]);
        await dropLeases(backend);
        const base1 = (bases[1] as string).slice(11);
        const malformedKey = `${'0'.repeat(31)}1.narinfo`;
        // refers to base 1 but has no NarSize: kept, and base 1 with it
        await backend.put(
          malformedKey,
          Buffer.from(`StorePath: /nix/store/${'0'.repeat(31)}1-x\nURL: nar/abc.nar\nReferences: ${base1}\n`),
          'narinfo',
        );
        await backend.put('notes.txt', Buffer.from('hello\n'), 'stateText');
        await backend.put('nar/not-a-nar', Buffer.from('x'), 'nar');
        await backend.put('realisations/sha256:abc!out.doi', Buffer.from('{}'), 'realisation');
        await backend.put('gcroots/odd', Buffer.from('/tmp/not-a-store-path\n'), 'stateText');
        await pastLastWrite();
        const report = await gc(cache.url, ['--older-than', '0s', '--grace', '0s']);
        assert.equal(report.deleted.narinfos.count, 1, 'only base 0');
        assert.ok(
          report.problems.some((problem) =>
            problem.startsWith(`${malformedKey}: narinfo ${malformedKey} is malformed: it has no NarHash`),
          ),
          report.problems.join('\n'),
        );
        assert.ok(
          report.problems.some((problem) =>
            /^pin gcroots\/odd: line "\/tmp\/not-a-store-path" is not a store path/.test(problem),
          ),
          report.problems.join('\n'),
        );
        // a realisation key with a malformed id is not the layout's: left alone
        assert.deepEqual(report.foreign.sort(), ['nar/not-a-nar', 'notes.txt', 'realisations/sha256:abc!out.doi']);
        const left = await allKeys(backend);
        for (const key of [
          malformedKey,
          'notes.txt',
          'nar/not-a-nar',
          'realisations/sha256:abc!out.doi',
          `${base1.slice(0, 32)}.narinfo`,
        ]) {
          assert.ok(left.includes(key), `${key} was deleted`);
        }
      }));

    it(
      'writers pushing closures that share paths with garbage, while GC runs again and again with grace 0: every ' +
        'closure stays whole',
      () =>
        withFreshCache(async (cache, backend) => {
          const { bases, leaves, old } = await buildShared(`race-${target}-${Date.now()}`, 12);
          // The bases are in the cache only as parts of old closures nobody holds any more: garbage.
          await push(cache.url, old);
          await dropLeases(backend);
          let stop = false;
          let deleted = 0;
          let runs = 0;
          const collector = (async () => {
            while (!stop) {
              const report = await gc(cache.url, ['--older-than', '0s', '--grace', '0s']);
              assert.equal(report.stopped, undefined);
              deleted += report.deleted.narinfos.count;
              runs += 1;
            }
          })();
          const finished: string[] = [];
          const writer = async (mine: string[]) => {
            for (const leaf of mine) {
              await push(cache.url, [leaf]);
              finished.push(leaf);
            }
          };
          await Promise.all([0, 1, 2].map((w) => writer(leaves.filter((_, i) => i % 3 === w))));
          stop = true;
          await collector;
          assert.ok(runs >= 3 && deleted >= old.length, `the GC ran ${runs} times and deleted ${deleted} narinfos`);
          assert.equal(finished.length, leaves.length);
          assert.deepEqual((await cacheProblems(backend)).problems, []);
          const verify = await nixVerify(cache.nixUrl, key.publicKey, finished);
          assert.equal(verify.code, 0, verify.stderr);
          assert.ok(bases.length > 0);
        }),
    );

    it('a writer that sees a sweep looks at the cache only once the sweep cannot delete what it needs', () =>
      withFreshCache(async (cache, backend) => {
        const { bases, leaves } = await buildShared(`wait-${target}-${Date.now()}`, 1);
        const leaf = leaves[0] as string;
        const used = [bases[0] as string, bases[1] as string];
        await push(cache.url, used);
        // A GC is sweeping, and its batch was allowed before the writer's lease was there: it deletes the bases
        // while the writer waits out the sweep window, before the writer's first look at the cache.
        await backend.put('cachectl/gc/sweeping/test-gc', Buffer.from('{}\n'), 'stateJson');
        const leasesBefore = (await listAll(backend, 'cachectl/leases/')).length;
        const started = performance.now();
        const child = spawn(
          process.execPath,
          [CACHECTL, 'push', '--json', '--to', cache.url, '--secret-key-file', key.secretFile, leaf],
          { env, stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let stdout = '';
        child.stdout.on('data', (data: Buffer) => (stdout += data.toString()));
        for (let tries = 0; (await listAll(backend, 'cachectl/leases/')).length === leasesBefore; tries++) {
          assert.ok(tries < 500, 'the writer wrote no lease');
          await sleep(20);
        }
        const narKeys = await Promise.all(
          used.map(
            async (path) =>
              /^URL: (.*)$/m.exec(
                (await backend.get(`${path.slice(11, 43)}.narinfo`))?.toString() ?? '',
              )?.[1] as string,
          ),
        );
        await backend.delete([...used.map((path) => `${path.slice(11, 43)}.narinfo`), ...narKeys]);
        const code = await new Promise((resolve) => child.once('exit', resolve));
        assert.equal(code, 0);
        assert.ok(performance.now() - started >= SWEEP_WINDOW_MS, 'the writer did not wait out the window');
        const result = JSON.parse(stdout) as { uploaded: string[]; repaired: string[] };
        assert.deepEqual([...result.uploaded].sort(), [leaf, ...used].sort());
        assert.deepEqual(result.repaired, []);
        assert.deepEqual((await cacheProblems(backend)).problems, []);
        const verify = await nixVerify(cache.nixUrl, key.publicKey, [leaf]);
        assert.equal(verify.code, 0, verify.stderr);
      }));

    it('a GC killed mid-sweep leaves the cache consistent, and the next run finishes the work', () =>
      withFreshCache(async (cache, backend) => {
        const length = target === 's3' ? 150 : 1500;
        await putNarInfoChain(backend, 'chain', length);
        assert.deepEqual((await cacheProblems(backend)).problems, []);
        await pastLastWrite();
        const child = spawn(
          process.execPath,
          [
            CACHECTL,
            'gc',
            '--to',
            cache.url,
            '--older-than',
            '0s',
            '--grace',
            '0s',
            '--metadata-cache',
            join(tempDir('gc-meta'), 'm.db'),
          ],
          {
            env,
            stdio: 'ignore',
          },
        );
        after(() => child.kill('SIGKILL'));
        const exited = new Promise((resolve) => child.once('exit', resolve));
        let running = true;
        void exited.then(() => (running = false));
        // Stopped (SIGSTOP) at its first delete, then killed: what the kill leaves is what the stopped GC had done.
        // Its sweep takes one delete batch per link of the chain, so it is far from done when it stops. On file://
        // the first delete is seen through inotify at once; an S3 listing is slow, but so is each batch there.
        const countNarInfos = async () => (await allKeys(backend)).filter((key) => key.endsWith('.narinfo')).length;
        if (cache.dir !== undefined) {
          const dir = cache.dir;
          await new Promise<void>((resolve) => {
            const watcher = watch(dir, (_event, name) => {
              if (name?.endsWith('.narinfo') !== true || existsSync(join(dir, name))) return;
              child.kill('SIGSTOP');
              watcher.close();
              resolve();
            });
            void exited.then(() => {
              watcher.close();
              resolve();
            });
          });
        } else {
          await waitFor(
            'the GC to delete a narinfo',
            async () => (!running || (await countNarInfos()) < length ? child.kill('SIGSTOP') : undefined),
            120_000,
          );
        }
        assert.ok(running, 'the GC ended before it was stopped');
        const left = await countNarInfos();
        child.kill('SIGKILL');
        await exited;
        assert.ok(left > 0 && left < length, `killed with ${left} of ${length} narinfos left`);
        assert.deepEqual(
          (await cacheProblems(backend)).problems,
          [],
          'a narinfo refers to a deleted one, or lost its NAR',
        );
        const rest = await gc(cache.url, ['--older-than', '0s', '--grace', '0s']);
        // At most what was counted: on S3 a delete the stopped GC had already sent may land after the count.
        assert.ok(
          rest.deleted.narinfos.count > 0 && rest.deleted.narinfos.count <= left,
          `the next run deleted ${rest.deleted.narinfos.count} of ${left}`,
        );
        assert.equal(
          (await allKeys(backend)).filter((key) => key !== 'nix-cache-info' && !key.startsWith('cachectl/')).length,
          0,
        );
      }));
  });
}
