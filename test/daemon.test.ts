import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { openCache } from '../src/cache/open.js';
import { mapLimit } from '../src/core/limit.js';
import { cacheProblems, observeCache } from './helpers/cache.js';
import {
  HOOK,
  notifyReceiver,
  queueEnv,
  queueStatus as status,
  settled,
  startDaemon,
  stopDaemon,
  waitFor,
} from './helpers/daemon.js';
import {
  buildFixtures,
  cachectl,
  execFileAsync,
  newKey,
  nixClosure,
  nixCopyFrom,
  nixVerify,
  requireNix,
  run,
  tempDir,
  type Key,
  withNix,
} from './helpers/nix.js';
import { regex } from './helpers/regex.js';
import { startS3rver, startTestS3, useS3Here, type S3Server } from './helpers/s3rver.js';
import { parseExposition } from './helpers/metrics.js';

const FIXTURES = new URL('../../test/fixtures/closures.nix', import.meta.url).pathname;

/** Paths hooks queue while the cache is down, in the outage test. */
const OUTAGE_PATHS = 1000;

describe(withNix('cachectl daemon'), () => {
  let key: Key;
  let s3: S3Server;

  before(async () => {
    requireNix();
    key = await newKey('cachectl-daemon-test-1');
    s3 = await startTestS3();
    useS3Here(s3);
  });
  after(async () => s3.stop());

  for (const target of ['file', 's3'] as const) {
    it(
      `uploads what nix-build builds through the hook to ${target}://: Nix verifies and substitutes ` + `every closure`,
      async () => {
        const nonce = `daemon-e2e-${target}-${Date.now()}`;
        const dir = tempDir('daemon-cache');
        const to = target === 'file' ? `file://${dir}` : s3.cacheUrl(nonce);
        const nixUrl = target === 'file' ? `file://${dir}` : s3.nixUrl(nonce);
        const env = queueEnv(target === 's3' ? s3.env : {});
        const daemon = startDaemon(['--to', to, '--secret-key-file', key.secretFile], env);
        await daemon.waitForLog('ready');

        const build = await run(
          'nix-build',
          [
            FIXTURES,
            '--no-out-link',
            '--argstr',
            'nonce',
            nonce,
            '-A',
            'top',
            '-A',
            'multi.out',
            '-A',
            'tree',
            '--post-build-hook',
            HOOK,
          ],
          env,
        );
        assert.equal(build.code, 0, build.stderr);
        assert.doesNotMatch(build.stderr, /cachectl post-build-hook:/, 'the hook had something to complain about');
        const roots = build.stdout.trim().split('\n');
        const closure = await nixClosure(roots);
        // lib, app, top, multi (two outputs) and tree: six outputs of five builds, each queued by its hook
        const report = await settled(env, 6);
        assert.deepEqual(report.counts, { pending: 0, uploading: 0, done: 6, failed: 0, inbox: 0, spoolFiles: 0 });
        assert.equal(report.daemon.alive, true);
        assert.equal(
          report.daemon.status?.uploadedPaths,
          closure.length + 1,
          'the closures and the dev output, each once',
        );

        const verify = await nixVerify(nixUrl, key.publicKey, roots);
        assert.equal(verify.code, 0, verify.stderr);
        const copy = await nixCopyFrom(nixUrl, key.publicKey, roots);
        assert.equal(copy.code, 0, copy.stderr);
        await waitFor(
          'GC roots to go',
          () => (readdirSync(env.CACHECTL_GC_ROOTS).length === 0 ? true : undefined),
          10_000,
        );

        await stopDaemon(daemon);
        assert.ok(daemon.logs.some((line) => line.msg === 'draining'));
        assert.equal((await status(env)).daemon.alive, false);
      },
    );
  }

  it(
    'survives kill -9 at random moments of a large upload: every path arrives, no reader ever sees a ' +
      'broken closure',
    async () => {
      const nonce = `daemon-kill-${Date.now()}`;
      const paths = await buildFixtures(['big', 'chain', 'top'], { nonce, bigMb: 40, chainLength: 30 });
      const to = s3.cacheUrl(nonce);
      const env = queueEnv(s3.env);
      const enqueue = await cachectl(['enqueue', paths.big, paths.chain, paths.top], env);
      assert.equal(enqueue.code, 0, enqueue.stderr);
      const backend = await openCache(parseCacheUrl(to));
      const observer = observeCache(backend);
      const kills: number[] = [];
      try {
        for (let round = 0; round < 4; round++) {
          const daemon = startDaemon(['--to', to, '--secret-key-file', key.secretFile, '--jobs', '4'], env);
          await daemon.waitForLog('ready');
          const report = await status(env);
          if (report.counts.done === 3) {
            await stopDaemon(daemon);
            break;
          }
          const delay = 100 + Math.floor(Math.random() * 900);
          kills.push(delay);
          await sleep(delay);
          daemon.child.kill('SIGKILL');
          await daemon.exited;
        }
        const daemon = startDaemon(['--to', to, '--secret-key-file', key.secretFile], env);
        const report = await settled(env, 3);
        assert.equal(report.counts.done, 3, JSON.stringify(report));
        await stopDaemon(daemon);
      } finally {
        const observed = await observer.stop();
        assert.deepEqual(observed.problems, [], `kills after ${kills.join(', ')} ms`);
        assert.ok(observed.rounds > 3, `the observer looked only ${observed.rounds} times`);
      }
      assert.deepEqual((await cacheProblems(backend)).problems, []);
      await backend.close();
      const verify = await nixVerify(s3.nixUrl(nonce), key.publicKey, [paths.big, paths.chain, paths.top]);
      assert.equal(verify.code, 0, verify.stderr);
    },
  );

  it('marks a root done as soon as its closure is published, not when the rest of its batch is', async () => {
    const nonce = `daemon-early-${Date.now()}`;
    const paths = await buildFixtures(['tiny', 'big'], { nonce, bigMb: 60 });
    const env = queueEnv(s3.env);
    assert.equal((await cachectl(['enqueue', paths.big, paths.tiny], env)).code, 0);
    const daemon = startDaemon(['--to', s3.cacheUrl(nonce), '--jobs', '4'], env);
    await daemon.waitForLog('ready');
    // One batch: watch the queue until the large root is done; the small one must be done well before.
    const db = new Database(env.CACHECTL_QUEUE, { readonly: true });
    const seen = new Set<string>();
    await waitFor(
      'the large root to be done',
      () => {
        const states = Object.fromEntries(
          (db.prepare('SELECT store_path, state FROM paths').all() as { store_path: string; state: string }[]).map(
            (row) => [row.store_path, row.state],
          ),
        );
        seen.add(`tiny ${states[paths.tiny]}, big ${states[paths.big]}`);
        return states[paths.big] === 'done' ? true : undefined;
      },
      120_000,
    );
    db.close();
    assert.ok(seen.has('tiny done, big uploading'), [...seen].join('; '));
    // The batch's log line comes after its roots are done: wait for it.
    const batch = await daemon.waitForLog('uploaded');
    assert.equal(batch['roots'], 2, 'both roots went up in one batch');
    await stopDaemon(daemon);
  });

  it('keeps queued paths from garbage collection until uploaded, then lets go', async () => {
    const paths = await buildFixtures(['tiny'], { nonce: `daemon-gc-${Date.now()}` });
    const env = queueEnv();
    assert.equal((await cachectl(['enqueue', paths.tiny], env)).code, 0);
    const refused = await run('nix-store', ['--delete', paths.tiny]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /still alive/);
    const dir = tempDir('daemon-cache');
    const daemon = startDaemon(['--to', `file://${dir}`], env);
    await settled(env, 1);
    await waitFor(
      'the GC root to go',
      () => (readdirSync(env.CACHECTL_GC_ROOTS).length === 0 ? true : undefined),
      10_000,
    );
    await stopDaemon(daemon);
    const deleted = await run('nix-store', ['--delete', paths.tiny]);
    assert.equal(deleted.code, 0, deleted.stderr);
  });

  it(
    'fails a path deleted before upload and a corrupt one with a clear last_error; retry ' + 'brings them back',
    async () => {
      const nonce = `daemon-fail-${Date.now()}`;
      const paths = await buildFixtures(['tiny', 'lib'], { nonce });
      const env = queueEnv();
      assert.equal((await cachectl(['enqueue', paths.tiny, paths.lib], env)).code, 0);
      // Deleted behind the queue's back (its GC root removed first), and corrupted behind Nix's back.
      for (const link of readdirSync(env.CACHECTL_GC_ROOTS))
        if (paths.tiny.endsWith(link)) await run('rm', [join(env.CACHECTL_GC_ROOTS, link)]);
      const deleted = await run('nix-store', ['--delete', paths.tiny]);
      assert.equal(deleted.code, 0, deleted.stderr);
      const libFile = `${paths.lib}/lib/libdemo.txt`;
      const original = readFileSync(libFile);
      chmodSync(libFile, 0o644);
      writeFileSync(libFile, 'tampered\n');

      const dir = tempDir('daemon-cache');
      const daemon = startDaemon(['--to', `file://${dir}`, '--secret-key-file', key.secretFile], env);
      const report = await settled(env, 2);
      const failed = Object.fromEntries(report.failed.map((f) => [f.storePath, f.lastError]));
      assert.match(
        failed[paths.tiny] ?? '',
        /^PATH_NOT_VALID: .* is no longer in the local Nix store .*; build it again, then run cachectl retry$/,
      );
      assert.match(failed[paths.lib] ?? '', /^NAR_HASH_MISMATCH: .* does not match the Nix database/);
      const human = await cachectl(['status'], env);
      assert.match(human.stdout, /2 failed/);
      assert.match(human.stdout, /cachectl retry --all/);
      assert.deepEqual(
        readdirSync(dir).filter((name) => name.endsWith('.narinfo')),
        [],
        'nothing of them was published',
      );

      // Fixed: rebuilt, repaired. Retry one by name and the rest with --all.
      await buildFixtures(['tiny'], { nonce });
      writeFileSync(libFile, original);
      chmodSync(libFile, 0o444);
      const retried = await cachectl(['retry', paths.tiny], env);
      assert.equal(retried.code, 0, retried.stderr);
      const notFailed = await cachectl(['retry', paths.tiny], env);
      assert.equal(notFailed.code, 1);
      assert.match(
        notFailed.stderr,
        /not failed, so not retried: .*-cachectl-tiny-daemon-fail-.* \((pending|uploading|done)\)/,
      );
      assert.equal((await cachectl(['retry', '--all'], env)).code, 0);
      const after = await settled(env, 2);
      assert.equal(after.counts.done, 2, JSON.stringify(after));
      const verify = await nixVerify(`file://${dir}`, key.publicKey, [paths.tiny, paths.lib]);
      assert.equal(verify.code, 0, verify.stderr);
      await stopDaemon(daemon);
    },
  );

  it('waits out an S3 outage without using up attempts, then uploads the 1,000 paths hooks queued meanwhile', async () => {
    const server = await startS3rver();
    const port = server.port;
    const dataDir = server.dir;
    let restarted: S3Server | undefined;
    try {
      const paths = await buildFixtures(['top'], { nonce: `daemon-outage-${Date.now()}` });
      const dir = tempDir('outage-paths');
      const files = Array.from({ length: OUTAGE_PATHS }, (_, i) => {
        const file = join(dir, `cachectl-outage-${i}`);
        writeFileSync(file, `queued while the cache was down: ${i} ${Date.now()}\n`);
        return file;
      });
      const tiny = (await execFileAsync('nix-store', ['--add', ...files], { maxBuffer: 1 << 24 })).stdout
        .trim()
        .split('\n');
      const env = queueEnv(server.env);
      const daemon = startDaemon(
        ['--to', server.cacheUrl(), '--secret-key-file', key.secretFile, '--metrics-listen', '127.0.0.1:0'],
        env,
      );
      const metricsUrl = String((await daemon.waitForLog('serving metrics'))['metrics']);
      await daemon.waitForLog('ready');
      await server.stop({ keepData: true });
      assert.equal((await cachectl(['enqueue', paths.top], env)).code, 0);
      const paused = await waitFor('the daemon to pause', async () => {
        const report = await status(env);
        return report.daemon.status?.state === 'paused' ? report : undefined;
      });
      assert.match(
        String(paused.daemon.status?.pauseReason),
        /^CACHE_UNREACHABLE: .*127\.0\.0\.1.* is the endpoint right and the server up\?/,
      );
      // The pause is counted under its code (the state may already be a try again, so it is not read here).
      const { samples } = parseExposition(await (await fetch(metricsUrl)).text());
      assert.ok((samples.get('cachectl_daemon_pauses_total{code="CACHE_UNREACHABLE"}') ?? 0) >= 1);
      // Builds go on while the cache is down: a hook for each path, 8 at a time.
      await mapLimit(tiny, 8, async (path) => {
        const queued = await run(HOOK, [], { ...env, OUT_PATHS: path });
        assert.equal(queued.code, 0, queued.stderr);
      });
      const during = await status(env);
      assert.equal(during.counts.failed, 0);
      assert.equal(during.counts.done, 0);
      const { pending, uploading, inbox, spoolFiles } = during.counts;
      assert.equal(pending + uploading + inbox + spoolFiles, OUTAGE_PATHS + 1);

      restarted = await startS3rver('nix-cache', { port, dir: dataDir });
      const after = await settled(env, OUTAGE_PATHS + 1, 300_000);
      assert.deepEqual({ done: after.counts.done, failed: after.counts.failed }, { done: OUTAGE_PATHS + 1, failed: 0 });
      await daemon.waitForLog('trouble over: uploading again');
      const verify = await nixVerify(server.nixUrl(), key.publicKey, [paths.top, ...tiny]);
      assert.equal(verify.code, 0, verify.stderr);
      await stopDaemon(daemon);
    } finally {
      await (restarted ?? server).stop();
    }
  });

  it(
    "pauses while Nix's database cannot be read, naming the file and the fix, using up no try; uploads " +
      'once it can',
    async () => {
      const { tiny } = await buildFixtures(['tiny'], { nonce: `daemon-nix-db-${Date.now()}` });
      // A copy of Nix's database, in WAL mode without -wal and -shm (as when no Nix process has it open), on a
      // read-only mount: reading it means creating those files, which cannot be done there.
      const state = tempDir('nix-state');
      const dbDir = join(state, 'db');
      mkdirSync(dbDir);
      await execFileAsync('sqlite3', ['/nix/var/nix/db/db.sqlite', `VACUUM INTO '${dbDir}/db.sqlite'`]);
      await execFileAsync('sqlite3', [`${dbDir}/db.sqlite`, 'PRAGMA journal_mode = WAL']);
      await execFileAsync('mount', ['--bind', dbDir, dbDir]);
      try {
        await execFileAsync('mount', ['-o', 'remount,ro,bind', dbDir]);
        const env = queueEnv({ NIX_STATE_DIR: state });
        const dir = tempDir('daemon-cache');
        const daemon = startDaemon(['--to', `file://${dir}`, '--secret-key-file', key.secretFile], env);
        await daemon.waitForLog('ready');
        const queued = await run(HOOK, [], { ...env, OUT_PATHS: tiny });
        assert.deepEqual({ code: queued.code, stderr: queued.stderr }, { code: 0, stderr: '' });
        const paused = await daemon.waitForLog(
          'cache or machine trouble: pausing',
          (line) => line['code'] === 'NIX_STORE_UNREADABLE',
        );
        const db = `${dbDir}/db.sqlite`;
        assert.equal(
          paused['err'],
          `cannot read the Nix store database ${db}: unable to open database file (SQLITE_CANTOPEN); while no Nix ` +
            `process has it open, ` +
            `reading it means creating ${db}-wal and -shm: cachectl needs write access to ${dbDir} (under systemd: ` +
            `ReadWritePaths=-${dbDir}, as systemd/cachectl.service has)`,
        );
        const during = await waitFor('the pause in the status', async () => {
          const report = await status(env);
          return report.daemon.status?.pauseReason !== undefined ? report : undefined;
        });
        assert.equal(during.daemon.status?.pauseReason, `NIX_STORE_UNREADABLE: ${paused['err']}`);
        assert.equal(during.counts.failed, 0);

        // Fixed as the unit fixes it: the directory made writable.
        await execFileAsync('mount', ['-o', 'remount,rw,bind', dbDir]);
        await settled(env, 1);
        const queue = new Database(env.CACHECTL_QUEUE, { readonly: true });
        // Each paused try was handed back: only the one that worked counts.
        assert.deepEqual(queue.prepare('SELECT state, attempts FROM paths WHERE store_path = ?').get(tiny), {
          state: 'done',
          attempts: 1,
        });
        queue.close();
        assert.deepEqual(
          daemon.logs.filter((line) => line.msg === 'upload failed'),
          [],
        );
        await daemon.waitForLog('trouble over: uploading again');
        const verify = await nixVerify(`file://${dir}`, key.publicKey, [tiny]);
        assert.equal(verify.code, 0, verify.stderr);
        await stopDaemon(daemon);
      } finally {
        // lazily: a daemon of a failed test may still have the database open
        await execFileAsync('umount', ['--lazy', dbDir]);
      }
    },
  );

  it('refuses to start a second daemon on the same queue', async () => {
    const env = queueEnv();
    const dir = tempDir('daemon-cache');
    const first = startDaemon(['--to', `file://${dir}`], env);
    await first.waitForLog('ready');
    const second = await cachectl(['daemon', '--to', `file://${dir}`], env);
    assert.equal(second.code, 1);
    assert.match(
      second.stderr,
      regex(
        /^cachectl: another cachectl daemon \(pid \d+ on .*\) is using the queue .*queue\.db; stop it first, /,
        /or use another --queue\n$/,
      ),
    );
    await stopDaemon(first);
  });

  it('speaks sd_notify to a real NOTIFY_SOCKET: READY, STATUS, WATCHDOG, STOPPING', async () => {
    const receiver = notifyReceiver();
    try {
      const { socket, messages, has } = receiver;
      const env = queueEnv({ NOTIFY_SOCKET: socket, WATCHDOG_USEC: '400000' });
      const daemon = startDaemon(['--to', `file://${tempDir('daemon-cache')}`], env);
      await waitFor('READY=1', () => (has('READY=1') ? true : undefined), 20_000);
      await waitFor(
        'two WATCHDOG=1',
        () => (messages.filter((m) => m.includes('WATCHDOG=1')).length >= 2 ? true : undefined),
        20_000,
      );
      assert.ok(has('STATUS=idle: 0 pending, 0 uploading, 0 done, 0 failed'), messages.join('\n'));
      daemon.child.kill('SIGTERM');
      assert.deepEqual(await daemon.exited, { code: 0, signal: null });
      // Sent synchronously before the exit: already in the socket's queue.
      await waitFor('STOPPING=1', () => (has('STOPPING=1') ? true : undefined), 10_000);
      assert.ok(has('STATUS=draining: 0 pending, 0 uploading'), messages.join('\n'));
    } finally {
      receiver.close();
    }
  });

  it('a second signal exits at once; the next daemon takes the interrupted work back', async () => {
    const paths = await buildFixtures(['big'], { nonce: `daemon-signal-${Date.now()}`, bigMb: 200 });
    const env = queueEnv(s3.env);
    const to = s3.cacheUrl(`signal-${Date.now()}`);
    assert.equal((await cachectl(['enqueue', paths.big], env)).code, 0);
    const daemon = startDaemon(['--to', to], env);
    await daemon.waitForLog('ready');
    await waitFor('the upload to start', async () => ((await status(env)).counts.uploading === 1 ? true : undefined));
    daemon.child.kill('SIGTERM');
    await daemon.waitForLog('draining');
    daemon.child.kill('SIGTERM');
    assert.deepEqual(await daemon.exited, { code: 1, signal: null });
    assert.ok(daemon.logs.some((line) => line.msg === 'second signal: exiting without draining'));
    const next = startDaemon(['--to', to], env);
    await settled(env, 1);
    assert.equal((await status(env)).counts.done, 1);
    await stopDaemon(next);
  });
});
