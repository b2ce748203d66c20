import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheBackend } from '../src/cache/backend.js';
import { openCache } from '../src/cache/open.js';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { hookInboxFiles } from '../src/queue/schema.js';
import { ensureCacheInfo } from '../src/upload/push.js';
import { cacheProblems, observeCache, putNarInfoChain } from './helpers/cache.js';
import { HOOK, queueEnv, queueStatus, settled, startDaemon, stopDaemon, waitFor } from './helpers/daemon.js';
import { FAULTS, startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import {
  buildDag,
  buildFixtures,
  CACHECTL,
  cachectl,
  newKey,
  nixClosure,
  nixVerify,
  requireNix,
  run,
  tempDir,
  type Key,
  withNix,
} from './helpers/nix.js';
import { regex } from './helpers/regex.js';
import { startS3rver, useS3Here, type S3rver } from './helpers/s3rver.js';

/** The seed of the fault proxy's choices; CACHECTL_FAULT_SEED replays a failed run. */
const SEED = Number(process.env['CACHECTL_FAULT_SEED'] ?? Math.floor(Math.random() * 2 ** 31));

/** Highest attempt count of any path in the queue of `env`, read with sqlite3 as an operator would. */
async function maxAttempts(env: NodeJS.ProcessEnv): Promise<number> {
  const result = await run('sqlite3', [env['CACHECTL_QUEUE'] as string, 'SELECT max(attempts) FROM paths']);
  assert.equal(result.code, 0, result.stderr);
  return Number(result.stdout.trim());
}

let key: Key;
let s3: S3rver;

before(async () => {
  requireNix();
  key = await newKey('cachectl-reliability-1');
  s3 = await startS3rver();
  useS3Here(s3);
});
after(async () => s3.stop());

describe(withNix(`reliability: S3 faults (seed ${SEED})`), () => {
  /** The cache URL through `proxy`, with a short request timeout so that stalls cost seconds, not minutes. */
  const viaProxy = (proxy: FaultProxy, prefix: string) =>
    `s3://${s3.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}` +
    `&region=us-east-1&prefix=${prefix}&request-timeout=2s`;

  it(
    '20% of requests fail (500, 503 SlowDown, reset, stall, truncated response): 301 paths (one multipart) all ' +
      'arrive, Nix verifies every closure, retries stay bounded',
    async () => {
      const nonce = `faults-${Date.now()}`;
      // 300 small paths, and one NAR large enough for a multipart upload
      const paths = [...(await buildDag(nonce, 300)), (await buildFixtures(['big'], { nonce, bigMb: 40 })).big];
      const env = queueEnv(s3.env);
      const enqueue = await cachectl(['enqueue', ...paths], env);
      assert.equal(enqueue.code, 0, enqueue.stderr);
      const proxy = await startFaultProxy(s3.port, { rate: 0.2, seed: SEED });
      const daemon = startDaemon(
        ['--to', viaProxy(proxy, nonce), '--secret-key-file', key.secretFile, '--jobs', '8'],
        env,
      );
      let report;
      try {
        report = await settled(env, paths.length, 480_000);
        await stopDaemon(daemon);
      } finally {
        daemon.child.kill('SIGKILL'); // when the test failed; after stopDaemon it has exited
        await proxy.stop();
      }
      const { requests, byMethod, stateWrites, injected } = proxy.stats;
      const summary = JSON.stringify({ requests, byMethod, stateWrites, injected, counts: report.counts });
      assert.equal(report.counts.done, paths.length, summary);
      assert.equal(report.counts.failed, 0, summary);
      for (const fault of FAULTS) assert.ok(injected[fault] > 0, `no ${fault} was injected: ${summary}`);
      // Bounded: each path needs a NAR, listing, log and narinfo PUT; faults and the batches they spoil cost at most
      // as many again. Lease writes are left out: they come per batch, and pauses make more batches.
      assert.ok((byMethod['PUT'] ?? 0) - stateWrites <= 8 * paths.length + 20, `too many PUTs: ${summary}`);
      assert.ok((await maxAttempts(env)) <= 3, `a path was tried more than 3 times: ${summary}`);

      const backend = await openCache(parseCacheUrl(s3.cacheUrl(nonce)));
      const { narinfos, problems } = await cacheProblems(backend);
      await backend.close();
      assert.deepEqual(problems, []);
      assert.equal(narinfos, paths.length);
      const verify = await nixVerify(s3.nixUrl(nonce), key.publicKey, paths);
      assert.equal(verify.code, 0, verify.stderr);
      console.log(`# faults: ${summary}`);
    },
  );

  it(
    'a server answering only 503 SlowDown slows the uploader to a stop, uses up no attempt, and honours ' +
      'Retry-After',
    async () => {
      const nonce = `throttle-${Date.now()}`;
      const paths = await buildDag(nonce, 20);
      const env = queueEnv(s3.env);
      const proxy = await startFaultProxy(s3.port, { rate: 0, faults: ['slowDown'], seed: SEED, retryAfterSeconds: 3 });
      const daemon = startDaemon(
        ['--to', viaProxy(proxy, nonce), '--secret-key-file', key.secretFile, '--jobs', '8'],
        env,
      );
      try {
        await daemon.waitForLog('ready');
        proxy.rate = 1;
        assert.equal((await cachectl(['enqueue', ...paths], env)).code, 0);
        const paused = await daemon.waitForLog(
          'cache or machine trouble: pausing',
          (line) => line['code'] === 'CACHE_THROTTLED',
        );
        assert.ok(
          (paused['waitMs'] as number) >= 2900,
          `paused ${String(paused['waitMs'])} ms, less than Retry-After asks`,
        );
        assert.ok((paused['jobs'] as number) < 8, 'throttling did not reduce the uploads in flight');
        // Throttled for a while: nothing fails, and no attempt is used up.
        await waitFor(
          'two pauses',
          () =>
            daemon.logs.filter((line) => line.msg === 'cache or machine trouble: pausing').length >= 2
              ? true
              : undefined,
          30_000,
        );
        const during = await queueStatus(env);
        assert.deepEqual(
          [during.counts.done, during.counts.failed],
          [0, 0],
          'a path was uploaded or failed while every request was throttled',
        );
        proxy.rate = 0;
        const report = await settled(env, paths.length, 120_000);
        assert.deepEqual([report.counts.done, report.counts.failed], [paths.length, 0]);
        assert.ok((await maxAttempts(env)) <= 1, 'throttling used up attempts');
        await stopDaemon(daemon);
      } finally {
        daemon.child.kill('SIGKILL'); // when the test failed; after stopDaemon it has exited
        await proxy.stop();
      }
      const verify = await nixVerify(s3.nixUrl(nonce), key.publicKey, paths);
      assert.equal(verify.code, 0, verify.stderr);
    },
  );
});

/** Narinfos without exactly one `Sig` line, by `keyName`. */
async function signatureProblems(backend: CacheBackend, keyName: string): Promise<string[]> {
  const problems: string[] = [];
  for await (const page of backend.list('')) {
    for (const { key: name } of page.filter((entry) => entry.key.endsWith('.narinfo'))) {
      const sigs = ((await backend.get(name))?.toString('utf8') ?? '')
        .split('\n')
        .filter((line) => line.startsWith('Sig: '));
      if (sigs.length !== 1 || !sigs[0]?.startsWith(`Sig: ${keyName}:`))
        problems.push(`${name}: ${sigs.length} Sig lines: ${sigs.join(' | ')}`);
    }
  }
  return problems;
}

/** Old garbage for the GC to sweep while daemons upload: a narinfo chain with its NARs, backdated two hours. */
async function plantGarbage(backend: CacheBackend, prefix: string, length: number): Promise<void> {
  const keys = await putNarInfoChain(backend, 'garbage', length);
  const old = new Date(Date.now() - 2 * 3600_000);
  for (const name of keys) utimesSync(join(s3.dir, s3.bucket, prefix, `${name}._S3rver_object`), old, old);
}

describe(withNix('reliability: crashes'), () => {
  it(
    'kill -9 of the daemon at 30 random points and of a GC mid-sweep, with hooks queueing meanwhile: nothing lost, ' +
      'nothing corrupt or dangling, one Sig each',
    async () => {
      const nonce = `torture-${Date.now()}`;
      const fixtures = await buildFixtures(['big', 'chain'], { nonce, bigMb: 40, chainLength: 15 });
      const roots = [fixtures.big, fixtures.chain, ...(await buildDag(nonce, 120))];
      const to = s3.cacheUrl(nonce);
      const env = queueEnv(s3.env);
      const backend = await openCache(parseCacheUrl(to));
      // The queue and its inboxes exist as a first daemon leaves them; the garbage predates everything.
      assert.equal((await cachectl(['enqueue', fixtures.big], env)).code, 0);
      await ensureCacheInfo(backend, '/nix/store');
      await plantGarbage(backend, nonce, 200);
      const observer = observeCache(backend);
      const gcArgs = [
        'gc',
        '--to',
        to,
        '--older-than',
        '1h',
        '--grace',
        '0s',
        '--metadata-cache',
        join(tempDir('gc-meta'), 'm.db'),
      ];
      const kills: { ms: number; lastLog: string; uploading: number; gcKilled: boolean }[] = [];
      // eslint-disable-next-line no-useless-assignment -- the report in the finally reads it when the run fails early
      let deadLettered = 0;
      try {
        // Hooks queue the rest a few paths at a time while the daemon is killed again and again.
        const unqueued = roots.slice(1);
        for (let round = 0; round < 30; round++) {
          const batch = unqueued.splice(0, 5);
          const hooks = batch.length === 0 ? [] : [run(HOOK, [], { ...env, OUT_PATHS: batch.join(' '), DRV_PATH: '' })];
          const daemon = startDaemon(['--to', to, '--secret-key-file', key.secretFile, '--jobs', '8'], env);
          // Every fifth round a GC runs too, and is killed at the same moment.
          const gc =
            round % 5 === 2 ? spawn(process.execPath, [CACHECTL, ...gcArgs], { env, stdio: 'ignore' }) : undefined;
          // Half the kills come at any moment of the first 1.8 s (startup and its queue transactions included), half
          // within 0.4 s of the daemon being ready, while it uploads what the hooks just queued.
          const started = Date.now();
          if (round % 2 === 0) await sleep(300 + Math.floor(Math.random() * 1500));
          else await daemon.waitForLog('ready', undefined, 30_000).then(() => sleep(Math.floor(Math.random() * 400)));
          const ms = Date.now() - started;
          daemon.child.kill('SIGKILL');
          gc?.kill('SIGKILL');
          await daemon.exited;
          for (const hook of await Promise.all(hooks)) assert.deepEqual([hook.code, hook.stderr], [0, '']);
          const report = await queueStatus(env);
          kills.push({
            ms,
            lastLog: daemon.logs.at(-1)?.msg ?? '(none)',
            uploading: report.counts.uploading,
            gcKilled: gc !== undefined,
          });
        }
        assert.deepEqual(unqueued, [], 'the rounds did not queue every path');
        const daemon = startDaemon(['--to', to, '--secret-key-file', key.secretFile], env);
        // Once it is ready it has taken back what the last daemon left: the verdicts on the last kill are in too.
        await daemon.waitForLog('ready');
        // A path in flight at 8 deaths of the daemon is set aside as a likely cause (an operator's `retry` brings
        // it back): the only failures allowed, and none is lost.
        const afterKills = await queueStatus(env);
        for (const failed of afterKills.failed)
          assert.match(failed.lastError, /^the daemon stopped \d+ times while uploading this path/);
        deadLettered = afterKills.failed.length;
        assert.equal((await cachectl(['retry', '--all'], env)).code, 0);
        const report = await settled(env, roots.length, 300_000);
        assert.deepEqual([report.counts.done, report.counts.failed], [roots.length, 0], JSON.stringify(report));
        await stopDaemon(daemon);
        const gc = await cachectl([...gcArgs, '--json'], env);
        assert.equal(gc.code, 0, gc.stderr);
      } finally {
        const observed = await observer.stop();
        assert.deepEqual(observed.problems, [], `a reader saw a broken cache; kills: ${JSON.stringify(kills)}`);
      }
      const midUpload = kills.filter((kill) => kill.uploading > 0).length;
      console.log(
        `# kills: ${kills.length} (${midUpload} with paths uploading, ${deadLettered} paths set aside after 8); last ` +
          `log lines: ${JSON.stringify(countBy(kills.map((kill) => kill.lastLog)))}`,
      );
      assert.ok(midUpload >= 5, `only ${midUpload} kills came mid-upload: ${JSON.stringify(kills)}`);

      // Nothing lost, corrupt or dangling; every narinfo signed once; the garbage and the debris of kills are gone.
      assert.deepEqual((await cacheProblems(backend)).problems, []);
      assert.deepEqual(await signatureProblems(backend, 'cachectl-reliability-1'), []);
      const keys: string[] = [];
      for await (const page of backend.list('')) keys.push(...page.map((entry) => entry.key));
      for await (const page of backend.list('nar/')) keys.push(...page.map((entry) => entry.key));
      const closure = await nixClosure(roots);
      assert.equal(
        keys.filter((name) => name.endsWith('.narinfo')).length,
        closure.length,
        'narinfos other than the closure are left',
      );
      assert.equal(
        keys.filter((name) => name.startsWith('nar/')).length,
        closure.length,
        'NARs no narinfo names are left',
      );
      await backend.close();
      const verify = await nixVerify(s3.nixUrl(nonce), key.publicKey, roots);
      assert.equal(verify.code, 0, verify.stderr);
    },
  );

  it('a hook killed mid-insert leaves every inbox intact, and queues all of its paths or none', async () => {
    const paths = await buildDag(`hook-kill-${Date.now()}`, 80);
    const env = queueEnv();
    assert.equal((await cachectl(['enqueue', paths[0] as string], env)).code, 0); // creates the queue and its inboxes
    // Kills land at random points of a hook's run: delays spread over the time a whole hook takes on this
    // machine (measured first), so that about half the hooks die before they finish, however fast it is.
    const runHook = (batch: readonly string[]) => {
      const hook = spawn(HOOK, [], { env: { ...env, OUT_PATHS: batch.join(' ') }, stdio: 'ignore', detached: true });
      return { hook, exited: new Promise<number | null>((resolve) => hook.once('exit', resolve)) };
    };
    const started = performance.now();
    assert.equal(await runHook([paths[1] as string]).exited, 0);
    const hookMs = performance.now() - started;
    const killed: string[][] = [];
    for (let i = 2; i + 1 < paths.length && killed.length < 5; i += 2) {
      const batch = [paths[i] as string, paths[i + 1] as string];
      const { hook, exited } = runHook(batch);
      await sleep(Math.random() * hookMs);
      try {
        process.kill(-(hook.pid as number), 'SIGKILL'); // the hook and its sqlite3
      } catch {
        // it had finished
      }
      if ((await exited) === null) killed.push(batch);
    }
    assert.equal(
      killed.length,
      5,
      `only ${killed.length} hooks were killed before they finished (a hook takes ${hookMs.toFixed(0)} ms)`,
    );
    for (const file of [env.CACHECTL_QUEUE, ...hookInboxFiles(env.CACHECTL_QUEUE)]) {
      const check = await run('sqlite3', [file, 'PRAGMA integrity_check']);
      assert.deepEqual([check.code, check.stdout.trim()], [0, 'ok'], file);
    }
    const daemon = startDaemon(
      ['--to', `file://${tempDir('hook-kill-cache')}`, '--secret-key-file', key.secretFile],
      env,
    );
    await daemon.waitForLog('ready');
    const queued = new Set<string>();
    await waitFor('the inboxes taken in', async () => {
      const result = await run('sqlite3', [env.CACHECTL_QUEUE, 'SELECT store_path FROM paths']);
      for (const line of result.stdout.trim().split('\n')) queued.add(line);
      const report = await queueStatus(env);
      return report.counts.inbox === 0 ? true : undefined;
    });
    await stopDaemon(daemon);
    for (const batch of killed) {
      const inQueue = batch.filter((path) => queued.has(path)).length;
      assert.ok(
        inQueue === 0 || inQueue === batch.length,
        `a killed hook queued ${inQueue} of its ${batch.length} paths`,
      );
    }
    console.log(
      `# hooks killed: ${killed.length}, of which ` +
        `${killed.filter((batch) => queued.has(batch[0] as string)).length} had committed`,
    );
  });
});

function countBy(values: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1;
  return counts;
}

describe(withNix('reliability: full disks'), () => {
  it(
    'the disk under the queue and spool fills up: the hook exits 0 and says why, the daemon keeps what is queued ' +
      'and carries on when space returns',
    async () => {
      const mount = tempDir('full-disk');
      const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mount]);
      assert.equal(mounted.code, 0, `cannot mount a tmpfs (the tests run as root): ${mounted.stderr}`);
      const paths = await buildDag(`full-disk-${Date.now()}`, 6);
      const env = { ...queueEnv(), CACHECTL_QUEUE: join(mount, 'queue.db') };
      const hook = (batch: readonly string[]) => run(HOOK, [], { ...env, OUT_PATHS: batch.join(' '), DRV_PATH: '' });
      const cache = tempDir('full-disk-cache'); // on another disk: only the queue's is full
      const daemon = startDaemon(['--to', `file://${cache}`, '--secret-key-file', key.secretFile], env);
      try {
        await daemon.waitForLog('ready');
        assert.deepEqual((await hook([paths[0] as string])).code, 0);
        await settled(env, 1);
        // Frozen, the daemon cannot take in what the next hook queues before the disk is full.
        daemon.child.kill('SIGSTOP');
        const queuedBefore = await hook([paths[1] as string]);
        assert.deepEqual([queuedBefore.code, queuedBefore.stderr], [0, '']);
        const fill = await run('dd', ['if=/dev/zero', `of=${join(mount, 'filler')}`, 'bs=64k']);
        assert.match(fill.stderr, /No space left on device/);

        const refused = await hook([paths[2] as string, paths[3] as string]);
        assert.equal(refused.code, 0, 'the hook failed the build');
        assert.match(
          refused.stderr,
          regex(
            /^cachectl post-build-hook: queue inbox \S+: .*(disk I\/O error|database or disk is full).*; the /,
            /spool \S+ is not writable either \(is the disk full\? df -h \S+\): upload \/nix\/store\/\S+ /,
            /\/nix\/store\/\S+ with cachectl push\n$/,
          ),
        );
        const enqueue = await cachectl(['enqueue', paths[4] as string], env);
        assert.equal(enqueue.code, 1);
        assert.match(
          enqueue.stderr,
          regex(
            /^cachectl: queue database \S+ cannot be written: .*; is its disk full\? \(df -h \S+\) Nothing /,
            /queued is lost: free space and try again\n$/,
          ),
        );

        daemon.child.kill('SIGCONT');
        const from = daemon.logs.length;
        await daemon.waitForLog('cannot take in queued paths', () => true, 30_000, from);
        await sleep(2000);
        assert.equal(daemon.child.exitCode, null, 'the daemon exited on a full disk');

        await rm(join(mount, 'filler'));
        // What was queued before the disk filled is uploaded without anyone's help.
        const report = await settled(env, 2, 60_000);
        assert.deepEqual([report.counts.done, report.counts.failed], [2, 0]);
        // The refused paths, queued again as the messages said, go through too.
        assert.equal((await hook([paths[2] as string, paths[3] as string])).code, 0);
        assert.equal((await cachectl(['enqueue', paths[4] as string], env)).code, 0);
        assert.deepEqual((await settled(env, 5, 60_000)).counts.done, 5);
        await stopDaemon(daemon);
      } finally {
        daemon.child.kill('SIGKILL');
        await run('umount', ['-l', mount]);
      }
      const verify = await nixVerify(`file://${cache}`, key.publicKey, paths.slice(0, 5));
      assert.equal(verify.code, 0, verify.stderr);
    },
  );
});

describe(withNix('security'), () => {
  it(
    'no secret in any output of a full run (keygen, hook, daemon, push, status, pin, gc, and failures), and the ' +
      'queue and spool are private',
    async () => {
      const nonce = `secrets-${Date.now()}`;
      const paths = await buildDag(nonce, 8);
      const awsSecret = `aws-secret-${Math.random().toString(36).slice(2)}-do-not-print`;
      const credentials = join(tempDir('aws'), 'credentials');
      writeFileSync(credentials, `[default]\naws_access_key_id = S3RVER\naws_secret_access_key = ${awsSecret}\n`, {
        mode: 0o600,
      });
      // the credentials come from the file alone
      const { AWS_ACCESS_KEY_ID: _id, AWS_SECRET_ACCESS_KEY: _secret, ...rest } = queueEnv();
      const env = { ...rest, AWS_SHARED_CREDENTIALS_FILE: credentials };
      const keyFile = join(tempDir('secret-key'), 'key.sec');
      const to = s3.cacheUrl(nonce);
      const outputs: string[] = [];
      const record = <T extends { stdout: string; stderr: string }>(result: T): T => {
        outputs.push(result.stdout, result.stderr);
        return result;
      };
      assert.equal(
        record(await cachectl(['keygen', 'secrets-test-1', '--secret-key-file', keyFile], env)).stdout !== '',
        true,
      );
      const secretKey = readFileSync(keyFile, 'utf8').trim();

      const daemon = startDaemon(['--to', to, '--secret-key-file', keyFile], env);
      await daemon.waitForLog('ready');
      assert.equal(
        record(await run(HOOK, [], { ...env, OUT_PATHS: paths.slice(0, 4).join(' '), DRV_PATH: '' })).code,
        0,
      );
      await settled(env, 4);
      assert.equal(record(await cachectl(['status'], env)).code, 0);
      assert.equal(record(await cachectl(['status', '--json'], env)).code, 0);
      await stopDaemon(daemon);
      outputs.push(daemon.stderr(), ...daemon.logs.map((line) => JSON.stringify(line)));
      assert.equal(
        record(await cachectl(['push', '--json', '--to', to, '--secret-key-file', keyFile, ...paths.slice(4)], env))
          .code,
        0,
      );
      assert.equal(record(await cachectl(['pin', 'kept', '--to', to, paths[0] as string], env)).code, 0);
      assert.equal(record(await cachectl(['gc', '--to', to, '--dry-run', '--json'], env)).code, 0);
      assert.equal(record(await cachectl(['gc', '--to', to, '--older-than', '0s', '--grace', '0s'], env)).code, 0);
      // Failures print their causes, never the secrets around them.
      const sloppy = join(tempDir('sloppy-key'), 'key.sec');
      writeFileSync(sloppy, `${secretKey}\n`, { mode: 0o644 });
      assert.equal(
        record(await cachectl(['push', '--to', to, '--secret-key-file', sloppy, paths[0] as string], env)).code,
        1,
      );
      const mangled = join(tempDir('mangled-key'), 'key.sec');
      writeFileSync(mangled, `${secretKey.slice(0, -3)}\n`, { mode: 0o600 });
      assert.equal(
        record(await cachectl(['push', '--to', to, '--secret-key-file', mangled, paths[0] as string], env)).code,
        1,
      );
      const wrongId = { ...env, AWS_ACCESS_KEY_ID: 'WRONG', AWS_SECRET_ACCESS_KEY: awsSecret };
      assert.equal(
        record(await cachectl(['push', '--to', to, '--secret-key-file', keyFile, paths[0] as string], wrongId)).code,
        1,
      );

      const all = outputs.join('\n');
      const secretPart = secretKey.slice(secretKey.indexOf(':') + 1);
      for (const [what, secret] of [
        ['the signing key', secretPart],
        ['half of the signing key', secretPart.slice(0, 32)],
        ['the AWS secret', awsSecret],
      ] as const) {
        assert.ok(!all.includes(secret), `${what} appears in the output`);
      }
      assert.match(all, /accessible to group or others/, 'the sloppy key file was not refused for its mode');
      assert.ok(all.length > 2000, 'too little output was collected to mean anything');

      // Private by default: the queue, its inboxes, the spool a hook makes, and what it spools.
      const mode = (file: string) => statSync(file).mode & 0o777;
      const queue = env.CACHECTL_QUEUE;
      assert.deepEqual(
        [mode(dirname(queue)), mode(queue), mode(`${queue}.inbox`), ...hookInboxFiles(queue).map(mode)],
        [0o700, 0o600, 0o700, ...hookInboxFiles(queue).map(() => 0o600)],
      );
      const spooling = { ...queueEnv(), OUT_PATHS: paths[0] as string, DRV_PATH: '' };
      assert.equal((await run(HOOK, [], spooling)).code, 0);
      const spool = `${spooling.CACHECTL_QUEUE}.spool`;
      assert.deepEqual([mode(spool), ...readdirSync(spool).map((name) => mode(join(spool, name)))], [0o700, 0o600]);
    },
  );
});

describe(withNix('many builders'), () => {
  it(
    'three daemons with their own queues push overlapping closures into one bucket while GC sweeps it again and ' +
      'again: every closure verifies',
    async () => {
      const nonce = `builders-${Date.now()}`;
      const paths = await buildDag(nonce, 90);
      const to = s3.cacheUrl(nonce);
      const backend = await openCache(parseCacheUrl(to));
      await ensureCacheInfo(backend, '/nix/store');
      await plantGarbage(backend, nonce, 100);
      // Overlapping shares: builder 0 built nodes 0-59, builder 1 nodes 30-89, builder 2 every third node.
      const shares = [paths.slice(0, 60), paths.slice(30), paths.filter((_, i) => i % 3 === 0)];
      const builders = shares.map((share) => ({ share, env: queueEnv(s3.env) }));
      const daemons = builders.map(({ env }) =>
        startDaemon(['--to', to, '--secret-key-file', key.secretFile, '--jobs', '4'], env),
      );
      const observer = observeCache(backend);
      let gcRuns = 0;
      try {
        await Promise.all(daemons.map((daemon) => daemon.waitForLog('ready')));
        let pushing = true;
        const gcLoop = (async () => {
          const gcArgs = [
            'gc',
            '--to',
            to,
            '--older-than',
            '1h',
            '--grace',
            '0s',
            '--metadata-cache',
            join(tempDir('gc-meta'), 'm.db'),
          ];
          while (pushing || gcRuns < 2) {
            const gc = await cachectl(gcArgs, builders[0]?.env);
            assert.equal(gc.code, 0, gc.stderr);
            gcRuns += 1;
          }
        })();
        // Each builder's hooks queue its share a few paths at a time, as its builds finish.
        await Promise.all(
          builders.map(async ({ share, env }) => {
            for (let i = 0; i < share.length; i += 5) {
              const hook = await run(HOOK, [], { ...env, OUT_PATHS: share.slice(i, i + 5).join(' '), DRV_PATH: '' });
              assert.deepEqual([hook.code, hook.stderr], [0, '']);
            }
          }),
        );
        const reports = await Promise.all(builders.map(({ share, env }) => settled(env, share.length, 180_000)));
        pushing = false;
        await gcLoop;
        for (const [i, report] of reports.entries()) {
          assert.deepEqual(
            [report.counts.done, report.counts.failed],
            [builders[i]?.share.length, 0],
            JSON.stringify(report),
          );
        }
        await Promise.all(daemons.map(stopDaemon));
      } finally {
        for (const daemon of daemons) daemon.child.kill('SIGKILL');
        const observed = await observer.stop();
        assert.deepEqual(observed.problems, [], 'a reader saw a broken closure');
      }
      assert.ok(gcRuns >= 2, `GC ran only ${gcRuns} times`);
      assert.deepEqual((await cacheProblems(backend)).problems, []);
      const narInfos: string[] = [];
      for await (const page of backend.list(''))
        narInfos.push(...page.filter((entry) => entry.key.endsWith('.narinfo')).map((entry) => entry.key));
      await backend.close();
      assert.equal(narInfos.length, paths.length, 'the garbage is not gone, or a pushed path is');
      const verify = await nixVerify(s3.nixUrl(nonce), key.publicKey, paths);
      assert.equal(verify.code, 0, verify.stderr);
      console.log(`# three builders, ${paths.length} paths, ${gcRuns} GC runs during the pushes`);
    },
  );
});
