/**
 * bench/flood: floods of work. 10,000 tiny paths queued by the post-build hook in one burst (8 hooks at a
 * time, as Nix with `max-jobs 8` would run them) while the daemon is stopped, then drained to file:// by the
 * daemon started on the full queue: paths a second from its start to the last path done, and its peak RSS;
 * beside `nix copy` of the same paths in one go, in the same run. Then `cachectl status` and `status --json` with 100,000 rows in the queue,
 * beside `node -e 0` (the start of any Node program). Prints the tables and writes bench/results/flood.json.
 *
 *   npm run bench:flood [-- --paths 10000 --rows 100000 --runs 5]
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { forEachLimit } from '../src/core/limit.js';
import { HOOK, queueEnv, settled, startDaemon, stopDaemon, waitFor } from '../test/helpers/daemon.js';
import { CACHECTL, execFileAsync, tempDir, testEnv } from '../test/helpers/nix.js';
import { measure, peakRssMb, type Measurement } from './measure.js';
import { renderFlood, thisRun, writeResults, type FloodResults } from './tables.js';

const { values } = parseArgs({
  options: {
    paths: { type: 'string', default: '10000' },
    rows: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '5' },
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

/** The median by time of `RUNS` runs of `run`. */
async function median(run: () => Promise<Measurement>): Promise<Measurement> {
  const runs: Measurement[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await run());
  runs.sort((a, b) => a.seconds - b.seconds);
  return runs[Math.floor(runs.length / 2)] as Measurement;
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

  process.stderr.write(`${PATHS} hooks, ${HOOKS_AT_ONCE} at a time...\n`);
  const queue = queueEnv();
  const cache = tempDir('bench-flood-cache');
  // A daemon has run on this queue (its inbox files exist), and is stopped while the hooks run.
  await stopDaemon(startDaemon(['--to', `file://${cache}`], queue));
  const hooksStarted = performance.now();
  await forEachLimit(paths.length, HOOKS_AT_ONCE, (i) => runHook(queue, paths[i] as string));
  const hookSeconds = (performance.now() - hooksStarted) / 1000;

  process.stderr.write('the daemon drains the queue to file://...\n');
  const started = performance.now();
  const daemon = startDaemon(['--to', `file://${cache}`], queue);
  await daemon.waitForLog('ready');
  // Watched in this process, not by polling `cachectl status`, whose start would take CPU from the daemon.
  const watch = new Database(queue.CACHECTL_QUEUE, { readonly: true });
  const doneCount = watch.prepare<[], { n: number }>(`SELECT count(*) AS n FROM paths WHERE state = 'done'`);
  await waitFor('the queue drained', () => ((doneCount.get()?.n ?? 0) >= PATHS ? true : undefined), 600_000);
  const drainSeconds = (performance.now() - started) / 1000;
  watch.close();
  const report = await settled(queue, PATHS);
  // VmHWM: the most it ever held
  const daemonPeakMb = peakRssMb(daemon.child.pid as number);
  await stopDaemon(daemon);
  if (report.counts.done !== PATHS)
    throw new Error(`${report.counts.done} of ${PATHS} done: ${JSON.stringify(report)}`);

  process.stderr.write('nix copy of the same paths...\n');
  const nixCopy = await measure(
    'nix',
    ['copy', '--to', `file://${tempDir('bench-flood-nix')}?compression=zstd`, ...paths],
    env,
  );

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
  const status = await median(() => measure(process.execPath, [CACHECTL, 'status'], queue));
  const statusJson = await median(() => measure(process.execPath, [CACHECTL, 'status', '--json'], queue));
  const node = await median(() => measure(process.execPath, ['-e', '0'], queue));

  const results: FloodResults = {
    ...thisRun(),
    paths: PATHS,
    hooksAtOnce: HOOKS_AT_ONCE,
    hookSeconds,
    drain: { seconds: drainSeconds, peakRssMb: daemonPeakMb },
    nixCopy,
    status: { rows, runs: RUNS, text: status, json: statusJson, node },
  };
  process.stdout.write(`\n${renderFlood(results)}\n`);
  writeResults('flood.json', results);
}

await main();
