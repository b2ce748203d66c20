/**
 * bench/flood: floods of work. 1,000 tiny paths queued by the post-build hook in one burst (8 hooks at a time,
 * as Nix with `max-jobs 8` would run them) while the daemon is stopped, then drained to file:// by the daemon
 * started on the full queue: paths a second from its start to the last path done, its CPU seconds and peak RSS;
 * beside `cachectl push` of the same paths in one go (the daemon should spend no more CPU on them) and `nix copy`
 * of them as a user runs it, in the same run, the three alternating, median of `--runs`. All three sign. Then
 * `cachectl status` and `status --json` with 100,000 rows in the queue, beside `node -e 0` (the start of any Node
 * program). Prints the tables and writes bench/results/flood.json.
 *
 *   npm run bench:flood [-- --paths 1000 --rows 100000 --runs 3]
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { forEachLimit } from '../src/core/limit.js';
import { formatSecretKey, generateSecretKey } from '../src/core/signing.js';
import { HOOK, queueEnv, settled, startDaemon, stopDaemon, waitFor } from '../test/helpers/daemon.js';
import { CACHECTL, execFileAsync, nixVersion, tempDir, testEnv } from '../test/helpers/nix.js';
import { cpuSecondsOf, medianOf, peakRssMb, settleDisk, timed, userNixEnv, type Measurement } from './measure.js';
import { atLeast, atMost, renderFlood, thisRun, writeResults, type FloodResults } from './tables.js';

const { values } = parseArgs({
  options: {
    paths: { type: 'string', default: '1000' },
    rows: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
  },
});
const PATHS = Number(values.paths);
const ROWS = Number(values.rows);
const RUNS = Number(values.runs);
const HOOKS_AT_ONCE = 8;

function runHook(env: NodeJS.ProcessEnv, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(HOOK, [], { env: { ...env, OUT_PATHS: path, DRV_PATH: '' }, stdio: 'inherit' });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`the hook exited ${code} for ${path}`));
    });
  });
}

/** The median by time of `RUNS` runs of `run`, one after another. */
async function median(run: () => Promise<Measurement>): Promise<Measurement> {
  const runs: Measurement[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await run());
  return medianOf(runs);
}

/**
 * `paths` queued by a burst of hooks into a fresh queue, then drained to a fresh file:// cache by a daemon started
 * on it: the hooks' time, and the daemon's from its start to the last path done, with its CPU and peak RSS then.
 */
async function floodAndDrain(
  paths: readonly string[],
  signing: string[],
): Promise<{ hookSeconds: number; drain: Measurement; queue: ReturnType<typeof queueEnv> }> {
  const queue = queueEnv();
  const cache = tempDir('bench-flood-cache');
  // A daemon has run on this queue (its inbox files exist), and is stopped while the hooks run.
  await stopDaemon(startDaemon(['--to', `file://${cache}`, ...signing], queue));
  const hooksStarted = performance.now();
  await forEachLimit(paths.length, HOOKS_AT_ONCE, (i) => runHook(queue, paths[i] as string));
  const hookSeconds = (performance.now() - hooksStarted) / 1000;

  settleDisk();
  const started = performance.now();
  const daemon = startDaemon(['--to', `file://${cache}`, ...signing], queue);
  await daemon.waitForLog('ready');
  // Watched in this process, not by polling `cachectl status`, whose start would take CPU from the daemon.
  const watch = new Database(queue.CACHECTL_QUEUE, { readonly: true });
  const doneCount = watch.prepare<[], { n: number }>(`SELECT count(*) AS n FROM paths WHERE state = 'done'`);
  await waitFor('the queue drained', () => ((doneCount.get()?.n ?? 0) >= paths.length ? true : undefined), 600_000);
  const seconds = (performance.now() - started) / 1000;
  watch.close();
  const pid = daemon.child.pid as number;
  const drain = { seconds, cpuSeconds: cpuSecondsOf(pid), peakRssMb: peakRssMb(pid) };
  const report = await settled(queue, paths.length);
  await stopDaemon(daemon);
  if (report.counts.done !== paths.length)
    throw new Error(`${report.counts.done} of ${paths.length} done: ${JSON.stringify(report)}`);
  return { hookSeconds, drain, queue };
}

async function main(): Promise<void> {
  const env = testEnv();
  process.stderr.write(`adding ${PATHS} tiny paths to the store...\n`);
  const dir = tempDir('bench-flood');
  const files = Array.from({ length: PATHS }, (_, i) => {
    const file = join(dir, `cachectl-flood-${i}`);
    writeFileSync(file, `flood path ${i} ${Date.now()}\n`);
    return file;
  });
  const paths = (await execFileAsync('nix-store', ['--add', ...files], { env, maxBuffer: 1 << 26 })).stdout
    .trim()
    .split('\n');

  const secretKey = join(tempDir('bench-key'), 'cache.sec');
  writeFileSync(secretKey, formatSecretKey(generateSecretKey('bench.cachectl-1')), { mode: 0o600 });
  const hooks: number[] = [];
  const drains: Measurement[] = [];
  const pushes: Measurement[] = [];
  const copies: Measurement[] = [];
  let queue = queueEnv();
  for (let run = 1; run <= RUNS; run++) {
    process.stderr.write(`run ${run} of ${RUNS}: ${PATHS} hooks, ${HOOKS_AT_ONCE} at a time, then the daemon...\n`);
    const flood = await floodAndDrain(paths, ['--secret-key-file', secretKey]);
    hooks.push(flood.hookSeconds);
    drains.push(flood.drain);
    queue = flood.queue;
    process.stderr.write(`run ${run} of ${RUNS}: cachectl push, nix copy...\n`);
    settleDisk();
    pushes.push(
      await timed(
        process.execPath,
        [CACHECTL, 'push', '--to', `file://${tempDir('bench-flood-push')}`, '--secret-key-file', secretKey, ...paths],
        env,
      ),
    );
    const to = `file://${tempDir('bench-flood-nix')}?compression=zstd&secret-key=${secretKey}`;
    settleDisk();
    copies.push(await timed('nix', ['copy', '--to', to, ...paths], userNixEnv()));
  }
  const drain = medianOf(drains);
  const push = medianOf(pushes);
  const nixCopy = medianOf(copies);
  const hookSeconds = [...hooks].sort((a, b) => a - b)[Math.floor(hooks.length / 2)] as number;

  process.stderr.write(`status with ${ROWS} rows in the queue...\n`);
  const db = new Database(queue.CACHECTL_QUEUE);
  const now = Date.now();
  const insert = db.prepare(
    `INSERT INTO paths (store_path, state, attempts, next_attempt_at, source, enqueued_at, updated_at, uploaded_at)
     VALUES (?, ?, 1, ?, 'hook', ?, ?, ?)`,
  );
  db.transaction(() => {
    // A queue that has seen many builds: most done, a fifth waiting.
    for (let i = PATHS; i < ROWS; i++) {
      const pending = i % 5 === 0;
      const path = `/nix/store/${i.toString(32).padStart(32, '0')}-flood-row-${i}`;
      insert.run(path, pending ? 'pending' : 'done', now + 3_600_000, now - i, now - i, pending ? null : now - i);
    }
  })();
  const rows = (db.prepare('SELECT count(*) AS n FROM paths').get() as { n: number }).n;
  db.close();
  const status = await median(() => timed(process.execPath, [CACHECTL, 'status'], queue));
  const statusJson = await median(() => timed(process.execPath, [CACHECTL, 'status', '--json'], queue));
  const node = await median(() => timed(process.execPath, ['-e', '0'], queue));

  const results: FloodResults = {
    ...thisRun(),
    nix: nixVersion(),
    paths: PATHS,
    hooksAtOnce: HOOKS_AT_ONCE,
    runs: RUNS,
    hookSeconds,
    drain,
    push,
    nixCopy,
    status: { rows, runs: RUNS, text: status, json: statusJson, node },
    targets: [
      atLeast('the drain, paths a second', PATHS / drain.seconds, 500),
      atMost("the daemon's peak RSS, MB", drain.peakRssMb, 250),
      // issue 31: what the hook queued costs the daemon no more CPU than a push of the same paths
      atLeast("the daemon's CPU: push's CPU s over the daemon's", (push.cpuSeconds ?? 0) / (drain.cpuSeconds ?? 1), 1),
      atMost('`cachectl status` with the rows above, ms', status.seconds * 1000, 200),
    ],
  };
  process.stdout.write(`\n${renderFlood(results)}\n`);
  writeResults('flood.json', results);
}

await main();
