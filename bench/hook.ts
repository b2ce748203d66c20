/**
 * bench/hook: how long the post-build hook holds up Nix. 100 runs of the hook, median and p99, beside
 * `node -e 0` (the start of any Node program) and a bare `sh -c 'sqlite3 … INSERT'` (the floor, into one
 * shared file and into the hooks' inbox files as the hook picks them) in the same run; then 8 hooks at once.
 * Both the Nix 2.8 way (empty OUT_PATHS, outputs read from DRV_PATH) and with OUT_PATHS given. Prints a table
 * and writes bench/results/hook.json.
 *
 *   npm run bench:hook [-- --runs 100]
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Queue } from '../src/queue/queue.js';
import { HOOK_INBOXES } from '../src/queue/schema.js';
import { HOOK } from '../test/helpers/daemon.js';
import { tempDir, testEnv } from '../test/helpers/nix.js';
import { buildTinyPaths } from './measure.js';
import { quantile, renderHook, thisRun, writeResults, type HookResults } from './tables.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '100' } } });
const RUNS = Number(values.runs);
const CONCURRENCY = 8;

/** Wall time of one run of a command, in ms, from spawn to exit. */
function timeOnce(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0 || stderr !== '') reject(new Error(`${command} exited ${code}: ${stderr}`));
      else resolve(Number(process.hrtime.bigint() - started) / 1e6);
    });
  });
}

/** `RUNS` runs, `concurrency` at a time; the run's env comes from `envFor(i)`. */
async function timeMany(
  command: string,
  args: string[],
  envFor: (i: number) => NodeJS.ProcessEnv,
  concurrency: number,
): Promise<number[]> {
  const times: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < RUNS) {
      const i = next++;
      times.push(await timeOnce(command, args, envFor(i)));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return times.sort((a, b) => a - b);
}

async function main(): Promise<void> {
  // `node -e 0` starts as Node starts on this machine, its NODE_EXTRA_CA_CERTS included: the yardstick the hook's
  // budget was set against (testEnv leaves it out for the commands it runs).
  const certificates = process.env['NODE_EXTRA_CA_CERTS'];
  const env = testEnv(certificates === undefined ? {} : { NODE_EXTRA_CA_CERTS: certificates });
  // Distinct real outputs for the runs: input-addressed derivations, built once.
  const built = await buildTinyPaths('cachectl-bench-hook', RUNS);
  const outs = built.map((path) => path.out);
  const drvs = built.map((path) => path.drv);

  const rows: { case: string; concurrency: number; medianMs: number; p99Ms: number }[] = [];
  const record = (name: string, concurrency: number, times: number[]) => {
    rows.push({ case: name, concurrency, medianMs: quantile(times, 0.5), p99Ms: quantile(times, 0.99) });
  };

  for (const concurrency of [1, CONCURRENCY]) {
    const dir = tempDir('bench-hook');
    const queue = join(dir, 'queue.db');
    Queue.open(queue).close();
    const hookEnv = (extra: Record<string, string>) => ({
      ...env,
      CACHECTL_QUEUE: queue,
      CACHECTL_GC_ROOTS: join(dir, 'roots'),
      ...extra,
    });
    record('node -e 0', concurrency, await timeMany(process.execPath, ['-e', '0'], () => env, concurrency));
    const insert = `INSERT INTO inbox (store_path, source, enqueued_at) VALUES ('/nix/store/x', 'bench', 0);`;
    const sqlite3 = `sqlite3 -cmd '.timeout 1000' -cmd 'PRAGMA synchronous = FULL'`;
    record(
      'floor: sqlite3 INSERT, one file',
      concurrency,
      await timeMany('sh', ['-c', `${sqlite3} "$CACHECTL_QUEUE" "${insert}"`], () => hookEnv({}), concurrency),
    );
    record(
      'floor: sqlite3 INSERT, inbox files',
      concurrency,
      await timeMany(
        'sh',
        ['-c', `${sqlite3} "$CACHECTL_QUEUE.inbox/$(($$ % ${HOOK_INBOXES})).db" "${insert}"`],
        () => hookEnv({}),
        concurrency,
      ),
    );
    record(
      'hook, DRV_PATH (Nix 2.8)',
      concurrency,
      await timeMany(HOOK, [], (i) => hookEnv({ OUT_PATHS: '', DRV_PATH: drvs[i] as string }), concurrency),
    );
    record(
      'hook, OUT_PATHS',
      concurrency,
      await timeMany(HOOK, [], (i) => hookEnv({ OUT_PATHS: outs[i] as string, DRV_PATH: '' }), concurrency),
    );
  }

  const results: HookResults = { ...thisRun(), runs: RUNS, rows };
  process.stdout.write(`\n${renderHook(results)}\n`);
  writeResults('hook.json', results);
}

await main();
