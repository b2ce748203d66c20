import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { openCache } from '../src/cache/open.js';
import { cacheProblems } from './helpers/cache.js';
import { queueEnv, queueStatus, settled, startDaemon, stopDaemon, waitFor } from './helpers/daemon.js';
import { FAULTS, startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { buildDag, buildFixtures, cachectl, newKey, nixVerify, requireNix, run, type Key } from './helpers/nix.js';
import { startS3rver, type S3Server } from './helpers/s3rver.js';

/** The seed of the fault proxy's choices; CACHECTL_FAULT_SEED replays a failed run. */
const SEED = Number(process.env['CACHECTL_FAULT_SEED'] ?? Math.floor(Math.random() * 2 ** 31));

/** Highest attempt count of any path in the queue of `env`, read with sqlite3 as an operator would. */
async function maxAttempts(env: NodeJS.ProcessEnv): Promise<number> {
  const result = await run('sqlite3', [env['CACHECTL_QUEUE'] as string, 'SELECT max(attempts) FROM paths']);
  assert.equal(result.code, 0, result.stderr);
  return Number(result.stdout.trim());
}

describe(`reliability: S3 faults (seed ${SEED})`, () => {
  let key: Key;
  let s3: S3Server;

  before(async () => {
    requireNix();
    key = await newKey('cachectl-reliability-1');
    s3 = await startS3rver();
    Object.assign(process.env, s3.env, { AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });
  });
  after(async () => s3.stop());

  /** The cache URL through `proxy`, with a short request timeout so that stalls cost seconds, not minutes. */
  const viaProxy = (proxy: FaultProxy, prefix: string) =>
    `s3://${s3.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1&prefix=${prefix}&request-timeout=2s`;

  it('20% of requests fail (500, 503 SlowDown, reset, stall, truncated response): 301 paths (one multipart) all arrive, Nix verifies every closure, retries stay bounded', async () => {
    const nonce = `faults-${Date.now()}`;
    // 300 small paths, and one NAR large enough for a multipart upload
    const paths = [...(await buildDag(nonce, 300)), (await buildFixtures(['big'], { nonce, bigMb: 12 })).big];
    const env = queueEnv(s3.env);
    const enqueue = await cachectl(['enqueue', ...paths], env);
    assert.equal(enqueue.code, 0, enqueue.stderr);
    const proxy = await startFaultProxy(s3.port, { rate: 0.2, seed: SEED });
    const daemon = startDaemon(['--to', viaProxy(proxy, nonce), '--secret-key-file', key.secretFile, '--jobs', '8'], env);
    let report;
    try {
      report = await settled(env, paths.length, 480_000);
      await stopDaemon(daemon);
    } finally {
      daemon.child.kill('SIGKILL'); // when the test failed; after stopDaemon it has exited
      await proxy.stop();
    }
    const { requests, byMethod, injected } = proxy.stats;
    const summary = JSON.stringify({ requests, byMethod, injected, counts: report.counts });
    assert.equal(report.counts.done, paths.length, summary);
    assert.equal(report.counts.failed, 0, summary);
    for (const fault of FAULTS) assert.ok(injected[fault] > 0, `no ${fault} was injected: ${summary}`);
    // Bounded: each path needs a NAR and a narinfo PUT; faults and the batches they spoil cost at most as many again.
    assert.ok((byMethod['PUT'] ?? 0) <= 4 * paths.length + 20, `too many PUTs: ${summary}`);
    assert.ok(await maxAttempts(env) <= 3, `a path was tried more than 3 times: ${summary}`);

    const backend = await openCache(parseCacheUrl(s3.cacheUrl(nonce)));
    const { narinfos, problems } = await cacheProblems(backend);
    backend.close();
    assert.deepEqual(problems, []);
    assert.equal(narinfos, paths.length);
    const verify = await nixVerify(`${s3.httpUrl}/${nonce}`, key.publicKey, paths);
    assert.equal(verify.code, 0, verify.stderr);
    console.log(`# faults: ${summary}`);
  });

  it('a server answering only 503 SlowDown slows the uploader to a stop, uses up no attempt, and honours Retry-After', async () => {
    const nonce = `throttle-${Date.now()}`;
    const paths = await buildDag(nonce, 20);
    const env = queueEnv(s3.env);
    const proxy = await startFaultProxy(s3.port, { rate: 0, faults: ['slowDown'], seed: SEED, retryAfterSeconds: 3 });
    const daemon = startDaemon(['--to', viaProxy(proxy, nonce), '--secret-key-file', key.secretFile, '--jobs', '8'], env);
    try {
      await daemon.waitForLog('ready');
      proxy.rate = 1;
      assert.equal((await cachectl(['enqueue', ...paths], env)).code, 0);
      const paused = await daemon.waitForLog('cache trouble: pausing', (line) => line['code'] === 'CACHE_THROTTLED');
      assert.ok((paused['waitMs'] as number) >= 2900, `paused ${String(paused['waitMs'])} ms, less than Retry-After asks`);
      assert.ok((paused['jobs'] as number) < 8, 'throttling did not reduce the uploads in flight');
      // Throttled for a while: nothing fails, and no attempt is used up.
      await waitFor('two pauses', () => (daemon.logs.filter((line) => line.msg === 'cache trouble: pausing').length >= 2 ? true : undefined), 30_000);
      const during = await queueStatus(env);
      assert.deepEqual([during.counts.done, during.counts.failed], [0, 0], 'a path was uploaded or failed while every request was throttled');
      proxy.rate = 0;
      const report = await settled(env, paths.length, 120_000);
      assert.deepEqual([report.counts.done, report.counts.failed], [paths.length, 0]);
      assert.ok(await maxAttempts(env) <= 1, 'throttling used up attempts');
      await stopDaemon(daemon);
    } finally {
      daemon.child.kill('SIGKILL'); // when the test failed; after stopDaemon it has exited
      await proxy.stop();
    }
    const verify = await nixVerify(`${s3.httpUrl}/${nonce}`, key.publicKey, paths);
    assert.equal(verify.code, 0, verify.stderr);
  });
});
