import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Queue } from '../src/queue/queue.js';
import { hookInboxFiles } from '../src/queue/schema.js';
import { readSpool } from '../src/queue/spool.js';
import { queueEnv, startDaemon, waitFor } from './helpers/daemon.js';
import { createQueue, inbox, inboxOf, runHook } from './helpers/hook.js';
import {
  buildFixtures,
  execFileAsync,
  newKey,
  nixVerify,
  requireNix,
  tempDir,
  testEnv,
  type Key,
  withNix,
} from './helpers/nix.js';
import { regex } from './helpers/regex.js';

function syntheticPath(i: number): string {
  return `/nix/store/${String(i)
    .padStart(32, '0')
    .replace(/[eotu]/g, 'a')}-hook-load-${i}`;
}

describe(withNix('post-build hook'), () => {
  let paths: Record<'tiny' | 'multi.out' | 'multi.dev' | 'lib', string>;
  let key: Key;

  before(async () => {
    requireNix();
    paths = await buildFixtures(['tiny', 'multi.out', 'multi.dev', 'lib'], { nonce: `hook-${Date.now()}` });
    key = await newKey('cachectl-hook-test-1');
  });

  it('queues OUT_PATHS and makes them GC roots, silently, exiting 0', async () => {
    const env = queueEnv();
    const queue = createQueue(env);
    const result = await runHook(env, { OUT_PATHS: `${paths['multi.out']} ${paths['multi.dev']}` });
    assert.deepEqual(
      { code: result.code, stdout: result.stdout, stderr: result.stderr },
      { code: 0, stdout: '', stderr: '' },
    );
    assert.deepEqual(inbox(queue), [paths['multi.out'], paths['multi.dev']]);
    for (const path of [paths['multi.out'], paths['multi.dev']]) {
      assert.equal(readlinkSync(join(env.CACHECTL_GC_ROOTS, path.slice('/nix/store/'.length))), path);
    }
  });

  it(
    'a path already rooted keeps its root and the others get theirs; roots it cannot make cost one line, ' +
      'not the path',
    async () => {
      const env = queueEnv();
      const queue = createQueue(env);
      const rootOf = (path: string) => join(env.CACHECTL_GC_ROOTS, path.slice('/nix/store/'.length));
      // Rooted by an earlier build of the same path that is not uploaded yet.
      mkdirSync(env.CACHECTL_GC_ROOTS, { recursive: true });
      symlinkSync(paths['multi.out'], rootOf(paths['multi.out']));
      const again = await runHook(env, { OUT_PATHS: `${paths['multi.out']} ${paths['multi.dev']}` });
      assert.deepEqual({ code: again.code, stderr: again.stderr }, { code: 0, stderr: '' });
      assert.deepEqual(inbox(queue), [paths['multi.out'], paths['multi.dev']]);
      for (const path of [paths['multi.out'], paths['multi.dev']]) assert.equal(readlinkSync(rootOf(path)), path);

      // A file where the roots directory should be: queued all the same, and the hook says what is at risk.
      const blocked = queueEnv({ CACHECTL_GC_ROOTS: join(tempDir('roots-blocked'), 'a-file') });
      const blockedQueue = createQueue(blocked);
      writeFileSync(blocked.CACHECTL_GC_ROOTS, 'not a directory');
      const result = await runHook(blocked, { OUT_PATHS: paths.tiny });
      assert.equal(result.code, 0);
      assert.match(
        result.stderr,
        regex(
          /^cachectl post-build-hook: cannot make GC roots in .*: garbage collection may delete these paths /,
          /before they are uploaded\n$/,
        ),
      );
      assert.deepEqual(inbox(blockedQueue), [paths.tiny]);
    },
  );

  it("with Nix 2.8's empty OUT_PATHS, queues the valid outputs of DRV_PATH", async () => {
    const env = queueEnv();
    const queue = createQueue(env);
    const drv = (
      await execFileAsync('nix-store', ['-q', '--deriver', paths['multi.out']], { env: testEnv() })
    ).stdout.trim();
    const result = await runHook(env, { OUT_PATHS: '', DRV_PATH: drv });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
    assert.deepEqual(inbox(queue).sort(), [paths['multi.out'], paths['multi.dev']].sort());
    assert.equal(readdirSync(env.CACHECTL_GC_ROOTS).length, 2);
  });

  it('64 hooks at once: every path is queued exactly once', async () => {
    const env = queueEnv({ CACHECTL_GC_ROOTS: tempDir('load-roots') });
    const queueFile = createQueue(env);
    const expected = Array.from({ length: 64 }, (_, i) => syntheticPath(i));
    const results = await Promise.all(expected.map((path) => runHook(env, { OUT_PATHS: path })));
    assert.deepEqual(
      results.filter((r) => r.code !== 0),
      [],
    );
    // The hooks spread over all the inbox files the daemon made, and only over those.
    assert.deepEqual(
      results.filter((r) => r.stderr.includes('does not exist')),
      [],
    );
    // A hook that waited too long for its file's lock spooled instead, naming the file it tried.
    for (const file of hookInboxFiles(queueFile)) {
      const tried = results.filter((r) => r.stderr.includes(`queue inbox ${file}: `)).length;
      assert.ok(inboxOf(file).length + tried > 0, `no hook wrote or tried ${file}`);
    }
    // Whatever had to wait too long went to the spool instead: together, each path exactly once.
    const spooled = readSpool(`${queueFile}.spool`).entries.map((entry) => entry.path);
    const queued = [...inbox(queueFile), ...spooled].sort();
    assert.deepEqual(queued, [...expected].sort());
    const queue = Queue.open(queueFile);
    queue.paths.ingestInbox();
    queue.paths.add(spooled.map((storePath) => ({ storePath, source: 'hook', enqueuedAt: Date.now() })));
    assert.equal(queue.paths.counts().pending, 64);
    queue.close();
  });

  for (const breakage of ['missing', 'corrupt'] as const) {
    it(
      `queue ${breakage}: exits 0 with one line on stderr, spools the path, and a daemon ` + `uploads it later`,
      async () => {
        const env = queueEnv();
        const overwriteInboxes = (content: string) => {
          for (const file of hookInboxFiles(env.CACHECTL_QUEUE)) {
            writeFileSync(file, content);
            for (const suffix of ['-wal', '-shm']) rmSync(`${file}${suffix}`, { force: true });
          }
        };
        if (breakage === 'corrupt') {
          createQueue(env);
          overwriteInboxes('definitely not SQLite '.repeat(200));
        }
        const result = await runHook(env, { OUT_PATHS: paths.lib });
        assert.equal(result.code, 0);
        const lines = result.stderr.trim().split('\n');
        assert.equal(lines.length, 1, result.stderr);
        assert.match(
          lines[0] ?? '',
          breakage === 'missing'
            ? regex(
                /^cachectl post-build-hook: queue inbox .*queue\.db\.inbox\/\d\.db: it does not exist \(is /,
                /cachectl daemon running\?\); spooled \/nix\/store\/.*-cachectl-lib-hook-.* to /,
                /.*queue\.db\.spool for the daemon$/,
              )
            : regex(
                /^cachectl post-build-hook: queue inbox .*queue\.db\.inbox\/\d\.db: .*file is not a database.*; /,
                /spooled .* to .*queue\.db\.spool for the daemon$/,
              ),
        );
        assert.deepEqual(readSpool(`${env.CACHECTL_QUEUE}.spool`).entries, [{ kind: 'out', path: paths.lib }]);
        assert.ok(existsSync(join(env.CACHECTL_GC_ROOTS, paths.lib.slice('/nix/store/'.length))), 'rooted even so');

        // Not lost: the daemon (on a good queue beside the broken one's spool) takes the spool in and uploads.
        if (breakage === 'corrupt') overwriteInboxes('');
        const cacheDir = tempDir('hook-cache');
        await uploadWithDaemon(env, cacheDir, [paths.lib]);
        assert.deepEqual(readdirSync(`${env.CACHECTL_QUEUE}.spool`), []);
      },
    );
  }

  it(
    'queue locked by another process for 10 s: returns promptly, spooled, and the path is ' + 'uploaded later',
    async () => {
      const env = queueEnv();
      const queueFile = createQueue(env);
      // Another writer holds the write lock of every inbox for 10 s.
      const locker = spawn(
        process.execPath,
        [
          '-e',
          `const D = require(${JSON.stringify(createRequire(import.meta.url).resolve('better-sqlite3'))});
        const dbs = ${JSON.stringify(hookInboxFiles(queueFile))}.map((file) => new D(file));
        for (const db of dbs) db.exec('BEGIN IMMEDIATE');
        console.log('locked'); setTimeout(() => { for (const db of dbs) { db.exec('COMMIT'); db.close(); } }, 10000);`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      await new Promise<void>((resolve) =>
        locker.stdout.once('data', () => {
          resolve();
        }),
      );
      const result = await runHook(env, { OUT_PATHS: paths.tiny });
      assert.equal(result.code, 0);
      assert.ok(result.ms < 3000, `the hook took ${result.ms} ms while the queue was locked`);
      assert.match(
        result.stderr,
        regex(
          /^cachectl post-build-hook: queue .*: .*database is locked.*; spooled /,
          /\/nix\/store\/.*-cachectl-tiny-hook-.* to .* for the daemon\n$/,
        ),
      );
      await new Promise((resolve) => locker.once('exit', resolve));
      await uploadWithDaemon(env, tempDir('hook-cache'), [paths.tiny]);
    },
  );

  /** Runs a daemon until `roots` are uploaded to a file:// cache, then checks the cache with Nix. */
  async function uploadWithDaemon(env: NodeJS.ProcessEnv, cacheDir: string, roots: string[]): Promise<void> {
    const daemon = startDaemon(['--to', `file://${cacheDir}`, '--secret-key-file', key.secretFile], env);
    try {
      await waitFor('the narinfos', () =>
        roots.every((root) =>
          existsSync(join(cacheDir, `${root.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`)),
        )
          ? true
          : undefined,
      );
      const verify = await nixVerify(`file://${cacheDir}`, key.publicKey, roots);
      assert.equal(verify.code, 0, verify.stderr);
      // Uploaded, so no longer a GC root.
      await waitFor(
        'the GC roots to go',
        () => (readdirSync(String(env['CACHECTL_GC_ROOTS'])).length === 0 ? true : undefined),
        10_000,
      );
    } finally {
      daemon.child.kill('SIGTERM');
      assert.deepEqual(await daemon.exited, { code: 0, signal: null }, daemon.stderr());
    }
  }
});
