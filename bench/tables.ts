import { cpus } from 'node:os';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../test/helpers/nix.js';

/**
 * The benchmarks' results (bench/results/*.json) rendered as the tables the benchmarks print and
 * docs/benchmarks.md shows. Those tables are made from these files by `npm run docs` only, never typed: a test
 * fails when they differ (test/unit/docs.test.ts).
 */

export interface Machine {
  cpus: number;
  node: string;
}

export interface PushResults {
  date: string;
  machine: Machine;
  narSize: number;
  runs: number;
  rows: { case: string; tool: string; seconds: number; rate: string; peakRssMb: number }[];
  ratios: {
    bigVsNixCopy: number;
    bigVsFloor: number;
    /** the time the NAR listing adds, as a fraction of the time without it (absent from runs before listings) */
    bigListingCost?: number;
    tinyListingCost?: number;
    tinyS3PathsPerSecond: number;
    peakRssMb: number;
  };
}

export interface GcRun {
  seconds: number;
  peakRssMb: number;
  requests: Record<string, number>;
  report: {
    narinfos: number;
    reachable: number;
    deleted: { narinfos: { count: number }; nars: { count: number } };
    stopped?: string;
  };
}

export interface GcResults {
  date: string;
  machine: Machine;
  rows: { target: string; narinfos: number; run: string; result: GcRun }[];
}

export interface HookResults {
  date: string;
  machine: Machine;
  runs: number;
  rows: { case: string; concurrency: number; medianMs: number; p99Ms: number }[];
}

export interface LatencyResults {
  date: string;
  machine: Machine;
  paths: number;
  bursts: number;
  burstSize: number;
  bigMb: number;
  latency: { target: 'file' | 's3'; situation: string; samples: number; p50Ms: number; p95Ms: number; maxMs: number }[];
  big: { case: string; seconds: number; peakRssMb: number }[];
}

/** When and where a benchmark ran, for its results file. */
export const thisRun = (): { date: string; machine: Machine } => ({
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, node: process.version },
});

/** Writes a benchmark's results to bench/results/`name`, where `npm run docs` reads them. */
export function writeResults(name: keyof typeof RENDERERS, results: unknown): void {
  mkdirSync(join(REPO, 'bench/results'), { recursive: true });
  writeFileSync(join(REPO, 'bench/results', name), `${JSON.stringify(results, null, 2)}\n`);
}

/** The value at quantile `q` of sorted numbers (the nearest rank). */
export const quantile = (sorted: readonly number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;

const thousands = (n: number): string => n.toLocaleString('en-US');
const table = (head: string[], align: string[], rows: string[][]): string =>
  [`| ${head.join(' | ')} |`, `|${align.join('|')}|`, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
const ranOn = (r: { date: string; machine: Machine }) =>
  `Run ${r.date.slice(0, 10)} on ${r.machine.cpus} cores, Node ${r.machine.node}.`;

const percent = (fraction: number) => `${(fraction * 100).toFixed(1)} %`;

export function renderPush(r: PushResults): string {
  const rows = r.rows.map((row) => [
    row.case,
    row.tool,
    row.seconds.toFixed(3),
    row.rate,
    row.peakRssMb > 0 ? `${row.peakRssMb.toFixed(0)} MB` : '—',
  ]);
  return [
    table(
      ['case', 'tool', `seconds (median of ${r.runs})`, 'rate', 'peak RSS'],
      ['---', '---', '---:', '---:', '---:'],
      rows,
    ),
    '',
    `${ranOn(r)} The big path: ${r.ratios.bigVsNixCopy.toFixed(2)}× faster than \`nix copy\` (target ≥ 1.5×) and ` +
      `${r.ratios.bigVsFloor.toFixed(2)}× the floor's time (target ≤ 1.25×); tiny paths to s3rver: ` +
      `${r.ratios.tinyS3PathsPerSecond.toFixed(0)} paths/s; cachectl's peak RSS: ${r.ratios.peakRssMb.toFixed(0)} ` +
      `MB (target ≤ 200 MB).` +
      (r.ratios.bigListingCost === undefined || r.ratios.tinyListingCost === undefined
        ? ''
        : ` NAR listings add ${percent(r.ratios.bigListingCost)} to the big path's time (target ≤ 5 %) and ` +
          `${percent(r.ratios.tinyListingCost)} to the tiny paths'.`),
  ].join('\n');
}

export function renderGc(r: GcResults): string {
  const rows = r.rows.map(({ target, narinfos, run, result }) => [
    target,
    thousands(narinfos),
    run,
    `${result.seconds.toFixed(1)} s`,
    `${result.peakRssMb.toFixed(0)} MB`,
    thousands(result.requests['list'] ?? 0),
    thousands(result.requests['get'] ?? 0),
    thousands(result.requests['put'] ?? 0),
    thousands(result.requests['delete'] ?? 0),
    thousands(result.report.reachable),
    `${thousands(result.report.deleted.narinfos.count)} + ` +
      thousands(result.report.deleted.nars.count) +
      (result.report.stopped === undefined ? '' : ` (stopped: ${result.report.stopped})`),
  ]);
  const warm = r.rows.filter((row) => row.target === 'file://' && row.run.startsWith('warm, --dry-run'));
  return [
    table(
      [
        'cache',
        'narinfos',
        'run',
        'time',
        'peak RSS',
        'LIST pages',
        'GET',
        'PUT',
        'DELETE requests',
        'kept',
        'deleted narinfos + NARs',
      ],
      ['---', '---:', '---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:'],
      rows,
    ),
    '',
    `${ranOn(r)} Warm \`--dry-run\` on file://: ` +
      warm.map((row) => `${row.result.seconds.toFixed(1)} s for ${thousands(row.narinfos)}`).join(', ') +
      ' (target ≤ 30 s for 100,000).',
  ].join('\n');
}

export function renderHook(r: HookResults): string {
  const node = r.rows.find((row) => row.case === 'node -e 0' && row.concurrency === 1)?.medianMs ?? NaN;
  const rows = r.rows.map((row) => [
    row.case,
    String(row.concurrency),
    `${row.medianMs.toFixed(1)} ms`,
    `${row.p99Ms.toFixed(1)} ms`,
    (row.medianMs / node).toFixed(2),
  ]);
  const alone = r.rows.filter((row) => row.case.startsWith('hook') && row.concurrency === 1);
  const together = r.rows.filter((row) => row.case.startsWith('hook') && row.concurrency > 1);
  return [
    table(['case', 'at once', 'median', 'p99', 'median / `node -e 0`'], ['---', '---:', '---:', '---:', '---:'], rows),
    '',
    `${ranOn(r)} ${r.runs} runs each. The hook alone: median ` +
      `${alone.map((row) => (row.medianMs / node).toFixed(2)).join(' and ')}× a bare Node start ` +
      `(target ≤ 0.25×); ${together[0]?.concurrency ?? ''} at once: p99 ` +
      `${together.map((row) => `${row.p99Ms.toFixed(0)} ms`).join(' and ')} (target ≤ 50 ms).`,
  ].join('\n');
}

export function renderLatency(r: LatencyResults): string {
  const where = (target: 'file' | 's3') => (target === 'file' ? 'file://' : 's3rver');
  const latency = table(
    ['cache', 'situation', 'samples', 'p50', 'p95', 'max'],
    ['---', '---', '---:', '---:', '---:', '---:'],
    r.latency.map((row) => [
      where(row.target),
      row.situation,
      String(row.samples),
      `${row.p50Ms.toFixed(0)} ms`,
      `${row.p95Ms.toFixed(0)} ms`,
      `${row.maxMs.toFixed(0)} ms`,
    ]),
  );
  const big = table(
    [`${r.bigMb} MB path`, 'time', 'peak RSS'],
    ['---', '---:', '---:'],
    r.big.map((row) => [row.case, `${row.seconds.toFixed(1)} s`, `${row.peakRssMb.toFixed(0)} MB`]),
  );
  const measured = r.latency.filter(
    (row) => row.situation === 'idle daemon' || row.situation.startsWith('right after'),
  );
  const worstP50 = Math.max(...measured.map((row) => row.p50Ms));
  const worstP95 = Math.max(...measured.map((row) => row.p95Ms));
  return [
    latency,
    '',
    big,
    '',
    `${ranOn(r)} Hook exit → narinfo visible, over every cache and situation: ` +
      `p50 at most ${worstP50.toFixed(0)} ms ` +
      `(target ≤ 100 ms), p95 at most ${worstP95.toFixed(0)} ms (target ≤ 250 ms). The daemon's peak RSS on the ` +
      `${r.bigMb} MB path: ` +
      `${Math.max(...r.big.filter((row) => row.case.startsWith('daemon')).map((row) => row.peakRssMb)).toFixed(0)} ` +
      `MB (target ≤ 200 MB).`,
  ].join('\n');
}

/** What each results file renders to, by its name under bench/results. */
export const RENDERERS = {
  'push.json': (r: unknown) => renderPush(r as PushResults),
  'gc.json': (r: unknown) => renderGc(r as GcResults),
  'hook.json': (r: unknown) => renderHook(r as HookResults),
  'latency.json': (r: unknown) => renderLatency(r as LatencyResults),
} as const;

/**
 * The generated blocks of docs/benchmarks.md, by source (`bench/results/NAME`). Every results file must be
 * there: a missing one names the benchmark that writes it.
 */
export function benchBlocks(results: ReadonlyMap<string, unknown>): Map<string, string> {
  const blocks = new Map<string, string>();
  for (const [name, render] of Object.entries(RENDERERS)) {
    const data = results.get(name);
    if (data === undefined) {
      throw new Error(
        `bench/results/${name} is missing: run its benchmark (npm run bench:${name.replace('.json', '')})`,
      );
    }
    blocks.set(`bench/results/${name}`, render(data));
  }
  return blocks;
}

/** The results files of `dir` (bench/results) that have a renderer, parsed. */
export function readResults(dir: string): Map<string, unknown> {
  const results = new Map<string, unknown>();
  for (const name of Object.keys(RENDERERS)) {
    try {
      results.set(name, JSON.parse(readFileSync(join(dir, name), 'utf8')));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return results;
}
