import { cpus } from 'node:os';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../test/helpers/nix.js';
import type { Measurement } from './measure.js';

/**
 * The benchmarks' results (bench/results/*.json) rendered as the tables the benchmarks print and
 * docs/benchmarks.md shows. Those tables are made from these files by `npm run docs` only, never typed: a test
 * fails when they differ (test/unit/docs.test.ts).
 */

export interface Machine {
  cpus: number;
  node: string;
}

export interface PushRow {
  case: string;
  tool: string;
  seconds: number;
  rate: string;
  peakRssMb: number;
  cpuSeconds?: number;
  /** the most threads the tool ran at once */
  threads?: number;
  /** HTTP requests it made (the far-away case) */
  requests?: number;
  /** cachectl's own rows, by where they wrote: the memory targets */
  cachectlTo?: 'file' | 's3';
}

/** A target a benchmark checks: `value` at least or at most `limit`. */
export interface Target {
  what: string;
  value: number;
  bound: 'at least' | 'at most';
  limit: number;
  met: boolean;
}

export const atLeast = (what: string, value: number, limit: number): Target => ({
  what,
  value,
  bound: 'at least',
  limit,
  met: value >= limit,
});

export const atMost = (what: string, value: number, limit: number): Target => ({
  what,
  value,
  bound: 'at most',
  limit,
  met: value <= limit,
});

export interface PushResults {
  date: string;
  machine: Machine;
  /** the version of the Nix whose `nix copy` ran beside cachectl */
  nix: string;
  runs: number;
  rows: PushRow[];
  targets: Target[];
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
  /** the bare listing of the narinfos and NARs through the latency proxy (absent from runs before it) */
  listings?: {
    target: string;
    narinfos: number;
    delayMs: number;
    mode: string;
    seconds: number;
    keys: number;
    requests: number;
  }[];
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

export interface FloodResults {
  date: string;
  machine: Machine;
  /** the Nix version of the `nix copy` peer */
  nix: string;
  paths: number;
  hooksAtOnce: number;
  runs: number;
  /** the burst of hooks that queued the paths (median) */
  hookSeconds: number;
  /** the daemon, started on the full queue, until the last path was done: its CPU then */
  drain: Measurement;
  /** `cachectl push` of the same paths */
  push: Measurement;
  /** `nix copy` of the same paths, as a user runs it */
  nixCopy: Measurement;
  status: {
    rows: number;
    runs: number;
    text: { seconds: number };
    json: { seconds: number };
    node: { seconds: number };
  };
  targets: Target[];
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

function renderTargets(targets: readonly Target[]): string {
  return table(
    ['target', 'value', 'bound', ''],
    ['---', '---:', '---:', '---'],
    targets.map((t) => [t.what, t.value.toFixed(2), `${t.bound} ${t.limit}`, t.met ? 'met' : '**not met**']),
  );
}

export function renderPush(r: PushResults): string {
  const rows = r.rows.map((row) => [
    row.case,
    row.tool,
    row.seconds.toFixed(3),
    row.rate,
    row.cpuSeconds === undefined ? '—' : row.cpuSeconds.toFixed(2),
    row.peakRssMb > 0 ? `${row.peakRssMb.toFixed(0)} MB` : '—',
    row.threads === undefined || row.threads === 0 ? '—' : String(row.threads),
    row.requests === undefined ? '—' : thousands(row.requests),
  ]);
  return [
    table(
      ['case', 'tool', `seconds (median of ${r.runs})`, 'rate', 'CPU s', 'peak RSS', 'threads', 'requests'],
      ['---', '---', '---:', '---:', '---:', '---:', '---:', '---:'],
      rows,
    ),
    '',
    renderTargets(r.targets),
    '',
    `${ranOn(r)} The peer: Nix ${r.nix}'s \`nix copy\`.`,
  ].join('\n');
}

export function renderFlood(r: FloodResults): string {
  const perSecond = (seconds: number) => `${(r.paths / seconds).toFixed(0)} paths/s`;
  const ms = (m: { seconds: number }) => `${(m.seconds * 1000).toFixed(0)} ms`;
  const measured = (what: string, m: Measurement) => [
    what,
    `${m.seconds.toFixed(2)} s`,
    perSecond(m.seconds),
    m.cpuSeconds === undefined ? '—' : m.cpuSeconds.toFixed(2),
    `${m.peakRssMb.toFixed(0)} MB`,
  ];
  return [
    table(
      ['what', `time (median of ${r.runs})`, 'rate', 'CPU s', 'peak RSS'],
      ['---', '---:', '---:', '---:', '---:'],
      [
        [
          `${thousands(r.paths)} hooks, ${r.hooksAtOnce} at a time`,
          `${r.hookSeconds.toFixed(2)} s`,
          perSecond(r.hookSeconds),
          '—',
          '—',
        ],
        measured('the daemon drains them to file://', r.drain),
        measured('`cachectl push` of the same paths to file://', r.push),
        measured(`\`nix copy\` of the same paths to file:// (Nix ${r.nix})`, r.nixCopy),
      ],
    ),
    '',
    table(
      [`with ${thousands(r.status.rows)} rows in the queue (median of ${r.status.runs})`, 'time'],
      ['---', '---:'],
      [
        ['`cachectl status`', ms(r.status.text)],
        ['`cachectl status --json`', ms(r.status.json)],
        ['`node -e 0`', ms(r.status.node)],
      ],
    ),
    '',
    renderTargets(r.targets),
    '',
    `${ranOn(r)} All three sign; the daemon's time runs from its start, its CPU is all it used until the queue ` +
      'was drained.',
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
  const fileRow = (narinfos: number, run: string) =>
    r.rows.find((row) => row.target === 'file://' && row.narinfos === narinfos && row.run === run)?.result;
  const fileSizes = [...new Set(r.rows.filter((row) => row.target === 'file://').map((row) => row.narinfos))];
  const summary = fileSizes.map((narinfos) => {
    const warm = fileRow(narinfos, 'warm, --dry-run');
    const cold = fileRow(narinfos, 'cold, --dry-run');
    if (warm === undefined || cold === undefined) return `${thousands(narinfos)}: incomplete`;
    const peak = Math.max(
      ...r.rows
        .filter((row) => row.target === 'file://' && row.narinfos === narinfos)
        .map((row) => row.result.peakRssMb),
    );
    return (
      `${thousands(narinfos)}: warm ${warm.seconds.toFixed(1)} s, cold ${(cold.seconds / warm.seconds).toFixed(1)}× ` +
      `warm, peak RSS ${peak.toFixed(0)} MB`
    );
  });
  const lines = [
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
    `${ranOn(r)} On file://, ${summary.join('; ')} (targets at 1,000,000: warm ≤ 60 s, peak RSS ≤ 1 GB, cold ≤ 3× ` +
      'warm).',
  ];
  const listed = r.listings ?? [];
  if (listed.length > 0) {
    lines.push(
      '',
      table(
        ['cache', 'narinfos', 'round trip', 'listing', 'time', 'LIST requests', 'keys'],
        ['---', '---:', '---:', '---', '---:', '---:', '---:'],
        listed.map((row) => [
          row.target,
          thousands(row.narinfos),
          `${row.delayMs} ms`,
          row.mode,
          `${row.seconds.toFixed(1)} s`,
          thousands(row.requests),
          thousands(row.keys),
        ]),
      ),
    );
    const inRanges = listed.filter((row) => row.mode === 'in ranges, as the GC lists');
    const ratios = inRanges
      .filter((far) => far.delayMs > 0)
      .flatMap((far) => {
        const near = inRanges.find(
          (row) => row.delayMs === 0 && row.target === far.target && row.narinfos === far.narinfos,
        );
        return near === undefined
          ? []
          : [
              `${thousands(far.narinfos)} narinfos on ${far.target} ${far.delayMs} ms away take ` +
                `${(far.seconds / near.seconds).toFixed(2)}× the time at 0 ms`,
            ];
      });
    if (ratios.length > 0) lines.push('', `Listed in ranges, ${ratios.join('; ')} (target ≤ 3×).`);
  }
  return lines.join('\n');
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
  'push-nix-2.8.json': (r: unknown) => renderPush(r as PushResults),
  'gc.json': (r: unknown) => renderGc(r as GcResults),
  'hook.json': (r: unknown) => renderHook(r as HookResults),
  'latency.json': (r: unknown) => renderLatency(r as LatencyResults),
  'flood.json': (r: unknown) => renderFlood(r as FloodResults),
} as const;

/**
 * The README's few figures, from the same results as docs/benchmarks.md: one line each, the peer named, the
 * run's date given.
 */
export function renderHeadline(results: ReadonlyMap<string, unknown>): string {
  const push = results.get('push.json') as PushResults | undefined;
  const gc = results.get('gc.json') as GcResults | undefined;
  const hook = results.get('hook.json') as HookResults | undefined;
  const flood = results.get('flood.json') as FloodResults | undefined;
  const lines: string[] = [];
  if (push !== undefined) {
    const ratioOf = (prefix: string) => push.targets.find((t) => t.what.startsWith(prefix))?.value;
    const figures = [
      ['a 240-300 MB path of real files to file://', ratioOf('big path')],
      ['1,000 tiny paths to file://', ratioOf('tiny paths: × `nix copy`, flushed')],
      ['a chain of 1,000 to file://', ratioOf('chain: × `nix copy`, flushed')],
      ['a 400-path closure to S3 30 ms away, against `nix copy` on 16 cores', ratioOf('far away, 30 ms')],
    ].filter((figure): figure is [string, number] => figure[1] !== undefined);
    lines.push(
      `- Against Nix ${push.nix}'s \`nix copy\` (${push.date.slice(0, 10)}): ` +
        figures.map(([what, ratio]) => `${what} ${ratio.toFixed(2)}× its speed`).join('; ') +
        '.',
    );
  }
  if (hook !== undefined) {
    const alone = hook.rows.find((row) => row.case.startsWith('hook') && row.concurrency === 1);
    if (alone !== undefined)
      lines.push(
        `- The post-build hook holds a build up for ${alone.medianMs.toFixed(0)} ms (median, ${hook.date.slice(0, 10)}).`,
      );
  }
  if (flood !== undefined) {
    lines.push(
      `- ${thousands(flood.paths)} paths queued at once drain at ` +
        `${(flood.paths / flood.drain.seconds).toFixed(0)} paths/s (file://, peak RSS ` +
        `${flood.drain.peakRssMb.toFixed(0)} MB); \`cachectl status\` answers in ` +
        `${(flood.status.text.seconds * 1000).toFixed(0)} ms with ${thousands(flood.status.rows)} queued rows.`,
    );
  }
  const million = gc?.rows.filter((row) => row.target === 'file://' && row.narinfos >= 1_000_000) ?? [];
  const warm = million.find((row) => row.run === 'warm, --dry-run');
  if (warm !== undefined) {
    const peak = Math.max(...million.map((row) => row.result.peakRssMb));
    lines.push(
      `- The GC over ${thousands(warm.narinfos)} narinfos: ${warm.result.seconds.toFixed(0)} s for a run with the ` +
        `metadata cache warm, at most ${peak.toFixed(0)} MB of memory.`,
    );
  }
  return [
    ...lines,
    '',
    'How these were measured, with the peers in the same runs: [Benchmarks](docs/benchmarks.md).',
  ].join('\n');
}

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
