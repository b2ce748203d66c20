/**
 * bench/latency: from the moment the post-build hook exits to the moment a client can see the narinfo, for
 * tiny paths, with a running daemon, on file:// and on s3rver: with the daemon idle (hooks at uneven gaps),
 * right after its start (the hook runs as soon as it is READY), and right after a burst of hooks it has just
 * drained. The peer in the same run: `nix copy` of one tiny path, what a post-build-hook that copies blocks
 * the build for. Then the daemon's peak RSS while it uploads a 1 GB path (random data), beside `nix copy` of
 * the same path. Prints the tables and writes bench/results/latency.json.
 *
 *   npm run bench:latency [-- --paths 20 --bursts 10 --burst-size 20 --big-mb 1024]
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { HOOK, queueEnv, startDaemon, waitFor, type DaemonProcess } from '../test/helpers/daemon.js';
import { CACHECTL, execFileAsync, REPO, tempDir, testEnv } from '../test/helpers/nix.js';
import { startS3rver, type S3rver } from '../test/helpers/s3rver.js';
import { buildTinyPaths, measure, peakRssMb, userNixEnv } from './measure.js';
import { quantile, renderLatency, thisRun, writeResults, type LatencyResults } from './tables.js';

const { values } = parseArgs({
  options: {
    paths: { type: 'string', default: '20' },
    bursts: { type: 'string', default: '10' },
    'burst-size': { type: 'string', default: '20' },
    'big-mb': { type: 'string', default: '1024' },
  },
});
const PATHS = Number(values.paths);
const BURSTS = Number(values.bursts);
const BURST_SIZE = Number(values['burst-size']);
const BIG_MB = Number(values['big-mb']);

/** The hook as Nix 2.8 runs it: an empty OUT_PATHS, the outputs read from DRV_PATH. */
function runHook(env: NodeJS.ProcessEnv, drvPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(HOOK, [], { env: { ...env, OUT_PATHS: '', DRV_PATH: drvPath }, stdio: 'inherit' });
    child.once('error', reject);
    child.once('exit', () => {
      resolve();
    });
  });
}

/** `n` fresh tiny paths (and their derivations), built now. */
function buildTiny(n: number): Promise<{ out: string; drv: string }[]> {
  return buildTinyPaths(`cachectl-bench-latency-${Date.now()}-${Math.random().toString(36).slice(2)}`, n);
}

interface Target {
  name: 'file' | 's3';
  to: string;
  env: NodeJS.ProcessEnv;
  visible(out: string): Promise<boolean>;
}

function newTarget(name: Target['name'], s3: S3rver): Target {
  const prefix = `latency-${Date.now()}`;
  const dir = tempDir('bench-latency');
  const hashPart = (out: string) => out.slice(11, 43);
  return name === 'file'
    ? {
        name,
        to: `file://${dir}`,
        env: queueEnv(),
        visible: async (out) => existsSync(join(dir, `${hashPart(out)}.narinfo`)),
      }
    : {
        name,
        to: s3.cacheUrl(prefix),
        env: queueEnv(s3.env),
        visible: async (out) =>
          (await fetch(`${s3.httpUrl}/${prefix}/${hashPart(out)}.narinfo`, { method: 'HEAD' })).ok,
      };
}

/** Runs the hook for `path` and returns the ms from its exit until the narinfo is visible. */
async function latencyOf(target: Target, path: { out: string; drv: string }): Promise<number> {
  await runHook(target.env, path.drv);
  const hookExited = process.hrtime.bigint();
  await waitFor('the narinfo', async () => ((await target.visible(path.out)) ? true : undefined), 30_000);
  return Number(process.hrtime.bigint() - hookExited) / 1e6;
}

async function stop(daemon: DaemonProcess): Promise<void> {
  daemon.child.kill('SIGTERM');
  await daemon.exited;
}

async function main(): Promise<void> {
  const results: LatencyResults = {
    ...thisRun(),
    paths: PATHS,
    bursts: BURSTS,
    burstSize: BURST_SIZE,
    bigMb: BIG_MB,
    latency: [],
    big: [],
  };
  const record = (target: Target['name'], situation: string, times: number[]) => {
    const sorted = [...times].sort((a, b) => a - b);
    results.latency.push({
      target,
      situation,
      samples: sorted.length,
      p50Ms: quantile(sorted, 0.5),
      p95Ms: quantile(sorted, 0.95),
      maxMs: sorted.at(-1) as number,
    });
  };
  const s3 = await startS3rver();
  try {
    for (const name of ['file', 's3'] as const) {
      const target = newTarget(name, s3);

      process.stderr.write(`${name}: idle daemon, ${PATHS} hooks at uneven gaps\n`);
      let daemon = startDaemon(['--to', target.to], target.env);
      await daemon.waitForLog('ready');
      const idle: number[] = [];
      for (const [i, path] of (await buildTiny(PATHS)).entries()) {
        // Gaps of 0.1-1.9 s in a fixed spread, so that no timer of the daemon's can line up with the hooks.
        await sleep(100 + ((i * 700) % 1800));
        idle.push(await latencyOf(target, path));
      }
      record(name, 'idle daemon', idle);

      process.stderr.write(`${name}: ${BURSTS} bursts of ${BURST_SIZE} hooks, then one more\n`);
      const afterBurst: number[] = [];
      const drains: number[] = [];
      for (let round = 0; round < BURSTS; round++) {
        const paths = await buildTiny(BURST_SIZE + 1);
        const burst = paths.slice(0, BURST_SIZE);
        const started = process.hrtime.bigint();
        for (let i = 0; i < burst.length; i += 4)
          await Promise.all(burst.slice(i, i + 4).map((path) => runHook(target.env, path.drv)));
        await waitFor(
          'the burst',
          async () =>
            (await Promise.all(burst.map((path) => target.visible(path.out)))).every(Boolean) ? true : undefined,
          60_000,
        );
        drains.push(Number(process.hrtime.bigint() - started) / 1e6);
        afterBurst.push(await latencyOf(target, paths[BURST_SIZE] as { out: string; drv: string }));
      }
      record(name, `right after a burst of ${BURST_SIZE}`, afterBurst);
      record(name, `a burst of ${BURST_SIZE} hooks, first hook start to last narinfo`, drains);
      await stop(daemon);

      process.stderr.write(`${name}: ${Math.ceil(PATHS / 2)} starts, a hook as soon as the daemon is READY\n`);
      const afterStart: number[] = [];
      for (const path of await buildTiny(Math.ceil(PATHS / 2))) {
        daemon = startDaemon(['--to', target.to], target.env);
        await daemon.waitForLog('ready');
        afterStart.push(await latencyOf(target, path));
        await stop(daemon);
      }
      record(name, 'right after the start', afterStart);
    }

    process.stderr.write('peer: nix copy of one tiny path, as a copying post-build-hook would\n');
    const copies: number[] = [];
    for (const path of await buildTiny(PATHS)) {
      const dir = tempDir('bench-latency-copy');
      copies.push(
        (await measure('nix', ['copy', '--to', `file://${dir}?compression=zstd`, path.out], userNixEnv())).seconds *
          1000,
      );
    }
    record('file', 'peer: nix copy of the path (blocking the build)', copies);

    process.stderr.write(`building a ${BIG_MB} MB path...\n`);
    const env = testEnv();
    const big = (
      await execFileAsync(
        'nix-build',
        [join(REPO, 'test/fixtures/closures.nix'), '--no-out-link', '-A', 'big', '--argstr', 'bigMb', String(BIG_MB)],
        { env },
      )
    ).stdout.trim();
    for (const name of ['file', 's3'] as const) {
      const target = newTarget(name, s3);
      const daemon = startDaemon(['--to', target.to], target.env);
      await daemon.waitForLog('ready');
      const started = Date.now();
      await execFileAsync(process.execPath, [CACHECTL, 'enqueue', big], { env: target.env });
      await daemon.waitForLog('uploaded', () => true, 600_000);
      results.big.push({
        case: `daemon → ${name === 'file' ? 'file://' : 's3rver (multipart)'}`,
        seconds: (Date.now() - started) / 1000,
        peakRssMb: peakRssMb(daemon.child.pid as number),
      });
      await stop(daemon);
    }
    const copy = await measure(
      'nix',
      ['copy', '--to', `file://${tempDir('bench-big-copy')}?compression=zstd`, big],
      userNixEnv(),
    );
    results.big.push({ case: 'nix copy → file:// (zstd)', seconds: copy.seconds, peakRssMb: copy.peakRssMb });
  } finally {
    await s3.stop();
  }

  process.stdout.write(`\n${renderLatency(results)}\n`);
  writeResults('latency.json', results);
}

await main();
