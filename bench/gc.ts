/**
 * bench/gc: the bucket GC on synthetic caches of 100k, 300k and 1M narinfos (file://) and 10k (s3rver), each
 * narinfo with its NAR and a realistic reference fan-out (0–8 references, a third of them to 50 "stdenv-like"
 * hubs), 2% of the paths pinned. For each: a cold run (empty metadata cache, --dry-run), a warm run
 * (--dry-run), and the real sweep (grace 0; on s3rver only up to 10k narinfos, as it deletes about a hundred
 * keys a second). Time, requests by kind and peak RSS. On s3rver, also the warm run through a proxy 30 ms
 * away, and the bare listing of the bucket at 0 and 30 ms: one page after another (as before cachectl listed
 * key ranges at once) and in ranges, as the GC lists. The same listings of 100k narinfos on Swift's s3api
 * (test/swift/swift.sh), which lists from its container database. Prints the tables and writes
 * bench/results/gc.json.
 *
 *   npm run bench:gc [-- --file-sizes 100000,300000,1000000 --s3-sizes 10000 --swift-listing 100000]
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { listEach, type CacheBackend } from '../src/cache/backend.js';
import { openCache } from '../src/cache/open.js';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { forEachLimit } from '../src/core/limit.js';
import { nix32Encode } from '../src/core/nix32.js';
import { REPO, tempDir } from '../test/helpers/nix.js';
import { startLatencyProxy, type LatencyProxy } from '../test/helpers/latency-proxy.js';
import { startS3rver, swiftBucket, useS3Here, type S3rver } from '../test/helpers/s3rver.js';
import { measure } from './measure.js';
import { renderGc, thisRun, writeResults, type GcResults, type GcRun } from './tables.js';

const { values } = parseArgs({
  options: {
    'file-sizes': { type: 'string', default: '100000,300000,1000000' },
    // s3rver reads every object of the bucket for each listing request: 100k narinfos take an hour of listings
    's3-sizes': { type: 'string', default: '10000' },
    // narinfos listed on Swift (0: none)
    'swift-listing': { type: 'string', default: '100000' },
  },
});
const sizes = (text: string) =>
  text
    .split(',')
    .filter((size) => size !== '')
    .map(Number);
const GC_RUN = join(REPO, 'dist/bench/gc-run.js');
const HUBS = 50;
const PINNED_SHARE = 0.02;
/** the round trip of the far-away S3 endpoint */
const FAR_MS = 30;
const S3_SWEEP_MAX = 10_000;

/** A synthetic cache of `n` narinfos, their NARs and a pin of 2% of them. */
async function fill(backend: CacheBackend, n: number): Promise<void> {
  const hashes = Array.from({ length: n }, () => nix32Encode(randomBytes(20)));
  const pick = (i: number) =>
    Math.random() < 1 / 3 ? Math.floor(Math.random() * Math.min(i, HUBS)) : Math.floor(Math.random() * i);
  await forEachLimit(n, 64, async (i) => {
    const refs = i === 0 ? [] : [...new Set(Array.from({ length: Math.floor(Math.random() * 9) }, () => pick(i)))];
    const narHash = nix32Encode(randomBytes(32));
    await backend.put(`nar/${narHash}.nar.zst`, randomBytes(200), 'nar');
    const text =
      `StorePath: /nix/store/${hashes[i]}-bench-${i}\nURL: nar/${narHash}.nar.zst\nCompression: zstd\nFileHash: ` +
      `sha256:${narHash}\nFileSize: 200\n` +
      `NarHash: sha256:${narHash}\nNarSize: 1000\nReferences: ` +
      `${refs.map((ref) => `${hashes[ref]}-bench-${ref}`).join(' ')}\nDeriver: ` +
      `${hashes[i]}-bench-${i}.drv\nSig: bench-1:${randomBytes(64).toString('base64')}\n`;
    await backend.put(`${hashes[i]}.narinfo`, Buffer.from(text), 'narinfo');
    if (i % 50_000 === 0) process.stderr.write(`  ${i} of ${n}\n`);
  });
  const pinned = hashes.flatMap((hash, i) => (Math.random() < PINNED_SHARE ? [`/nix/store/${hash}-bench-${i}\n`] : []));
  await backend.put('gcroots/bench', Buffer.from(pinned.join('')), 'stateText');
  await backend.put(
    'nix-cache-info',
    Buffer.from('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n'),
    'cacheInfo',
  );
}

/** One GC in a child process (so that its peak RSS is its own). */
async function gcRun(url: string, metaFile: string, args: string[], env: NodeJS.ProcessEnv): Promise<GcRun> {
  const { seconds, peakRssMb, stdout } = await measure(process.execPath, [GC_RUN, url, metaFile, ...args], env);
  const { report, requests } = JSON.parse(stdout) as Pick<GcRun, 'report' | 'requests'>;
  return { seconds, peakRssMb, report, requests };
}

/** Lists the bucket's narinfos and NARs in-process, as the GC does or one page after another, and times it. */
async function listing(backend: CacheBackend, inRanges: boolean): Promise<{ seconds: number; keys: number }> {
  const started = performance.now();
  let keys = 0;
  for (const prefix of ['', 'nar/']) {
    if (inRanges) await listEach(backend, prefix, (page) => (keys += page.length));
    else for await (const page of backend.list(prefix)) keys += page.length;
  }
  return { seconds: (performance.now() - started) / 1000, keys };
}

type Listings = NonNullable<GcResults['listings']>;

/**
 * The bare listing of `target`'s bucket of `n` narinfos through `proxy`, at 0 and FAR_MS a request, one page after
 * another and in ranges. Leaves the proxy at 0 ms.
 */
async function farListings(target: string, n: number, proxy: LatencyProxy, farUrl: string): Promise<Listings> {
  const listings: Listings = [];
  for (const delayMs of [0, FAR_MS]) {
    proxy.delayMs = delayMs;
    const far = await openCache(parseCacheUrl(farUrl));
    for (const inRanges of [false, true]) {
      const before = proxy.stats.requests;
      const { seconds, keys } = await listing(far, inRanges);
      const mode = inRanges ? 'in ranges, as the GC lists' : 'one page after another';
      listings.push({ target, narinfos: n, delayMs, mode, seconds, keys, requests: proxy.stats.requests - before });
      process.stderr.write(`list ${n} on ${target} at ${delayMs} ms, ${mode}: ${seconds.toFixed(1)} s\n`);
    }
    await far.close();
  }
  proxy.delayMs = 0;
  return listings;
}

const SWIFT = join(REPO, 'test/swift/swift.sh');
const SWIFT_PORT = 18080;

/** The listings of `n` narinfos (their keys alone) on Swift's s3api, started for them and stopped after. */
async function swiftListings(n: number): Promise<Listings> {
  execFileSync('bash', [SWIFT, 'start'], { stdio: ['ignore', process.stderr, process.stderr] });
  try {
    const swift = await swiftBucket(SWIFT_PORT);
    useS3Here(swift);
    const backend = await openCache(parseCacheUrl(swift.cacheUrl()));
    process.stderr.write(`filling Swift with ${n} narinfos…\n`);
    await forEachLimit(n, 64, async (i) => {
      const hash = nix32Encode(randomBytes(20));
      await backend.put(`${hash}.narinfo`, Buffer.from(`StorePath: /nix/store/${hash}-bench-${i}\n`), 'narinfo');
      if (i % 20_000 === 0) process.stderr.write(`  ${i} of ${n}\n`);
    });
    await backend.close();
    const proxy = await startLatencyProxy(swift.port, { delayMs: 0 });
    try {
      const farUrl = `s3://${swift.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1`;
      return await farListings('Swift', n, proxy, farUrl);
    } finally {
      await proxy.stop();
    }
  } finally {
    execFileSync('bash', [SWIFT, 'stop'], { stdio: ['ignore', process.stderr, process.stderr] });
  }
}

async function main(): Promise<void> {
  const rows: GcResults['rows'] = [];
  const listings: NonNullable<GcResults['listings']> = [];
  const targets: {
    name: string;
    sizes: number[];
    open: () => Promise<{ url: string; env: NodeJS.ProcessEnv; s3?: S3rver; done: () => Promise<void> }>;
  }[] = [
    {
      name: 'file://',
      sizes: sizes(values['file-sizes']),
      open: async () => ({ url: `file://${tempDir('bench-gc')}`, env: process.env, done: async () => undefined }),
    },
    {
      name: 's3rver',
      sizes: sizes(values['s3-sizes']),
      open: async () => {
        const s3 = await startS3rver();
        const env = {
          ...process.env,
          ...s3.env,
          AWS_EC2_METADATA_DISABLED: 'true',
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        };
        return { url: s3.cacheUrl(), env, s3, done: () => s3.stop() };
      },
    },
  ];
  for (const target of targets) {
    for (const n of target.sizes) {
      const { url, env, s3, done } = await target.open();
      Object.assign(process.env, env);
      const backend = await openCache(parseCacheUrl(url));
      process.stderr.write(`filling ${target.name} with ${n} narinfos…\n`);
      await fill(backend, n);
      await backend.close();
      // The filler's writes reach the disk first: a cold run measures the GC, not the kernel's write-back.
      execFileSync('sync');
      const metaFile = join(tempDir('bench-gc-meta'), 'meta.db');
      const runs: [string, string, string[]][] = [
        ['cold, --dry-run', url, ['--dry-run']],
        ['warm, --dry-run', url, ['--dry-run']],
      ];
      const proxy = s3 === undefined ? undefined : await startLatencyProxy(s3.port, { delayMs: FAR_MS });
      if (proxy !== undefined && s3 !== undefined) {
        const farUrl = `s3://${s3.bucket}?endpoint=${encodeURIComponent(proxy.endpoint)}&region=us-east-1`;
        runs.push([`warm, --dry-run, ${FAR_MS} ms away`, farUrl, ['--dry-run']]);
        listings.push(...(await farListings(target.name, n, proxy, farUrl)));
        proxy.delayMs = FAR_MS;
      }
      if (s3 === undefined || n <= S3_SWEEP_MAX) runs.push(['warm, sweep (grace 0)', url, []]);
      for (const [run, runUrl, args] of runs) {
        const result = await gcRun(runUrl, metaFile, args, env);
        rows.push({ target: target.name, narinfos: n, run, result });
        process.stderr.write(`${target.name} ${n} ${run}: ${result.seconds.toFixed(1)} s\n`);
      }
      await proxy?.stop();
      await done();
    }
  }
  for (const n of sizes(values['swift-listing']).filter((size) => size > 0)) listings.push(...(await swiftListings(n)));
  const results: GcResults = { ...thisRun(), rows, listings };
  process.stdout.write(
    `\ncachectl gc on synthetic caches (2% of paths pinned, --older-than 0s)\n\n${renderGc(results)}\n`,
  );
  writeResults('gc.json', results);
}

await main();
