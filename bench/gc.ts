/**
 * bench/gc: the bucket GC on synthetic caches of 10k, 50k and 100k narinfos (file://) and 10k (s3rver), each
 * narinfo with its NAR and a realistic reference fan-out (0–8 references, a third of them to 50 "stdenv-like"
 * hubs), 2% of the paths pinned. For each: a cold run (empty metadata cache, --dry-run), a warm run
 * (--dry-run), and the real sweep (grace 0). Time, requests by kind and peak RSS. Prints a table and writes
 * bench/results/gc.json.
 *
 *   npm run bench:gc [-- --file-sizes 10000,50000,100000 --s3-sizes 10000]
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { CacheBackend } from '../src/cache/backend.js';
import { openCache } from '../src/cache/open.js';
import { parseCacheUrl } from '../src/core/cache-url.js';
import { mapLimit } from '../src/core/limit.js';
import { nix32Encode } from '../src/core/nix32.js';
import { REPO, tempDir } from '../test/helpers/nix.js';
import { startS3rver } from '../test/helpers/s3rver.js';
import { measure } from './measure.js';
import { renderGc, thisRun, writeResults, type GcResults, type GcRun } from './tables.js';

const { values } = parseArgs({
  options: {
    'file-sizes': { type: 'string', default: '10000,50000,100000' },
    's3-sizes': { type: 'string', default: '10000' },
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

/** A synthetic cache of `n` narinfos, their NARs and a pin of 2% of them. */
async function fill(backend: CacheBackend, n: number): Promise<void> {
  const hashes = Array.from({ length: n }, () => nix32Encode(randomBytes(20)));
  const pick = (i: number) =>
    Math.random() < 1 / 3 ? Math.floor(Math.random() * Math.min(i, HUBS)) : Math.floor(Math.random() * i);
  await mapLimit(
    Array.from({ length: n }, (_, i) => i),
    64,
    async (i) => {
      const refs = i === 0 ? [] : [...new Set(Array.from({ length: Math.floor(Math.random() * 9) }, () => pick(i)))];
      const narHash = nix32Encode(randomBytes(32));
      await backend.put(`nar/${narHash}.nar.zst`, randomBytes(200), 'application/x-nix-nar');
      const text =
        `StorePath: /nix/store/${hashes[i]}-bench-${i}\nURL: nar/${narHash}.nar.zst\nCompression: zstd\nFileHash: ` +
        `sha256:${narHash}\nFileSize: 200\n` +
        `NarHash: sha256:${narHash}\nNarSize: 1000\nReferences: ` +
        `${refs.map((ref) => `${hashes[ref]}-bench-${ref}`).join(' ')}\nDeriver: ` +
        `${hashes[i]}-bench-${i}.drv\nSig: bench-1:${randomBytes(64).toString('base64')}\n`;
      await backend.put(`${hashes[i]}.narinfo`, Buffer.from(text), 'text/x-nix-narinfo');
    },
  );
  const pinned = hashes.flatMap((hash, i) => (Math.random() < PINNED_SHARE ? [`/nix/store/${hash}-bench-${i}\n`] : []));
  await backend.put('gcroots/bench', Buffer.from(pinned.join('')), 'text/plain');
  await backend.put(
    'nix-cache-info',
    Buffer.from('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n'),
    'text/x-nix-cache-info',
  );
}

/** One GC in a child process (so that its peak RSS is its own). */
async function gcRun(url: string, metaFile: string, args: string[], env: NodeJS.ProcessEnv): Promise<GcRun> {
  const { seconds, peakRssMb, stdout } = await measure(process.execPath, [GC_RUN, url, metaFile, ...args], env);
  const { report, requests } = JSON.parse(stdout) as Pick<GcRun, 'report' | 'requests'>;
  return { seconds, peakRssMb, report, requests };
}

async function main(): Promise<void> {
  const rows: { target: string; narinfos: number; run: string; result: GcRun }[] = [];
  const targets: {
    name: string;
    sizes: number[];
    open: () => Promise<{ url: string; env: NodeJS.ProcessEnv; done: () => Promise<void> }>;
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
        return { url: s3.cacheUrl(), env, done: () => s3.stop() };
      },
    },
  ];
  for (const target of targets) {
    for (const n of target.sizes) {
      const { url, env, done } = await target.open();
      Object.assign(process.env, env);
      const backend = await openCache(parseCacheUrl(url));
      process.stderr.write(`filling ${target.name} with ${n} narinfos…\n`);
      await fill(backend, n);
      backend.close();
      const metaFile = join(tempDir('bench-gc-meta'), 'meta.db');
      for (const [run, args] of [
        ['cold, --dry-run', ['--dry-run']],
        ['warm, --dry-run', ['--dry-run']],
        ['warm, sweep (grace 0)', []],
      ] as const) {
        const result = await gcRun(url, metaFile, [...args], env);
        rows.push({ target: target.name, narinfos: n, run, result });
        process.stderr.write(`${target.name} ${n} ${run}: ${result.seconds.toFixed(1)} s\n`);
      }
      await done();
    }
  }
  const results: GcResults = { ...thisRun(), rows };
  process.stdout.write(
    `\ncachectl gc on synthetic caches (2% of paths pinned, --older-than 0s)\n\n${renderGc(results)}\n`,
  );
  writeResults('gc.json', results);
}

await main();
