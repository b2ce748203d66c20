/**
 * bench/latency: from the moment the post-build hook exits to the moment a client can see the narinfo, for
 * tiny paths, with a running daemon (file:// and s3rver); and the daemon's peak RSS while it uploads a 1 GB
 * path, beside `nix copy` of the same path in the same run. Prints a table, writes bench/results/latency.json.
 *
 *   npm run bench:latency [-- --paths 20 --big-mb 1024]
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { HOOK, queueEnv, startDaemon, waitFor } from '../test/helpers/daemon.js';
import { CACHECTL, execFileAsync, REPO, tempDir, testEnv } from '../test/helpers/nix.js';
import { startS3rver } from '../test/helpers/s3rver.js';
import { measure, peakRssMb } from './measure.js';

const { values } = parseArgs({ options: { paths: { type: 'string', default: '20' }, 'big-mb': { type: 'string', default: '1024' } } });
const PATHS = Number(values.paths);
const BIG_MB = Number(values['big-mb']);

function runHook(env: NodeJS.ProcessEnv, drvPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(HOOK, [], { env: { ...env, OUT_PATHS: '', DRV_PATH: drvPath }, stdio: 'inherit' });
    child.once('error', reject);
    child.once('exit', () => resolve());
  });
}

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;

async function buildTiny(nonce: string): Promise<{ outs: string[]; drvs: string[] }> {
  const env = testEnv();
  const expr = `builtins.genList (i: derivation { name = "cachectl-bench-latency-${nonce}-\${toString i}"; system = builtins.currentSystem;
    builder = "/bin/sh"; args = [ "-c" "echo \${toString i} > $out" ]; }) ${PATHS}`;
  const outs = (await execFileAsync('nix-build', ['--no-out-link', '-E', expr], { env, maxBuffer: 1 << 24 })).stdout.trim().split('\n');
  const drvs = (await execFileAsync('nix-store', ['-q', '--deriver', ...outs], { env, maxBuffer: 1 << 24 })).stdout.trim().split('\n');
  return { outs, drvs };
}

async function main(): Promise<void> {
  const rows: Record<string, unknown>[] = [];
  const s3 = await startS3rver();
  try {
    for (const target of ['file', 's3'] as const) {
      const { outs, drvs } = await buildTiny(`${target}-${Date.now()}`);
      const dir = tempDir('bench-latency');
      const prefix = `latency-${Date.now()}`;
      const to = target === 'file' ? `file://${dir}` : s3.cacheUrl(prefix);
      const env = queueEnv(target === 's3' ? s3.env : {});
      const daemon = startDaemon(['--to', to], env);
      await daemon.waitForLog('ready');
      const visible = async (out: string): Promise<boolean> =>
        target === 'file'
          ? existsSync(join(dir, `${out.slice(11, 43)}.narinfo`))
          : (await fetch(`${s3.httpUrl}/${prefix}/${out.slice(11, 43)}.narinfo`, { method: 'HEAD' })).ok;
      const latencies: number[] = [];
      for (let i = 0; i < PATHS; i++) {
        await runHook(env, drvs[i] as string);
        const hookExited = process.hrtime.bigint();
        await waitFor('the narinfo', async () => ((await visible(outs[i] as string)) ? true : undefined), 30_000);
        latencies.push(Number(process.hrtime.bigint() - hookExited) / 1e6);
        await sleep(100);
      }
      latencies.sort((a, b) => a - b);
      rows.push({ case: `tiny path, hook exit -> narinfo visible (${target})`, medianMs: quantile(latencies, 0.5), p95Ms: quantile(latencies, 0.95) });
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }

    process.stderr.write(`building a ${BIG_MB} MB path...\n`);
    const env = testEnv();
    const big = (
      await execFileAsync('nix-build', [join(REPO, 'test/fixtures/closures.nix'), '--no-out-link', '-A', 'big', '--argstr', 'bigMb', String(BIG_MB)], { env })
    ).stdout.trim();
    for (const target of ['file', 's3'] as const) {
      const dir = tempDir('bench-big');
      const to = target === 'file' ? `file://${dir}` : s3.cacheUrl(`big-${Date.now()}`);
      const daemonEnv = queueEnv(target === 's3' ? s3.env : {});
      const daemon = startDaemon(['--to', to], daemonEnv);
      await daemon.waitForLog('ready');
      const started = Date.now();
      await execFileAsync(process.execPath, [CACHECTL, 'enqueue', big], { env: daemonEnv });
      await daemon.waitForLog('uploaded', () => true, 600_000);
      const seconds = (Date.now() - started) / 1000;
      rows.push({ case: `${BIG_MB} MB path, daemon (${target})`, seconds, peakRssMb: peakRssMb(daemon.child.pid as number) });
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
    // The peer: nix copy of the same path, its peak RSS sampled the same way.
    const copyDir = tempDir('bench-big-copy');
    const copy = await measure('nix', ['copy', '--to', `file://${copyDir}?compression=zstd`, big], env);
    rows.push({ case: `${BIG_MB} MB path, nix copy (file://, zstd)`, seconds: copy.seconds, peakRssMb: copy.peakRssMb });
  } finally {
    await s3.stop();
  }

  process.stdout.write('\n| case | median ms | p95 ms | s | peak RSS MB |\n|---|---:|---:|---:|---:|\n');
  const cell = (value: unknown, digits: number) => (typeof value === 'number' ? value.toFixed(digits) : '');
  for (const row of rows) {
    process.stdout.write(`| ${String(row['case'])} | ${cell(row['medianMs'], 0)} | ${cell(row['p95Ms'], 0)} | ${cell(row['seconds'], 1)} | ${cell(row['peakRssMb'], 0)} |\n`);
  }
  process.stdout.write('\ntargets: latency median <= 500 ms; daemon peak RSS <= 200 MB on the 1 GB path\n');
  mkdirSync(join(REPO, 'bench/results'), { recursive: true });
  writeFileSync(join(REPO, 'bench/results/latency.json'), `${JSON.stringify({ paths: PATHS, bigMb: BIG_MB, rows }, null, 2)}\n`);
}

await main();
